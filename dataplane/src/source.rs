//! The etcd source: list the prefix once, then watch it from the next revision, forever.
//!
//! On connection loss it reconnects with exponential backoff and resumes the watch after the last revision it saw,
//! so nothing is missed and nothing is re-listed. Only when etcd reports that revision compacted does it list the
//! prefix again; the list replaces the store in one update, so the served configuration never goes empty.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, WatchOptions};
use sluice_model::Keys;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::{RawObject, Update};
use crate::metrics::Metrics;
use crate::snapshot;

/// First delay after a failure.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest delay between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How patient the data plane is with etcd (`--etcd-dial-timeout`, `--etcd-request-timeout`,
/// `--etcd-keepalive-interval`, `--etcd-keepalive-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtcdTimeouts {
    /// How long connecting to an endpoint may take.
    pub dial: Duration,
    /// Limit on one call (a list, a watch's creation, a lease call): the client's balanced channel would wait
    /// forever for a dead endpoint.
    pub request: Duration,
    /// How often the connection is pinged (HTTP/2), so that a silently dead etcd is noticed.
    pub keep_alive_interval: Duration,
    /// How long a ping may go unanswered before the connection counts as dead.
    pub keep_alive_timeout: Duration,
}

impl Default for EtcdTimeouts {
    fn default() -> Self {
        EtcdTimeouts {
            dial: Duration::from_secs(3),
            request: Duration::from_secs(3),
            keep_alive_interval: Duration::from_secs(2),
            keep_alive_timeout: Duration::from_secs(2),
        }
    }
}

impl EtcdTimeouts {
    /// Connection options with these timeouts.
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions::new()
            .with_connect_timeout(self.dial)
            .with_keep_alive(self.keep_alive_interval, self.keep_alive_timeout)
            .with_keep_alive_while_idle(true)
    }
}

/// Why a session with etcd ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Etcd(#[from] etcd_client::Error),
    #[error("{0} timed out after {1:?}")]
    Timeout(&'static str, Duration),
    #[error("the watch stream ended")]
    Closed,
    #[error("etcd canceled the watch: {0}")]
    Canceled(String),
    /// The config task is gone: the data plane is shutting down.
    #[error("shutting down")]
    Stopped,
}

/// Where the source is in the key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Nothing is known yet, or the known revision was compacted: list everything.
    Unsynced,
    /// Every change up to and including this revision has been delivered.
    At(i64),
}

/// Reads the configuration from etcd and sends it to the config task.
pub struct Source {
    endpoints: Vec<String>,
    keys: Keys,
    updates: mpsc::Sender<Update>,
    metrics: Metrics,
    tls: Option<etcd_client::TlsOptions>,
    snapshot: Option<SnapshotFile>,
    timeouts: EtcdTimeouts,
}

/// The snapshot file the source keeps, and falls back on when etcd cannot be reached at start.
struct SnapshotFile {
    writer: snapshot::Writer,
    /// The revision of the snapshot being served, 0 when the configuration came from etcd.
    serving: Arc<AtomicI64>,
}

impl Source {
    /// A source for `keys` on `endpoints`, sending to `updates`.
    pub fn new(endpoints: Vec<String>, keys: Keys, updates: mpsc::Sender<Update>, metrics: Metrics) -> Source {
        Source { endpoints, keys, updates, metrics, tls: None, snapshot: None, timeouts: EtcdTimeouts::default() }
    }

    /// Uses `timeouts` with etcd.
    pub fn with_timeouts(mut self, timeouts: EtcdTimeouts) -> Source {
        self.timeouts = timeouts;
        self
    }

    /// Keeps `writer`'s snapshot file up to date, and starts from that file when etcd cannot be reached at start;
    /// `serving` tells the revision of the snapshot while it is served (0 once etcd has been read).
    pub fn with_snapshot(mut self, writer: snapshot::Writer, serving: Arc<AtomicI64>) -> Source {
        self.snapshot = Some(SnapshotFile { writer, serving });
        self
    }

    /// Serves the snapshot file, when there is one and it is sound; says why not otherwise.
    async fn fall_back(&self) -> Result<(), SessionError> {
        let Some(file) = &self.snapshot else { return Ok(()) };
        let path = file.writer.path().to_path_buf();
        // Off the async workers: the file may be large.
        let read = tokio::task::spawn_blocking(move || snapshot::read(&path)).await;
        let Ok(read) = read else { return Err(SessionError::Stopped) };
        match read {
            Ok(snap) => {
                warn!(
                    objects = snap.objects.len(),
                    revision = snap.revision,
                    path = %file.writer.path().display(),
                    "etcd cannot be reached; serving the configuration snapshot until it can"
                );
                file.serving.store(snap.revision.max(1), Ordering::Release);
                self.metrics.config_from_snapshot.set(1);
                self.updates.send(Update::Reset(snap.objects)).await.map_err(|_| SessionError::Stopped)
            }
            Err(e) => {
                error!(error = %e, "the configuration snapshot cannot be used; waiting for etcd");
                self.metrics.snapshot_refused.inc();
                Ok(())
            }
        }
    }

    /// Connects to etcd with TLS (a CA to verify the servers, a client certificate for mutual TLS).
    pub fn with_tls(mut self, tls: Option<etcd_client::TlsOptions>) -> Source {
        self.tls = tls;
        self
    }

