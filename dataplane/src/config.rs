//! The configuration pipeline off the request path: changes from etcd are applied one object at a time to a
//! [`State`] (decoded and checked once per etcd revision, resolved incrementally into a persistent router), and
//! after each burst of changes a new immutable [`Compiled`] snapshot is published through an `ArcSwap`. The cost
//! of a change depends on what changed, not on how many routes there are.
//!
//! All of this runs on its own OS thread, so a burst of configuration work never queues behind or ahead of request
//! tasks on the async workers.

pub mod credentials;
mod decode;
mod state;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice_model::{Keys, Kind};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::Shared;
use crate::error::Unresolved;
use crate::listener::certs::Certificates;
use crate::plugins::{Chain, Consumers, Enabled, RouteMeta};
use crate::router::Router;
use crate::upstream::{Timeouts, UpstreamRuntime};

pub use state::{State, exercise};

/// After a change, wait this long for more changes before publishing, so a burst publishes once.
const QUIET: Duration = Duration::from_millis(5);
/// ...but never delay a publish by more than this under a steady stream of changes.
const MAX_DELAY: Duration = Duration::from_millis(100);

/// A change read from etcd.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The full content of the prefix (first sync, or re-sync after compaction); replaces everything.
    Reset(Vec<RawObject>),
    /// A key was created or changed.
    Put(RawObject),
    /// A key was deleted.
    Delete(String),
}

/// One key as read from etcd.
#[derive(Debug, Clone, PartialEq)]
pub struct RawObject {
    /// The full key.
    pub key: String,
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The key's `mod_revision`, which identifies this version of the value.
    pub revision: i64,
}

/// What a matched route leads to.
#[derive(Debug)]
pub struct Target {
    /// The route's id.
    pub route_id: Arc<str>,
    /// Its names and labels, for plugins, logs and metrics.
    pub meta: Arc<RouteMeta>,
    /// The upstream, or why there is none.
    pub upstream: Result<Arc<UpstreamRuntime>, Unresolved>,
    /// Effective timeouts.
    pub timeouts: Timeouts,
    /// Set once a problem with this target was logged, so a broken route logs once per resolution.
    pub warned: AtomicBool,
    /// The plugins the request runs through (the route's, its plugin config's and its service's, merged).
    pub chain: Chain,
    /// Whether `Upgrade` requests (WebSocket) are passed to the node (`enable_websocket`).
    pub websocket: bool,
    /// Where each traffic-split share sends requests, by the share's number (see [`crate::plugins::Ctx::split`]).
    pub splits: Box<[Destination]>,
}

/// An upstream a request may be sent to, with the timeouts that apply there.
#[derive(Debug)]
pub struct Destination {
    /// The upstream, or why there is none.
    pub upstream: Result<Arc<UpstreamRuntime>, Unresolved>,
    /// Effective timeouts (the route's, else the upstream's).
    pub timeouts: Timeouts,
}

impl Target {
    /// Whether this is the first time a problem is reported for this target.
    pub fn first_warning(&self) -> bool {
        !self.warned.swap(true, Ordering::Relaxed)
    }
}

/// An immutable configuration snapshot, as the request path sees it.
#[derive(Debug)]
pub struct Compiled {
    /// The routing table.
    pub router: Router<Target>,
    /// The plugins of every global rule, run on every request; or why they cannot be (every request then answers
    /// 503: a global rule may be what keeps requests out).
    pub global: Result<Chain, Unresolved>,
    /// The consumers, for authentication plugins.
    pub consumers: Arc<Consumers>,
    /// The server certificates, by server name, for the HTTPS listener.
    pub certificates: Arc<Certificates>,
    /// Increases with every publish; 0 is the empty configuration served before the first sync.
    pub version: u64,
}

impl Default for Compiled {
    fn default() -> Self {
        Compiled {
            router: Router::default(),
            global: Ok(Chain::default()),
            consumers: Arc::default(),
            certificates: Arc::default(),
            version: 0,
        }
    }
}

/// What the configuration thread starts its state with.
pub(crate) struct Settings {
    /// The plugins this data plane runs.
    pub(crate) plugins: Enabled,
    /// Plugins the data plane adds to the global rules (the access log).
    pub(crate) global: Chain,
    /// The ssl object served when no server name matches.
    pub(crate) default_ssl: Option<String>,
    /// The port clients reach HTTPS on, for redirects.
    pub(crate) https_port: Option<u16>,
    /// The number of live data planes, for cluster-wide limits.
    pub(crate) cluster: crate::membership::ClusterSize,
    /// The zone this data plane runs in.
    pub(crate) zone: Option<String>,
    /// The keyring consumers' sealed credentials are opened with.
    pub(crate) credential_keys: credentials::CredentialKeys,
}

/// The name of the thread that applies and publishes configuration changes.
const THREAD_NAME: &str = "sluice-config";

