//! The sluice data plane: watches the configuration in etcd, compiles it off the request path, swaps it in
//! atomically and proxies HTTP traffic to upstream nodes.
//!
//! Start it in-process with [`start`] (tests do) or run it until a shutdown signal with [`run`] (the binary does).

mod admin;
pub mod config;
pub mod error;
pub mod listener;
pub mod membership;
pub mod metrics;
pub mod plugins;
pub mod proxy;
pub mod redis;
pub mod router;
pub mod snapshot;
pub mod source;
pub mod tunnel;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use sluice_model::Keys;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::Compiled;
use crate::metrics::Metrics;
use crate::proxy::Peer;
use crate::source::{Position, Source};
use crate::upstream::pool::Pools;
use crate::upstream::tls::Trust;

/// How the data plane is configured.
#[derive(Debug, Clone)]
pub struct Options {
    /// etcd client URLs.
    pub etcd_endpoints: Vec<String>,
    /// How patient to be with etcd: dial, call and keep-alive timeouts.
    pub etcd_timeouts: source::EtcdTimeouts,
    /// The key prefix the configuration lives under.
    pub etcd_prefix: String,
    /// Where the proxy listens.
    pub http_addr: SocketAddr,
    /// Where the HTTPS proxy listens; `None`: no HTTPS listener.
    pub https_addr: Option<SocketAddr>,
    /// The port clients reach HTTPS on (redirects to HTTPS name it); default: the HTTPS listener's own port.
    pub https_public_port: Option<u16>,
    /// The id of the ssl object served to clients whose server name matches no other (or who send none).
    pub default_ssl: Option<String>,
    /// Where `/healthz`, `/readyz` and `/metrics` listen.
    pub admin_addr: SocketAddr,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub grace: Duration,
    /// How long, once shutdown starts, readiness fails while the listeners still accept, before they close: the
    /// time endpoint removal takes to reach kube-proxy and load balancers.
    pub drain_delay: Duration,
    /// TLS towards etcd (CA, client certificate); `None` for plain connections.
    pub etcd_tls: Option<etcd_client::TlsOptions>,
    /// Certificate authorities that `https` upstreams with `tls.verify` trust, besides the system's.
    pub upstream_ca_file: Option<std::path::PathBuf>,
    /// The plugins this data plane runs; objects using others answer 503.
    pub plugins: plugins::Enabled,
    /// The access log, when one is written.
    pub access_log: Option<plugins::access_log::AccessLog>,
    /// Limits on client connections and requests at the proxy listeners.
    pub limits: listener::Limits,
    /// Whether every connection to the proxy listeners starts with a PROXY protocol header (v1 or v2), as sent by
    /// a load balancer in front; connections without one are closed.
    pub proxy_protocol: bool,
    /// This data plane's id among the data planes registered in etcd (`<prefix>/data_plane/server_info/<id>`);
    /// `None`: the host name and the process id.
    pub node_id: Option<String>,
    /// How long the registration of a data plane that stopped renewing it (it died) still counts.
    pub registration_ttl: Duration,
    /// The zone this data plane runs in (the node's `topology.kubernetes.io/zone`): upstream nodes in the same
    /// zone are preferred while any is healthy.
    pub zone: Option<String>,
    /// Where the last known good configuration is kept, and read at start when etcd cannot be reached.
    pub snapshot_file: Option<std::path::PathBuf>,
    /// Address blocks upstream nodes may not be in, besides the built-in link-local ones
    /// ([`upstream::policy::BUILT_IN_DENY`]), the etcd endpoints and the admin listener.
    pub upstream_deny: Vec<String>,
    /// Address blocks upstream nodes may be in even when denied.
    pub upstream_allow: Vec<String>,
    /// A file holding the token the admin listener requires for everything but `/healthz` and `/readyz`.
    pub admin_token_file: Option<std::path::PathBuf>,
    /// The keyring file consumers' sealed credentials are opened with.
    pub credential_keyring: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            etcd_timeouts: source::EtcdTimeouts::default(),
            etcd_prefix: sluice_model::DEFAULT_PREFIX.into(),
            http_addr: SocketAddr::from(([0, 0, 0, 0], 9080)),
            https_addr: None,
            https_public_port: None,
            default_ssl: None,
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9091)),
            grace: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
            etcd_tls: None,
            upstream_ca_file: None,
            plugins: plugins::Enabled::all(),
            access_log: None,
            limits: listener::Limits::default(),
            proxy_protocol: false,
            node_id: None,
            registration_ttl: Duration::from_secs(15),
            zone: None,
            snapshot_file: None,
            upstream_deny: Vec::new(),
            upstream_allow: Vec::new(),
            admin_token_file: None,
            credential_keyring: None,
        }
    }
}

