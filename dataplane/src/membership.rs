//! Membership: each data plane registers itself in etcd under a lease (`<prefix>/data_plane/server_info/<id>`,
//! APISIX's key and shape), keeps the lease alive, and counts the live registrations, so that a limit declared for
//! the whole cluster can be divided by the number of data planes serving it.
//!
//! A data plane that shuts down revokes its lease and leaves at once; one that dies leaves when its lease expires.
//! Only data planes register, so the controller and tools reading etcd never count. While etcd cannot be reached
//! the last count stands (the other data planes are most likely still there); a data plane that never reached etcd
//! counts itself alone, which errs towards admitting more rather than refusing traffic nobody else serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, GetOptions, PutOptions};
use sluice_model::{Keys, ServerInfo};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The number of live data planes, as last counted (1 until a count succeeds). Cheap to clone and to read.
#[derive(Debug, Clone)]
pub struct ClusterSize(Arc<AtomicUsize>);

impl Default for ClusterSize {
    fn default() -> Self {
        ClusterSize(Arc::new(AtomicUsize::new(1)))
    }
}

impl ClusterSize {
    /// The number of live data planes, at least 1.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed).max(1)
    }

    pub(crate) fn set(&self, n: usize) {
        self.0.store(n.max(1), Ordering::Relaxed);
    }
}

/// Why one registration session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd did not answer {0} in time")]
    Timeout(&'static str),
    #[error("the lease expired before it was renewed")]
    LeaseLost,
}

/// One data plane's registration.
#[derive(Debug)]
pub struct Membership {
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// TLS towards etcd.
    pub tls: Option<etcd_client::TlsOptions>,
    /// The key layout.
    pub keys: Keys,
    /// What is registered.
    pub info: ServerInfo,
    /// The lease's time to live: how long a dead data plane still counts.
    pub ttl: Duration,
    /// Where the count is kept.
    pub size: ClusterSize,
    /// Metrics (`sluice_dataplane_cluster_size`).
    pub metrics: Metrics,
    /// How patient to be with etcd.
    pub timeouts: crate::source::EtcdTimeouts,
}

/// `call` within `limit` (so a dead endpoint cannot stall the renewals).
async fn bounded<T, E: Into<SessionError>>(
    limit: Duration,
    what: &'static str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, SessionError> {
    tokio::time::timeout(limit, call).await.map_err(|_| SessionError::Timeout(what))?.map_err(Into::into)
}

impl Membership {
    /// Registers and counts until `stop` turns true, then revokes the registration.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut delay = BACKOFF_MIN;
        loop {
            match self.session(&mut stop, &mut delay).await {
                Ok(()) => return,
                Err(e) => warn!(error = %e, "data plane registration in etcd failed; retrying in {delay:?}"),
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return,
            }
            delay = (delay * 2).min(BACKOFF_MAX);
        }
    }

    /// Registers under a new lease and renews it until stopped (`Ok`) or until etcd fails.
    async fn session(&self, stop: &mut watch::Receiver<bool>, delay: &mut Duration) -> Result<(), SessionError> {
        let mut options = self.timeouts.connect_options();
        let limit = self.timeouts.request;
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.clone());
        }
        let mut client = bounded(limit, "a connection", Client::connect(&self.endpoints, Some(options))).await?;
        let ttl = i64::try_from(self.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease = bounded(limit, "a lease grant", client.lease_grant(ttl, None)).await?.id();
        let key = self.keys.server_info(&self.info.id);
        let value = serde_json::to_vec(&self.info).unwrap_or_default();
        bounded(limit, "the registration", client.put(key.as_str(), value, Some(PutOptions::new().with_lease(lease))))
            .await?;
        let (mut keeper, mut renewals) = bounded(limit, "a keep-alive stream", client.lease_keep_alive(lease)).await?;
        info!(id = %self.info.id, ttl_s = ttl, "registered in etcd as a data plane");
        *delay = BACKOFF_MIN;
        // Renew three times per lease period, so one late renewal does not lose the lease.
        let every = (self.ttl / 3).max(Duration::from_millis(300));
        loop {
            self.count(&mut client).await?;
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop.changed() => {
                    let revoked = bounded(limit, "the revocation", client.lease_revoke(lease)).await;
                    match revoked {
                        Ok(_) => info!(id = %self.info.id, "left the data plane registry"),
                        Err(e) => warn!(error = %e, "could not revoke the registration; it expires with its lease"),
                    }
                    return Ok(());
                }
            }
            bounded(limit, "a lease renewal", keeper.keep_alive()).await?;
            match bounded(limit, "a lease renewal", renewals.message()).await? {
                Some(renewed) if renewed.ttl() > 0 => debug!(lease, ttl = renewed.ttl(), "renewed the registration"),
                _ => return Err(SessionError::LeaseLost),
            }
        }
    }

    /// Counts the registered data planes.
    async fn count(&self, client: &mut Client) -> Result<(), SessionError> {
        let options = GetOptions::new().with_prefix().with_count_only();
        let found =
            bounded(self.timeouts.request, "the count", client.get(self.keys.server_infos(), Some(options))).await?;
        let n = usize::try_from(found.count()).unwrap_or(1);
        if n != self.size.get() {
            info!(data_planes = n, "the number of live data planes changed");
        }
        self.size.set(n);
        self.metrics.cluster_size.set(i64::try_from(self.size.get()).unwrap_or(i64::MAX));
        Ok(())
    }
}

/// This data plane's registration record: `id`, the host name, the version and the start time.
pub fn server_info(id: String) -> ServerInfo {
    let boot_time = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    ServerInfo { id, hostname: hostname(), version: env!("CARGO_PKG_VERSION").to_string(), boot_time }
}

/// The host name (in Kubernetes, the pod's name), or `localhost` when the system does not say.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The default id: the host name, and the process id so that two data planes on one host differ.
pub fn default_id() -> String {
    let host: String =
        hostname().chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '.') { c } else { '-' }).collect();
    format!("{host}-{}", std::process::id())
}