    /// Runs until the receiving side is dropped, starting at `position` (normally [`Position::Unsynced`]; a known
    /// revision skips the first list, as a reconnect does).
    pub async fn run(self, mut position: Position) {
        let mut delay = BACKOFF_MIN;
        let mut ever_connected = false;
        let mut fell_back = false;
        loop {
            let err = self.session(&mut position, &mut delay, &mut ever_connected).await;
            self.metrics.etcd_connected.set(0);
            if matches!(err, SessionError::Stopped) {
                return;
            }
            // etcd has never answered since the start: serve the last known good configuration meanwhile.
            if !ever_connected && position == Position::Unsynced && !fell_back {
                fell_back = true;
                if self.fall_back().await.is_err() {
                    return;
                }
            }
            let endpoints = self.endpoints.join(",");
            if ever_connected {
                warn!(error = %err, "lost etcd at {endpoints}; serving the last configuration; retrying in {delay:?}");
            } else {
                error!(error = %err, "cannot reach etcd at {endpoints}; retrying in {delay:?}");
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(BACKOFF_MAX);
        }
    }

    async fn session(&self, position: &mut Position, delay: &mut Duration, ever_connected: &mut bool) -> SessionError {
        let mut options = self.timeouts.connect_options();
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.clone());
        }
        let mut client = match Client::connect(&self.endpoints, Some(options)).await {
            Ok(client) => client,
            Err(e) => return e.into(),
        };
        loop {
            let revision = match *position {
                Position::At(revision) => revision,
                Position::Unsynced => match self.list(&mut client).await {
                    Ok(revision) => {
                        *position = Position::At(revision);
                        revision
                    }
                    Err(e) => return e,
                },
            };
            match self.watch(&mut client, revision, position, delay, ever_connected).await {
                // Compacted: list again on the same connection.
                Ok(()) => *position = Position::Unsynced,
                Err(e) => return e,
            }
        }
    }

    /// Lists the prefix and hands it over as one reset; returns the revision of the list.
    async fn list(&self, client: &mut Client) -> Result<i64, SessionError> {
        let prefix = self.keys.all();
        let listed =
            tokio::time::timeout(self.timeouts.request, sluice_etcd::list_prefix(client, &prefix, sluice_etcd::PAGE))
                .await
                .map_err(|_| SessionError::Timeout("listing the prefix", self.timeouts.request))??;
        let revision = listed.revision;
        let objects: Vec<RawObject> =
            listed.kvs.iter().filter_map(|kv| self.raw(kv.key_str().ok()?, kv.value(), kv.mod_revision())).collect();
        info!(objects = objects.len(), revision, prefix = %self.keys.all(), "listed configuration from etcd");
        self.metrics.etcd_lists.inc();
        self.send(Update::Reset(objects)).await?;
        if let Some(file) = &self.snapshot
            && file.serving.swap(0, Ordering::AcqRel) != 0
        {
            info!("etcd is back; serving its configuration instead of the snapshot");
            self.metrics.config_from_snapshot.set(0);
        }
        Ok(revision)
    }

    /// Watches after `revision` until the stream fails (`Err`) or etcd reports compaction (`Ok`).
    async fn watch(
        &self,
        client: &mut Client,
        revision: i64,
        position: &mut Position,
        delay: &mut Duration,
        ever_connected: &mut bool,
    ) -> Result<(), SessionError> {
        let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1).with_progress_notify();
        let mut stream = tokio::time::timeout(self.timeouts.request, client.watch(self.keys.all(), Some(options)))
            .await
            .map_err(|_| SessionError::Timeout("creating the watch", self.timeouts.request))??;
        loop {
            let Some(resp) = stream.message().await? else { return Err(SessionError::Closed) };
            if resp.compact_revision() > 0 {
                warn!(
                    wanted = revision + 1,
                    compacted = resp.compact_revision(),
                    "etcd compacted the watched revision; listing the configuration again"
                );
                return Ok(());
            }
            if resp.canceled() {
                return Err(SessionError::Canceled(resp.cancel_reason().to_string()));
            }
            if resp.created() {
                // The watch is up: only now does the connection count as healthy.
                self.metrics.etcd_connected.set(1);
                *delay = BACKOFF_MIN;
                if !*ever_connected {
                    *ever_connected = true;
                } else {
                    info!(from = revision + 1, "watching etcd again");
                }
                continue;
            }
            if resp.events().is_empty() {
                // A progress notification: everything up to the header revision has been sent.
                if let Some(h) = resp.header() {
                    *position = Position::At(h.revision().max(revision));
                }
                continue;
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let Ok(key) = kv.key_str() else { continue };
                let update = match event.event_type() {
                    EventType::Put => self.raw(key, kv.value(), kv.mod_revision()).map(Update::Put),
                    EventType::Delete => self.relevant(key).then(|| Update::Delete(key.to_string())),
                };
                if let Some(update) = update {
                    self.send(update).await?;
                }
                *position = Position::At(kv.mod_revision());
            }
        }
    }

    fn relevant(&self, key: &str) -> bool {
        // Everything of a known kind under the prefix is configuration (other keys, such as data planes' own
        // records, are not).
        self.keys.parse(key).is_some()
    }

    fn raw(&self, key: &str, value: &[u8], revision: i64) -> Option<RawObject> {
        self.relevant(key).then(|| RawObject { key: key.to_string(), value: value.to_vec(), revision })
    }

    /// Sends an update read from etcd (and keeps the snapshot file's copy of it).
    async fn send(&self, update: Update) -> Result<(), SessionError> {
        if let Some(file) = &self.snapshot {
            file.writer.apply(&update);
        }
        self.updates.send(update).await.map_err(|_| SessionError::Stopped)
    }
}