/// The configuration thread's priority on the crate's 0–99 scale; on Linux this is nice 9. Requests win the CPU
/// when both want it, yet a resync under full load still gets about a tenth of a core instead of starving.
const PRIORITY: u8 = 25;

/// Owns the state on a dedicated thread: applies updates from the source, publishes after each burst, and swaps
/// the snapshot in. Completes when the thread ends, which it does once the source drops its sender.
pub(crate) async fn run(keys: Keys, updates: mpsc::Receiver<Update>, shared: Arc<Shared>, settings: Settings) {
    // Health-check tasks of upstreams are spawned from the thread onto this runtime.
    let runtime = Handle::current();
    let (done, ended) = oneshot::channel::<()>();
    let spawned = std::thread::Builder::new().name(THREAD_NAME.into()).spawn(move || {
        // Dropped when the thread ends, even by a panic, which completes `ended`.
        let _done = done;
        let _entered = runtime.enter();
        lower_priority();
        compile(keys, updates, &shared, settings);
    });
    match spawned {
        Ok(_) => {
            let _ = ended.await;
        }
        Err(reason) => error!(%reason, "cannot start the configuration thread; no configuration will be loaded"),
    }
}

/// Lowers the calling thread's scheduling priority so configuration work yields the CPU to request handling.
fn lower_priority() {
    use thread_priority::{ThreadPriority, ThreadPriorityValue, set_current_thread_priority};
    let lowered = ThreadPriorityValue::try_from(PRIORITY)
        .map_err(|reason| reason.to_string())
        .and_then(|value| set_current_thread_priority(ThreadPriority::Crossplatform(value)).map_err(|e| e.to_string()));
    if let Err(reason) = lowered {
        // Only an optimisation: configuration still applies at the normal priority.
        warn!(%reason, "cannot lower the configuration thread's priority");
    }
}

/// The loop of the configuration thread: returns when the channel closes.
fn compile(keys: Keys, mut updates: mpsc::Receiver<Update>, shared: &Shared, settings: Settings) {
    // A private timer for the quiet period: the request runtime's timer may be driven only from inside its own
    // `block_on` (a current-thread runtime), and is shut down at exit before this thread sees the channel close.
    let timer = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(timer) => timer,
        Err(reason) => {
            error!(%reason, "cannot start the configuration timer; no configuration will be loaded");
            return;
        }
    };
    let state = State::new(keys)
        .with_metrics(shared.metrics.clone())
        .with_pools(shared.pools.clone())
        .with_plugins(settings.plugins)
        .with_https_port(settings.https_port)
        .with_cluster(settings.cluster)
        .with_zone(settings.zone.as_deref())
        .with_first_pass(shared.first_pass.clone())
        .with_default_ssl(settings.default_ssl.as_deref())
        .with_credential_keys(settings.credential_keys);
    let mut state = state.with_global(settings.global);
    let metrics = shared.metrics.clone();
    let on_reject = move |kind: Kind| metrics.rejected(kind);
    let mut synced = false;
    while let Some(first) = updates.blocking_recv() {
        synced |= matches!(first, Update::Reset(_));
        let mut changed = state.apply(first, &on_reject);
        let started = Instant::now();
        while started.elapsed() < MAX_DELAY {
            match next_within(&timer, &mut updates, QUIET) {
                Ok(Some(update)) => {
                    synced |= matches!(update, Update::Reset(_));
                    changed |= state.apply(update, &on_reject);
                }
                Ok(None) => return,
                Err(_quiet) => break,
            }
        }
        if !synced || (!changed && shared.config_loaded()) {
            continue;
        }
        let compiled = state.publish();
        let routes = compiled.router.len();
        debug!(version = compiled.version, routes, "published configuration");
        shared.metrics.routes.set(i64::try_from(routes).unwrap_or(i64::MAX));
        shared.metrics.compiles.inc();
        shared.config.store(Arc::new(compiled));
        if !shared.config_loaded() && shared.mark_loaded() {
            info!(routes, upstreams = state.upstreams(), "first configuration loaded from etcd; ready");
        }
    }
}

/// The next update if one arrives within `wait`; `Ok(None)` once the channel is closed.
fn next_within(
    timer: &Runtime,
    updates: &mut mpsc::Receiver<Update>,
    wait: Duration,
) -> Result<Option<Update>, tokio::time::error::Elapsed> {
    // Already queued updates are taken without entering the timer runtime: a burst usually is.
    match updates.try_recv() {
        Ok(update) => return Ok(Some(update)),
        Err(mpsc::error::TryRecvError::Disconnected) => return Ok(None),
        Err(mpsc::error::TryRecvError::Empty) => {}
    }
    timer.block_on(tokio::time::timeout(wait, updates.recv()))
}

#[cfg(test)]
mod tests;
