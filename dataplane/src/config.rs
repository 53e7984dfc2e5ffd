//! The configuration pipeline off the request path: changes from etcd are applied one object at a time to a
//! [`State`] (decoded and checked once per etcd revision, resolved incrementally into a persistent router), and
//! after each burst of changes a new immutable [`Compiled`] snapshot is published through an `ArcSwap`. The cost
//! of a change depends on what changed, not on how many routes there are.

mod state;
mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_model::{DecodeError, Keys, Kind};
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::Shared;
use crate::pipeline::Pipeline;
use crate::proxy::HttpClient;
use crate::router::{self, Router};

pub use state::{State, exercise};
pub use upstream::{DEFAULT_TIMEOUT, NodeRuntime, Timeouts, UpstreamRuntime, UpstreamSpec};

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

/// Why an object is not served.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    /// The bytes are not a valid object of their kind.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The router cannot honour a matching field.
    #[error(transparent)]
    Match(#[from] router::Unsupported),
    /// Fields that contradict each other.
    #[error("conflicting definition: {0}")]
    Conflict(String),
    /// A setting with a value outside what it allows.
    #[error("invalid {0}")]
    Invalid(String),
    /// A feature this data plane does not implement yet.
    #[error("{0} is not supported yet")]
    Unsupported(String),
}

/// Why a route that is in the table cannot be proxied: it answers 503 until this is fixed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    /// It names an object that is absent (or was rejected).
    #[error("{kind} {id} not found")]
    Missing {
        /// The kind of the missing object.
        kind: Kind,
        /// Its id.
        id: Arc<str>,
    },
    /// Neither the route nor its service has an upstream.
    #[error("no upstream configured in the route or its service")]
    NoUpstream,
}

/// What a matched route leads to.
#[derive(Debug)]
pub struct Target {
    /// The route's id.
    pub route_id: Arc<str>,
    /// The upstream, or why there is none.
    pub upstream: Result<Arc<UpstreamRuntime>, Unresolved>,
    /// Effective timeouts.
    pub timeouts: Timeouts,
    /// The client whose connector has this route's connect timeout.
    pub client: HttpClient,
    /// Set once a problem with this target was logged, so a broken route logs once per resolution.
    pub warned: AtomicBool,
    /// The plugins the request runs through.
    pub pipeline: Pipeline,
}

impl Target {
    /// Whether this is the first time a problem is reported for this target.
    pub fn first_warning(&self) -> bool {
        !self.warned.swap(true, Ordering::Relaxed)
    }
}

/// An immutable configuration snapshot, as the request path sees it.
#[derive(Debug, Default)]
pub struct Compiled {
    /// The routing table.
    pub router: Router<Target>,
    /// Increases with every publish; 0 is the empty configuration served before the first sync.
    pub version: u64,
}

/// Owns the state: applies updates from the source, publishes after each burst, and swaps the snapshot in.
pub(crate) async fn run(keys: Keys, mut updates: mpsc::Receiver<Update>, shared: Arc<Shared>) {
    let mut state = State::new(keys).with_metrics(shared.metrics.clone());
    let metrics = shared.metrics.clone();
    let on_reject = move |kind: Kind| metrics.rejected(kind);
    let mut synced = false;
    while let Some(first) = updates.recv().await {
        synced |= matches!(first, Update::Reset(_));
        let mut changed = state.apply(first, &on_reject);
        let started = tokio::time::Instant::now();
        while started.elapsed() < MAX_DELAY {
            match tokio::time::timeout(QUIET, updates.recv()).await {
                Ok(Some(update)) => {
                    synced |= matches!(update, Update::Reset(_));
                    changed |= state.apply(update, &on_reject);
                }
                Ok(None) => return,
                Err(_quiet) => break,
            }
        }
        if !synced || (!changed && shared.is_ready()) {
            continue;
        }
        let compiled = state.publish();
        let routes = compiled.router.len();
        debug!(version = compiled.version, routes, "published configuration");
        shared.metrics.routes.set(i64::try_from(routes).unwrap_or(i64::MAX));
        shared.metrics.compiles.inc();
        shared.config.store(Arc::new(compiled));
        if !shared.ready.swap(true, Ordering::Release) {
            info!(routes, upstreams = state.upstreams(), "first configuration loaded from etcd; ready");
        }
    }
}

#[cfg(test)]
mod tests;
