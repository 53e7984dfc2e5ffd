//! What the rate limiting plugins share: the key a request is counted by, a lock-free table of per-key state that
//! forgets idle keys, the refusal, and this data plane's share of a cluster-wide limit.
//!
//! Each key's state is one `AtomicU64` updated by compare-and-swap, in a `papaya` map (lock-free reads; the
//! request path takes no lock). A key is allocated once, when first seen; the common keys (the client address as
//! its bytes, the consumer, route or service name borrowed from the context) cost no allocation for a known key.

use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode, request};
use sluice_model::plugins::limit::{KeyType, Scope};

use super::{Ctx, Reply, values};
use crate::membership::ClusterSize;
use crate::router::template::Template;

/// Keys beyond which a table sweeps out idle ones before growing further.
const SWEEP_FLOOR: usize = 4096;

/// How a request's key is formed.
#[derive(Debug)]
pub enum KeySource {
    /// The client address (after `real-ip`), counted by its bytes.
    RemoteAddr,
    /// The authenticated consumer's name.
    ConsumerName,
    /// The matched route's id.
    RouteId,
    /// The route's service id.
    ServiceId,
    /// The same text for every request.
    Constant(Box<str>),
    /// A variable or text with variables; an empty result counts by the client address, as in APISIX.
    Template(Template),
}

impl KeySource {
    /// The key source of `key` read as `key_type`.
    pub fn compile(key_type: KeyType, key: &str) -> Result<KeySource, String> {
        Ok(match (key_type, key) {
            (KeyType::Constant, _) => KeySource::Constant(key.into()),
            (KeyType::Var, "remote_addr") => KeySource::RemoteAddr,
            (KeyType::Var, "consumer_name") => KeySource::ConsumerName,
            (KeyType::Var, "route_id") => KeySource::RouteId,
            (KeyType::Var, "service_id") => KeySource::ServiceId,
            (KeyType::Var, _) => KeySource::Template(Template::compile(&format!("${{{key}}}"), false)?),
            (KeyType::VarCombination, _) => KeySource::Template(Template::compile(key, false)?),
        })
    }

    /// Calls `f` with this request's key. The common sources cost no allocation: the client address is its bytes
    /// (no other kind of key shares a table with it), names are borrowed from the context.
    pub fn with_key<R>(&self, ctx: &Ctx, req: &request::Parts, f: impl FnOnce(&[u8]) -> R) -> R {
        let ip = ctx.client.ip().to_canonical();
        let (v4, v6, rendered);
        let key: &[u8] = match self {
            KeySource::RemoteAddr => match ip {
                IpAddr::V4(a) => {
                    v4 = a.octets();
                    &v4
                }
                IpAddr::V6(a) => {
                    v6 = a.octets();
                    &v6
                }
            },
            KeySource::ConsumerName => ctx.consumer_name().unwrap_or_default().as_bytes(),
            KeySource::RouteId => ctx.route_id().unwrap_or_default().as_bytes(),
            KeySource::ServiceId => ctx.service_id().unwrap_or_default().as_bytes(),
            KeySource::Constant(text) => text.as_bytes(),
            KeySource::Template(t) => {
                rendered = values::render(t, ctx, req);
                rendered.as_bytes()
            }
        };
        if key.is_empty() {
            // Counted by the client address, as text (so it cannot meet another key's bytes).
            with_address(ip, |a| f(a.as_bytes()))
        } else {
            f(key)
        }
    }
}

/// Calls `f` with `ip` as text, formatted on the stack.
fn with_address<R>(ip: IpAddr, f: impl FnOnce(&str) -> R) -> R {
    let mut buf = [0u8; 48];
    let len = {
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        // An address always fits 48 bytes (an IPv6 address is at most 45 characters).
        let _ = write!(cursor, "{}", ip.to_canonical());
        usize::try_from(cursor.position()).unwrap_or(0)
    };
    f(std::str::from_utf8(&buf[..len]).unwrap_or(""))
}

/// Per-key state that can tell when it no longer matters (so the table may forget the key).
pub trait Idle {
    /// Whether the state is as good as a new key's at `now`, `span` being the table's (the window, the time a
    /// bucket takes to drain; in ticks).
    fn idle(&self, now: u32, span: u32) -> bool;
}

/// Per-key state, each key's allocated once and kept while it matters.
pub struct Table<V> {
    map: papaya::HashMap<Box<[u8]>, V, foldhash::fast::RandomState>,
    /// The size at which the next insert sweeps idle keys first.
    sweep_at: AtomicUsize,
    epoch: Instant,
    /// Milliseconds per tick.
    tick_ms: u32,
    /// What [`Idle::idle`] is told.
    span: u32,
}

impl<V> std::fmt::Debug for Table<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("keys", &self.map.len()).field("tick_ms", &self.tick_ms).finish()
    }
}

impl<V: Idle + Default> Table<V> {
    /// An empty table whose clock counts `tick_ms` milliseconds per tick, whose states are idle after `span`.
    pub fn new(tick_ms: u32, span: u32) -> Table<V> {
        Table {
            map: papaya::HashMap::with_hasher(foldhash::fast::RandomState::default()),
            sweep_at: AtomicUsize::new(SWEEP_FLOOR),
            epoch: Instant::now(),
            tick_ms: tick_ms.max(1),
            span,
        }
    }