/// Why the data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The upstream certificate authorities could not be loaded.
    #[error("upstream TLS trust: {0}")]
    Trust(String),
    /// The access log could not be started.
    #[error("access log: {0}")]
    AccessLog(String),
    /// The credential keyring cannot be read or parsed.
    #[error("{0}")]
    Keyring(#[from] config::credentials::KeyringFileError),
    /// `--upstream-deny` or `--upstream-allow` holds something that is not an address or CIDR block.
    #[error("upstream address policy: {0}")]
    Policy(#[from] upstream::policy::BadBlock),
}

/// State shared by the request path, the admin listener and the background tasks.
pub(crate) struct Shared {
    config: ArcSwap<Compiled>,
    ready: AtomicBool,
    metrics: Metrics,
    /// Connections to upstream nodes.
    pools: Pools,
    /// Limits on requests at the edge.
    limits: listener::Limits,
    /// The revision of the snapshot file being served, 0 while the configuration comes from etcd.
    snapshot_revision: Arc<std::sync::atomic::AtomicI64>,
    /// Set once shutdown has begun: readiness fails so that load balancers stop sending new connections.
    draining: AtomicBool,
    /// Cleared if the configuration thread ends while the data plane runs: liveness then fails.
    config_alive: AtomicBool,
    /// Proxy sockets not listening yet (they listen once the configuration is loaded).
    unbound_proxies: std::sync::atomic::AtomicUsize,
    /// The active health checkers still in their first round.
    first_pass: upstream::health::FirstPass,
    /// When the first configuration was loaded (ms since `started`), for the first pass's time limit.
    loaded_at_ms: std::sync::atomic::AtomicU64,
    /// Set once the first configuration is loaded and its health checks have made a first pass (or ran out of
    /// time): from then on new upstreams' checks do not hold readiness back.
    settled: AtomicBool,
    started: std::time::Instant,
    /// The admin listener's token file, when it requires one.
    admin_token_file: Option<std::path::PathBuf>,
}

/// How long readiness waits for the health checkers' first round after the first configuration is loaded.
const FIRST_PASS_LIMIT: Duration = Duration::from_secs(10);

impl Shared {
    /// Ready: the configuration is loaded, its health checks have made a first pass, and every proxy socket
    /// listens.
    fn is_ready(&self) -> bool {
        self.serving() && self.unbound_proxies.load(Ordering::Acquire) == 0
    }

    /// Milliseconds since the data plane started.
    fn since_start_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records that the first configuration was published now; returns whether it is the first.
    pub(crate) fn mark_loaded(&self) -> bool {
        self.loaded_at_ms.store(self.since_start_ms(), Ordering::Release);
        !self.ready.swap(true, Ordering::Release)
    }

    /// Whether a configuration (from etcd or the snapshot) has been published.
    pub(crate) fn config_loaded(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Whether traffic may come: the configuration is loaded and the nodes that are down are known (the health
    /// checkers' first round is over, or took longer than [`FIRST_PASS_LIMIT`]). Latched once true.
    fn serving(&self) -> bool {
        if self.settled.load(Ordering::Acquire) {
            return true;
        }
        if !self.config_loaded() {
            return false;
        }
        let loaded = self.loaded_at_ms.load(Ordering::Acquire);
        let now_ms = self.since_start_ms();
        let pending = self.first_pass.pending();
        let late = now_ms.saturating_sub(loaded) >= FIRST_PASS_LIMIT.as_millis() as u64;
        if pending == 0 || late {
            if late && pending > 0 {
                warn!(pending, "health checks' first round still running after {FIRST_PASS_LIMIT:?}; ready anyway");
            }
            self.settled.store(true, Ordering::Release);
            return true;
        }
        false
    }
}

/// Runs the configuration task, and marks the data plane not alive if it ends before shutdown.
async fn watch_config(task: impl Future<Output = ()>, shared: Arc<Shared>) {
    task.await;
    if !shared.draining.load(Ordering::Acquire) {
        tracing::error!("the configuration thread has stopped; failing liveness so the process is restarted");
        shared.config_alive.store(false, Ordering::Release);
    }
}

/// A running data plane.
pub struct Dataplane {
    http_addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    admin_addr: SocketAddr,
    grace: Duration,
    drain_delay: Duration,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    background: Vec<JoinHandle<()>>,
}

/// The sockets of what this process depends on or serves besides the proxy: the etcd endpoints (resolved once
/// here: a name that does not resolve yet is left out, and said so) and the admin listener. Upstream nodes may not
/// be at them, or a route could read etcd, or the admin endpoints, through the public listener.
async fn own_sockets(etcd_endpoints: &[String], admin: SocketAddr) -> Vec<SocketAddr> {
    let mut sockets = vec![admin];
    for endpoint in etcd_endpoints {
        let rest = endpoint.split_once("://").map_or(endpoint.as_str(), |(_, rest)| rest);
        let authority = rest.split('/').next().unwrap_or(rest);
        let Ok(authority) = authority.parse::<http::uri::Authority>() else { continue };
        let port = authority.port_u16().unwrap_or(2379);
        // Bounded: a resolver that does not answer must not hold up a start from the snapshot.
        let host = authority.host().trim_matches(['[', ']']);
        match tokio::time::timeout(Duration::from_secs(2), tokio::net::lookup_host((host, port))).await {
            Ok(Ok(addrs)) => sockets.extend(addrs),
            Ok(Err(e)) => warn!(endpoint = %endpoint, error = %e,
                "etcd endpoint does not resolve; the upstream address policy cannot refuse it"),
            Err(_) => warn!(endpoint = %endpoint,
                "etcd endpoint did not resolve within 2 s; the upstream address policy cannot refuse it"),
        }
    }
    sockets
}

/// Binds the listeners and starts the etcd source, the compiler and both servers.
pub async fn start(opts: Options) -> Result<Dataplane, StartError> {
    // Libraries that build their own rustls configuration (the Redis client's TLS) use the process default; ring
    // is the one sluice's own TLS uses. Already installed (a second data plane in one process) is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
    };
    let http = bind_shared(opts.http_addr)?;
    let https = match opts.https_addr {
        Some(addr) => Some(bind_shared(addr)?),
        None => None,
    };
    let admin = bind(opts.admin_addr).await?;
    let (http_addr, admin_addr) =
        (http.local_addr().unwrap_or(opts.http_addr), admin.local_addr().unwrap_or(opts.admin_addr));
    let https_addr = https.as_ref().zip(opts.https_addr).map(|(s, addr)| s.local_addr().unwrap_or(addr));
    let credential_keys = config::credentials::CredentialKeys::load(opts.credential_keyring.clone())?;
    let own = own_sockets(&opts.etcd_endpoints, admin_addr).await;
    let policy = upstream::policy::AddressPolicy::new(&opts.upstream_deny, own, &opts.upstream_allow)?;

    let shared = Arc::new(Shared {
        config: ArcSwap::from_pointee(Compiled::default()),
        ready: AtomicBool::new(false),
        metrics: Metrics::new(),
        pools: Pools::new(Trust::system(opts.upstream_ca_file.as_deref()).map_err(StartError::Trust)?, policy),
        limits: opts.limits,
        snapshot_revision: Arc::default(),
        draining: AtomicBool::new(false),
        config_alive: AtomicBool::new(true),
        unbound_proxies: std::sync::atomic::AtomicUsize::new(1 + usize::from(https.is_some())),
        first_pass: Default::default(),
        loaded_at_ms: Default::default(),
        settled: AtomicBool::new(false),
        started: std::time::Instant::now(),
        admin_token_file: opts.admin_token_file.clone(),
    });
    let global = match &opts.access_log {
        Some(log) => log.start(&shared.metrics).map_err(StartError::AccessLog)?,
        None => plugins::Chain::default(),
    };
    let keys = Keys::new(&opts.etcd_prefix);
    let (shutdown, stop) = watch::channel(false);
    let cluster = membership::ClusterSize::default();
    let membership = membership::Membership {
        endpoints: opts.etcd_endpoints.clone(),
        tls: opts.etcd_tls.clone(),
        keys: keys.clone(),
        info: membership::server_info(opts.node_id.clone().unwrap_or_else(membership::default_id)),
        ttl: opts.registration_ttl,
        size: cluster.clone(),
        metrics: shared.metrics.clone(),
        timeouts: opts.etcd_timeouts,
    };
    let (updates_tx, updates_rx) = mpsc::channel(1024);
    let mut source = Source::new(opts.etcd_endpoints.clone(), keys.clone(), updates_tx, shared.metrics.clone())
        .with_tls(opts.etcd_tls.clone())
        .with_timeouts(opts.etcd_timeouts);
    let mut background = Vec::new();
    if let Some(path) = &opts.snapshot_file {
        let writer = snapshot::Writer::new(path.clone());
        background.push(tokio::spawn(writer.clone().run()));
        source = source.with_snapshot(writer, shared.snapshot_revision.clone());
    }
    background.extend([
        tokio::spawn(source.run(Position::Unsynced)),
        tokio::spawn(watch_config(
            config::run(
                keys,
                updates_rx,
                shared.clone(),
                config::Settings {
                    plugins: opts.plugins.clone(),
                    global,
                    default_ssl: opts.default_ssl.clone(),
                    https_port: opts.https_public_port.or(https_addr.map(|a| a.port())),
                    cluster,
                    zone: opts.zone.clone(),
                    credential_keys,
                },
            ),
            shared.clone(),
        )),
        tokio::spawn(sweep_pools(shared.pools.clone())),
        tokio::spawn(membership.run(stop.clone())),
    ]);

    let tls = || listener::tls::Tls { shared: shared.clone() };
    use listener::proxy_protocol::ProxyProtocol;
    match opts.proxy_protocol {
        false => spawn_proxy(http, listener::Plain, &shared, http_addr.port(), stop.clone()),
        true => spawn_proxy(http, ProxyProtocol { inner: listener::Plain }, &shared, http_addr.port(), stop.clone()),
    }
    if let Some((https, addr)) = https.zip(https_addr) {
        // `X-Forwarded-Port` names the port clients reach, as the redirect to HTTPS does.
        let port = opts.https_public_port.unwrap_or(addr.port());
        match opts.proxy_protocol {
            false => spawn_proxy(https, tls(), &shared, port, stop.clone()),
            true => spawn_proxy(https, ProxyProtocol { inner: tls() }, &shared, port, stop.clone()),
        }
    }
    let admin_shared = shared.clone();
    let admin_connection = move |_, _: &listener::Transport| {
        let shared = admin_shared.clone();
        move |req| admin::handle(shared.clone(), req)
    };
    tokio::spawn(listener::serve(admin, listener::Plain, admin_connection, listener::Limits::default(), stop));
    let https_display = https_addr.map_or_else(|| "off".to_string(), |a| a.to_string());
    info!(%http_addr, https_addr = %https_display, %admin_addr, etcd = %opts.etcd_endpoints.join(","), prefix = %keys_display(&opts), "data plane started");
    Ok(Dataplane {
        http_addr,
        https_addr,
        admin_addr,
        grace: opts.grace,
        drain_delay: opts.drain_delay,
        shared,
        shutdown,
        background,
    })
}

/// Binds a proxy socket with `SO_REUSEPORT`, so that a new data plane process can take over the port while the
/// old one drains (a local handover; in Kubernetes each pod has its own port space anyway). It listens only once
/// the data plane is ready (see [`spawn_proxy`]).
fn bind_shared(addr: SocketAddr) -> Result<tokio::net::TcpSocket, StartError> {
    let bound = (|| {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        #[cfg(unix)]
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        Ok(socket)
    })();
    bound.map_err(|source| StartError::Bind { addr, source })
}

/// How often a proxy socket waiting to listen checks readiness.
const READY_POLL: Duration = Duration::from_millis(10);

/// Serves proxied requests on `socket` after `handshake`; `public_port` is the port clients reach it on. The
/// socket starts listening only once the data plane is ready (its configuration loaded from etcd or the snapshot):
/// a process that shares the port with another (SO_REUSEPORT) would otherwise take its share of new connections
/// before it has a route, and answer them 404. Until then the port is refused (or served by the other process).
fn spawn_proxy<T: listener::Handshake>(
    socket: tokio::net::TcpSocket,
    handshake: T,
    shared: &Arc<Shared>,
    public_port: u16,
    mut stop: watch::Receiver<bool>,
) {
    let (shared, port, limits) = (shared.clone(), HeaderValue::from(public_port), shared.limits);
    tokio::spawn(async move {
        while !shared.serving() {
            tokio::select! {
                () = tokio::time::sleep(READY_POLL) => {}
                _ = stop.changed() => return,
            }
        }
        let addr = socket.local_addr().ok();
        let listener = match socket.listen(1024) {
            Ok(l) => l,
            Err(e) => {
                // The data plane then never becomes ready, which its readiness probe reports.
                tracing::error!(error = %e, ?addr, "cannot listen on the proxy port");
                return;
            }
        };
        shared.unbound_proxies.fetch_sub(1, Ordering::AcqRel);
        let connection = move |remote, transport: &listener::Transport| {
            let (shared, peer) = (shared.clone(), Arc::new(Peer::new(remote, port.clone(), transport)));
            move |req| proxy::handle(shared.clone(), peer.clone(), req)
        };
        listener::serve(listener, handshake, connection, limits, stop).await;
    });
}

/// Closes idle upstream connections past their idle timeout, every few seconds.
async fn sweep_pools(pools: Pools) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        pools.sweep();
    }
}

fn keys_display(opts: &Options) -> String {
    Keys::new(&opts.etcd_prefix).all()
}

impl Dataplane {
    /// The bound proxy address (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound HTTPS address, when there is an HTTPS listener.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Whether the first full configuration from etcd has been loaded.
    pub fn is_ready(&self) -> bool {
        self.shared.is_ready()
    }

    /// The metrics of this instance.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Fails readiness, keeps accepting for the drain delay, then stops accepting, lets in-flight requests finish
    /// within the grace period (HTTP/1.1 connections close once idle, HTTP/2 ones get GOAWAY), and stops the
    /// background tasks.
    pub async fn shutdown(self) {
        self.shared.draining.store(true, Ordering::Release);
        if !self.drain_delay.is_zero() {
            info!(delay = ?self.drain_delay, "draining: not ready, still accepting");
            tokio::time::sleep(self.drain_delay).await;
        }
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(self.grace, self.shutdown.closed()).await.is_err() {
            warn!(grace = ?self.grace, "grace period over; closing remaining connections");
        }
        info!("data plane stopped");
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for task in &self.background {
            task.abort();
        }
    }
}

/// Runs the data plane until `shutdown` completes, then shuts down gracefully.
pub async fn run(opts: Options, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let dataplane = start(opts).await?;
    shutdown.await;
    info!("shutdown requested; draining connections");
    dataplane.shutdown().await;
    Ok(())
}