    /// `at` in this table's ticks. Wraps after 2³² ticks; state compares ticks with wrapping arithmetic.
    pub fn ticks(&self, at: Instant) -> u32 {
        let ms = at.saturating_duration_since(self.epoch).as_millis() / u128::from(self.tick_ms);
        // Truncation is the wrap-around the state is written for; 0 is kept for "never".
        (ms as u32).max(1)
    }

    /// Calls `f` with `key`'s state, creating it (and sweeping idle keys when the table has grown) if new.
    pub fn with<R>(&self, key: &[u8], now: u32, f: impl FnOnce(&V) -> R) -> R {
        let map = self.map.pin();
        if let Some(state) = map.get(key) {
            return f(state);
        }
        if map.len() >= self.sweep_at.load(Ordering::Relaxed) {
            map.retain(|_, v| !v.idle(now, self.span));
            self.sweep_at.store((map.len() * 2).max(SWEEP_FLOOR), Ordering::Relaxed);
        }
        f(map.get_or_insert_with(key.into(), V::default))
    }

    /// How many keys are kept.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is kept.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The refusal of a limiting plugin: `rejected_code`, with `{"error_msg": rejected_msg}` when a message is set
/// (else an empty body), as APISIX answers.
pub fn refusal(code: u16, msg: Option<&str>) -> Result<Reply, String> {
    let status = StatusCode::from_u16(code).map_err(|e| e.to_string())?;
    let mut resp = Response::new(match msg {
        Some(msg) => Bytes::from(serde_json::json!({ "error_msg": msg }).to_string()),
        None => Bytes::new(),
    });
    *resp.status_mut() = status;
    if msg.is_some() {
        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Ok(resp)
}

/// This data plane's part of a limit: all of it for a node limit, the limit divided by the live data planes
/// (rounded up) for a cluster one.
#[derive(Debug, Clone)]
pub struct Share {
    cluster: Option<ClusterSize>,
}

impl Share {
    /// The share for `scope`, reading the cluster's size from `size`.
    pub fn new(scope: Scope, size: &ClusterSize) -> Share {
        Share { cluster: (scope == Scope::Cluster).then(|| size.clone()) }
    }

    /// The number of data planes a limit is divided by.
    pub fn divisor(&self) -> u64 {
        self.cluster.as_ref().map_or(1, |c| c.get() as u64)
    }

    /// `limit` divided up, rounded up (a whole-number limit; any share of a positive limit is at least 1).
    pub fn of(&self, limit: u64) -> u64 {
        limit.div_ceil(self.divisor())
    }

    /// `limit` divided up (a rate).
    pub fn of_rate(&self, limit: f64) -> f64 {
        limit / self.divisor() as f64
    }
}

/// The registry of limit-count groups: routes whose limit-count names the same `group` share one counter store
/// (a table, or a Redis-backed count), which outlives any one configuration of them.
#[derive(Debug)]
pub struct Groups<T> {
    shared: std::sync::Mutex<std::collections::HashMap<String, std::sync::Weak<T>>>,
}

impl<T> Default for Groups<T> {
    fn default() -> Self {
        Groups { shared: std::sync::Mutex::default() }
    }
}

impl<T> Groups<T> {
    /// The store of `group`, shared with every plugin instance that names it, made by `make` if none is alive
    /// (their configurations are equal, so the first one's settings hold for all).
    pub fn get(&self, group: &str, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
        // Only the configuration thread takes this lock, when it builds a plugin.
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.retain(|_, t| t.strong_count() > 0);
        if let Some(store) = shared.get(group).and_then(std::sync::Weak::upgrade) {
            return store;
        }
        let store = make();
        shared.insert(group.to_string(), Arc::downgrade(&store));
        store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[derive(Debug, Default)]
    struct Count(AtomicU64);

    impl Idle for Count {
        fn idle(&self, _: u32, _: u32) -> bool {
            self.0.load(Ordering::Relaxed) == 0
        }
    }

    #[test]
    fn keeps_state_per_key_and_forgets_idle_keys() {
        let table: Table<Count> = Table::new(10, 0);
        for i in 0..SWEEP_FLOOR {
            table.with(format!("k{i}").as_bytes(), 1, |c| c.0.fetch_add(u64::from(i % 2 == 0), Ordering::Relaxed));
        }
        table.with(b"k0", 1, |c| assert_eq!(c.0.load(Ordering::Relaxed), 1));
        assert_eq!(table.len(), SWEEP_FLOOR);
        table.with(b"new", 1, |_| ());
        assert_eq!(table.len(), SWEEP_FLOOR / 2 + 1, "the idle half was swept before the new key went in");
        with_address("::ffff:10.0.0.1".parse().unwrap(), |k| assert_eq!(k, "10.0.0.1"));
        with_address("2001:db8::1".parse().unwrap(), |k| assert_eq!(k, "2001:db8::1"));
    }

    #[test]
    fn divides_cluster_limits() {
        let size = ClusterSize::default();
        assert_eq!(Share::new(Scope::Cluster, &size).of(10), 10);
        assert_eq!(Share::new(Scope::Node, &size).of(10), 10);
        size.set(3);
        let cluster = Share::new(Scope::Cluster, &size);
        assert_eq!((cluster.of(10), cluster.of(1), cluster.of(0)), (4, 1, 0));
        assert_eq!(Share::new(Scope::Node, &size).of(10), 10);
        let refused = refusal(429, Some("slow down")).unwrap();
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.body().as_ref(), br#"{"error_msg":"slow down"}"#);
        assert!(refusal(503, None).unwrap().body().is_empty());
    }
}
