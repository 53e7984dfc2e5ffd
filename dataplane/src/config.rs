//! The configuration pipeline off the request path: raw objects from etcd go into a [`Store`] (decoded and
//! checked once per etcd revision), and the [`Compiler`] turns the store into an immutable [`Compiled`] snapshot
//! that the request path reads through an `ArcSwap`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::HeaderValue;
use http::uri::Authority;
use sluice_model::{DecodeError, Keys, Kind, LoadBalancer, PassHost, Route, Scheme, Timeout, Upstream};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::Shared;
use crate::balancer::Balancer;
use crate::proxy::{Clients, HttpClient};
use crate::router::{self, Router, Rule};

/// Timeout used for connect, send and read when neither the route nor the upstream sets one (APISIX's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// After a change, wait this long for more changes before compiling, so a burst compiles once.
const QUIET: Duration = Duration::from_millis(5);
/// ...but never delay a compile by more than this under a steady stream of changes.
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
    /// The bytes are not a valid object.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The router cannot honour a matching field.
    #[error(transparent)]
    Match(#[from] router::Unsupported),
    /// A feature this data plane does not implement yet.
    #[error("{0} is not supported yet")]
    Unsupported(String),
}

/// The parts of an upstream that shape its runtime; a runtime is reused while these stay equal.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    nodes: Vec<(String, u16, u32)>,
    pass_host: PassHost,
    upstream_host: Option<String>,
    timeout: Option<Timeout>,
    retries: Option<u32>,
}

impl UpstreamSpec {
    /// Checks that an upstream uses only supported features and extracts what the proxy needs.
    pub fn from_model(up: &Upstream) -> Result<UpstreamSpec, Rejected> {
        let unsupported = |what: String| Err(Rejected::Unsupported(what));
        if up.lb != LoadBalancer::Roundrobin {
            return unsupported(format!("upstream type {}", up.lb));
        }
        if up.scheme != Scheme::Http {
            return unsupported(format!("upstream scheme {}", up.scheme));
        }
        if up.checks.is_some() {
            return unsupported("upstream checks (health checks)".into());
        }
        if up.tls.is_some() {
            return unsupported("upstream tls".into());
        }
        let list = up.nodes.to_list().map_err(|e| Rejected::Decode(DecodeError::Upstream(e)))?;
        if list.windows(2).any(|w| w[0].priority != w[1].priority) {
            return unsupported("nodes with different priorities".into());
        }
        let nodes = list.iter().map(|n| (n.host.clone(), n.port.unwrap_or(80), n.weight)).collect();
        let spec = UpstreamSpec {
            nodes,
            pass_host: up.pass_host,
            upstream_host: up.upstream_host.clone(),
            timeout: up.timeout,
            retries: up.retries,
        };
        // Build a runtime once now so that anything it cannot use (odd host names) rejects the object on arrival,
        // counted once, instead of at every compile.
        UpstreamRuntime::new("check".into(), spec.clone())?;
        Ok(spec)
    }
}

/// Checks the route-level fields the proxy does not implement yet.
fn check_route(route: &Route) -> Result<Option<UpstreamSpec>, Rejected> {
    let unsupported = |what: &str| Err(Rejected::Unsupported(what.to_string()));
    if route.plugins.as_ref().is_some_and(|p| !p.is_empty()) {
        return unsupported("plugins");
    }
    if route.service_id.is_some() {
        return unsupported("service_id");
    }
    if route.plugin_config_id.is_some() {
        return unsupported("plugin_config_id");
    }
    if route.enable_websocket == Some(true) {
        return unsupported("enable_websocket");
    }
    if route.upstream.is_none() && route.upstream_id.is_none() {
        // Valid in APISIX only with plugins or a service, both rejected above; keep the rule explicit.
        return unsupported("a route without upstream or upstream_id");
    }
    route.upstream.as_ref().map(UpstreamSpec::from_model).transpose()
}

#[derive(Debug)]
struct RouteObject {
    revision: i64,
    route: Route,
    rule: Rule,
    inline: Option<UpstreamSpec>,
}

#[derive(Debug)]
struct UpstreamObject {
    revision: i64,
    spec: UpstreamSpec,
}

/// The accepted raw objects by id, plus the revisions of rejected keys (so a rejection is counted once).
#[derive(Debug, Default)]
pub struct Store {
    routes: BTreeMap<String, RouteObject>,
    upstreams: BTreeMap<String, UpstreamObject>,
    rejected: HashMap<String, i64>,
}

impl Store {
    /// Applies one change; returns whether anything served may have changed.
    pub fn apply(&mut self, keys: &Keys, update: Update, on_reject: &dyn Fn(Kind)) -> bool {
        match update {
            Update::Reset(objects) => {
                let mut old = std::mem::take(self);
                for object in objects {
                    self.put(keys, object, Some(&mut old), on_reject);
                }
                true
            }
            Update::Put(object) => self.put(keys, object, None, on_reject),
            Update::Delete(key) => {
                self.rejected.remove(&key);
                match keys.parse(&key) {
                    Some((Kind::Route, id)) => self.routes.remove(id).is_some(),
                    Some((Kind::Upstream, id)) => self.upstreams.remove(id).is_some(),
                    _ => false,
                }
            }
        }
    }

    /// Stores one object, reusing the already decoded version from `old` when its revision is the same.
    fn put(&mut self, keys: &Keys, object: RawObject, old: Option<&mut Store>, on_reject: &dyn Fn(Kind)) -> bool {
        let Some((kind, id)) = keys.parse(&object.key) else { return false };
        let id = id.to_string();
        if let Some(old) = old {
            match kind {
                Kind::Route if old.routes.get(&id).is_some_and(|r| r.revision == object.revision) => {
                    if let Some(r) = old.routes.remove(&id) {
                        self.routes.insert(id, r);
                    }
                    return true;
                }
                Kind::Upstream if old.upstreams.get(&id).is_some_and(|u| u.revision == object.revision) => {
                    if let Some(u) = old.upstreams.remove(&id) {
                        self.upstreams.insert(id, u);
                    }
                    return true;
                }
                _ if old.rejected.get(&object.key) == Some(&object.revision) => {
                    self.rejected.insert(object.key, object.revision);
                    return false;
                }
                _ => {}
            }
        } else if self.rejected.get(&object.key) == Some(&object.revision) {
            return false;
        }
        let result = match kind {
            Kind::Route => decode_route(&id, &object.value).map(|(route, rule, inline)| {
                self.routes.insert(id.clone(), RouteObject { revision: object.revision, route, rule, inline });
            }),
            Kind::Upstream => decode_upstream(&object.value).map(|spec| {
                self.upstreams.insert(id.clone(), UpstreamObject { revision: object.revision, spec });
            }),
            // Other kinds are not served yet; they are ignored without noise.
            _ => return false,
        };
        match result {
            Ok(()) => {
                self.rejected.remove(&object.key);
                true
            }
            Err(reason) => {
                warn!(key = %object.key, %reason, "rejected {kind}; it is not served");
                on_reject(kind);
                self.rejected.insert(object.key, object.revision);
                // A previously good version is dropped: a rejected object is served as if absent.
                match kind {
                    Kind::Route => self.routes.remove(&id).is_some(),
                    _ => self.upstreams.remove(&id).is_some(),
                }
            }
        }
    }

    /// The number of accepted routes (enabled or not).
    pub fn routes(&self) -> usize {
        self.routes.len()
    }
}

fn decode_route(id: &str, bytes: &[u8]) -> Result<(Route, Rule, Option<UpstreamSpec>), Rejected> {
    let route = sluice_model::decode_route(bytes)?;
    let inline = check_route(&route)?;
    let rule = Rule::from_route(id, &route)?;
    Ok((route, rule, inline))
}

fn decode_upstream(bytes: &[u8]) -> Result<UpstreamSpec, Rejected> {
    UpstreamSpec::from_model(&sluice_model::decode_upstream(bytes)?)
}

/// Timeouts for one route, after the route's `timeout` has overridden the upstream's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// Time allowed to open a connection to a node.
    pub connect: Duration,
    /// Time allowed between two writes of the request (not enforced separately yet).
    pub send: Duration,
    /// Time allowed to wait for the response headers, and between two reads of the response body.
    pub read: Duration,
}

impl Timeouts {
    fn from_model(t: Option<Timeout>) -> Timeouts {
        let secs = |s: f64| Duration::try_from_secs_f64(s).unwrap_or(DEFAULT_TIMEOUT);
        match t {
            Some(t) => Timeouts { connect: secs(t.connect), send: secs(t.send), read: secs(t.read) },
            None => Timeouts { connect: DEFAULT_TIMEOUT, send: DEFAULT_TIMEOUT, read: DEFAULT_TIMEOUT },
        }
    }
}

/// One node, with what the proxy needs precomputed.
#[derive(Debug)]
pub struct NodeRuntime {
    /// `host:port` to dial.
    pub authority: Authority,
    /// The `Host` header for `pass_host: node` (no port when it is the scheme default).
    pub host_header: HeaderValue,
}

/// The runtime of one upstream: nodes and balancer position. Shared by every route using the upstream and kept
/// across recompiles while its definition is unchanged.
#[derive(Debug)]
pub struct UpstreamRuntime {
    /// The upstream's id, or `route <id>` for an inline upstream; used in logs and errors.
    pub name: Arc<str>,
    spec: UpstreamSpec,
    /// The nodes, indexed as the balancer indexes them.
    pub nodes: Vec<NodeRuntime>,
    /// The smooth WRR state.
    pub balancer: Balancer,
    /// The `Host` header for `pass_host: rewrite`.
    pub rewrite_host: Option<HeaderValue>,
    /// How many nodes one request may try: 1 + `retries` (default: every node), at most the eligible nodes.
    pub max_tries: usize,
}

impl UpstreamRuntime {
    fn new(name: Arc<str>, spec: UpstreamSpec) -> Result<UpstreamRuntime, Rejected> {
        let mut nodes = Vec::with_capacity(spec.nodes.len());
        for (host, port, _) in &spec.nodes {
            let bracketed = if host.contains(':') { format!("[{host}]") } else { host.clone() };
            let authority = Authority::try_from(format!("{bracketed}:{port}"))
                .map_err(|e| Rejected::Unsupported(format!("node address {host}:{port} ({e})")))?;
            let host_text = if *port == 80 { bracketed } else { format!("{bracketed}:{port}") };
            let host_header = HeaderValue::try_from(host_text)
                .map_err(|e| Rejected::Unsupported(format!("node host {host} ({e})")))?;
            nodes.push(NodeRuntime { authority, host_header });
        }
        let weights: Vec<u32> = spec.nodes.iter().map(|(_, _, w)| *w).collect();
        let balancer = Balancer::new(&weights);
        let rewrite_host = match (spec.pass_host, &spec.upstream_host) {
            (PassHost::Rewrite, Some(h)) => Some(
                HeaderValue::try_from(h.as_str())
                    .map_err(|e| Rejected::Unsupported(format!("upstream_host {h:?} ({e})")))?,
            ),
            _ => None,
        };
        let eligible = balancer.eligible();
        let max_tries = spec.retries.map_or(eligible, |r| (r as usize).saturating_add(1)).clamp(1, eligible.max(1));
        Ok(UpstreamRuntime { name, spec, nodes, balancer, rewrite_host, max_tries })
    }

    /// How the `Host` header is chosen.
    pub fn pass_host(&self) -> PassHost {
        self.spec.pass_host
    }
}

/// What a matched route leads to.
#[derive(Debug)]
pub struct Target {
    /// The route's id.
    pub route_id: Arc<str>,
    /// The upstream, or the id of a missing one.
    pub upstream: Result<Arc<UpstreamRuntime>, Arc<str>>,
    /// Effective timeouts.
    pub timeouts: Timeouts,
    /// The client whose connector has this route's connect timeout.
    pub client: HttpClient,
    /// Set once a problem with this target was logged, so a broken route logs once per config version.
    pub warned: AtomicBool,
}

impl Target {
    /// Whether this is the first time a problem is reported for this target in this config version.
    pub fn first_warning(&self) -> bool {
        !self.warned.swap(true, Ordering::Relaxed)
    }
}

/// An immutable compiled configuration.
#[derive(Debug, Default)]
pub struct Compiled {
    /// The routing table.
    pub router: Router<Target>,
    /// Increases with every compile; 0 is the empty configuration served before the first sync.
    pub version: u64,
}

/// Builds snapshots, keeping upstream runtimes and HTTP clients from one compile to the next.
#[derive(Default)]
pub struct Compiler {
    runtimes: HashMap<String, Arc<UpstreamRuntime>>,
    clients: Clients,
    version: u64,
}

impl Compiler {
    /// Compiles the whole store (a full rebuild; reuses runtimes of unchanged upstreams).
    pub fn compile(&mut self, store: &Store) -> Compiled {
        self.version += 1;
        let mut runtimes = HashMap::new();
        let mut clients = Clients::default();
        let mut runtime = |key: String, name: &str, spec: &UpstreamSpec| -> Option<Arc<UpstreamRuntime>> {
            if let Some(rt) = runtimes.get(&key) {
                return Some(Arc::clone(rt));
            }
            let rt = match self.runtimes.get(&key) {
                Some(old) if old.spec == *spec => Arc::clone(old),
                _ => match UpstreamRuntime::new(name.into(), spec.clone()) {
                    Ok(rt) => Arc::new(rt),
                    Err(reason) => {
                        warn!(upstream = name, %reason, "rejected upstream; it is not served");
                        return None;
                    }
                },
            };
            runtimes.insert(key, Arc::clone(&rt));
            Some(rt)
        };
        let mut rules = Vec::with_capacity(store.routes.len());
        for (id, obj) in &store.routes {
            let (upstream, up_timeout) = match (&obj.inline, &obj.route.upstream_id) {
                (Some(spec), _) => match runtime(format!("route/{id}"), &format!("route {id}"), spec) {
                    Some(rt) => (Ok(rt), spec.timeout),
                    None => continue,
                },
                (None, Some(up_id)) => match store.upstreams.get(up_id) {
                    Some(up) => match runtime(format!("upstream/{up_id}"), up_id, &up.spec) {
                        Some(rt) => (Ok(rt), up.spec.timeout),
                        None => (Err(up_id.as_str().into()), None),
                    },
                    None => (Err(up_id.as_str().into()), None),
                },
                (None, None) => continue,
            };
            let timeouts = Timeouts::from_model(obj.route.timeout.or(up_timeout));
            let client = clients.take_or_build(&mut self.clients, timeouts.connect);
            let target = Target { route_id: obj.rule.id().clone(), upstream, timeouts, client, warned: false.into() };
            rules.push((obj.rule.clone(), target));
        }
        self.runtimes = runtimes;
        self.clients = clients;
        Compiled { router: Router::new(rules), version: self.version }
    }
}

/// Owns the store: applies updates from the source, compiles after each burst, and swaps the snapshot in.
pub(crate) async fn run(keys: Keys, mut updates: mpsc::Receiver<Update>, shared: Arc<Shared>) {
    let mut store = Store::default();
    let mut compiler = Compiler::default();
    let metrics = shared.metrics.clone();
    let on_reject = move |kind: Kind| metrics.rejected(kind);
    let mut synced = false;
    while let Some(first) = updates.recv().await {
        synced |= matches!(first, Update::Reset(_));
        let mut changed = store.apply(&keys, first, &on_reject);
        let started = tokio::time::Instant::now();
        while started.elapsed() < MAX_DELAY {
            match tokio::time::timeout(QUIET, updates.recv()).await {
                Ok(Some(update)) => {
                    synced |= matches!(update, Update::Reset(_));
                    changed |= store.apply(&keys, update, &on_reject);
                }
                Ok(None) => return,
                Err(_quiet) => break,
            }
        }
        if !synced || (!changed && shared.is_ready()) {
            continue;
        }
        let compiled = compiler.compile(&store);
        let routes = compiled.router.len();
        debug!(version = compiled.version, routes, "compiled configuration");
        shared.metrics.routes.set(i64::try_from(routes).unwrap_or(i64::MAX));
        shared.metrics.compiles.inc();
        shared.config.store(Arc::new(compiled));
        if !shared.ready.swap(true, Ordering::Release) {
            info!(routes, upstreams = store.upstreams.len(), "first configuration loaded from etcd; ready");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::cell::Cell;

    fn raw(key: &str, value: serde_json::Value, revision: i64) -> RawObject {
        RawObject { key: key.into(), value: value.to_string().into_bytes(), revision }
    }

    #[test]
    fn keeps_runtimes_of_unchanged_upstreams() {
        let keys = Keys::default();
        let mut store = Store::default();
        let rejected = Cell::new(0);
        let on_reject = |_: Kind| rejected.set(rejected.get() + 1);
        let up = json!({"nodes": {"127.0.0.1:1": 1}});
        store.apply(&keys, Update::Put(raw("/sluice/upstreams/u", up.clone(), 2)), &on_reject);
        store.apply(
            &keys,
            Update::Put(raw("/sluice/routes/r", json!({"uri": "/", "upstream_id": "u"}), 3)),
            &on_reject,
        );
        let mut compiler = Compiler::default();
        let first = compiler.compile(&store);
        let rt = |c: &Compiled| c.router_targets()[0].upstream.as_ref().map(Arc::clone).unwrap();
        store.apply(
            &keys,
            Update::Put(raw("/sluice/routes/r2", json!({"uri": "/x", "upstream_id": "u"}), 4)),
            &on_reject,
        );
        let second = compiler.compile(&store);
        assert!(Arc::ptr_eq(&rt(&first), &rt(&second)), "unchanged upstream keeps its balancer");
        store.apply(
            &keys,
            Update::Put(raw("/sluice/upstreams/u", json!({"nodes": {"127.0.0.1:2": 1}}), 5)),
            &on_reject,
        );
        let third = compiler.compile(&store);
        assert!(!Arc::ptr_eq(&rt(&second), &rt(&third)), "changed upstream gets a new runtime");
        assert_eq!(rejected.get(), 0);
    }

    #[test]
    fn rejects_bad_objects_once_and_alone() {
        let keys = Keys::default();
        let mut store = Store::default();
        let rejected = Cell::new(0);
        let on_reject = |_: Kind| rejected.set(rejected.get() + 1);
        let bad = RawObject { key: "/sluice/routes/bad".into(), value: b"{not json".to_vec(), revision: 2 };
        let objects = vec![
            bad.clone(),
            raw("/sluice/routes/plug", json!({"uri": "/p", "plugins": {"key-auth": {}}, "upstream_id": "u"}), 3),
            raw("/sluice/routes/ok", json!({"uri": "/ok", "upstream_id": "u"}), 4),
            raw("/sluice/upstreams/u", json!({"type": "chash", "key": "remote_addr", "nodes": {}}), 5),
            raw("/sluice/routes/param", json!({"uri": "/u/:id", "upstream_id": "u"}), 6),
            raw("/sluice/ssls/s", json!({}), 7),
            raw("/elsewhere/routes/x", json!({}), 8),
        ];
        store.apply(&keys, Update::Reset(objects.clone()), &on_reject);
        assert_eq!(rejected.get(), 4);
        assert_eq!(store.routes(), 1);
        // A re-list with the same revisions does not count again; a new revision does.
        store.apply(&keys, Update::Reset(objects), &on_reject);
        assert_eq!(rejected.get(), 4);
        store.apply(&keys, Update::Put(RawObject { revision: 9, ..bad }), &on_reject);
        assert_eq!(rejected.get(), 5);
        store.apply(&keys, Update::Delete("/sluice/routes/ok".into()), &on_reject);
        assert_eq!(store.routes(), 0);
    }

    #[test]
    fn checks_supported_upstream_features() {
        let spec = |v: serde_json::Value| UpstreamSpec::from_model(&serde_json::from_value(v).unwrap());
        assert!(spec(json!({"nodes": {"a:1": 1}})).is_ok());
        assert!(spec(json!({"scheme": "https", "nodes": {"a:1": 1}})).is_err());
        assert!(spec(json!({"type": "least_conn", "nodes": {"a:1": 1}})).is_err());
        assert!(spec(json!({"checks": {}, "nodes": {"a:1": 1}})).is_err());
        assert!(spec(json!({"tls": {}, "nodes": {"a:1": 1}})).is_err());
        let tiers = json!({"nodes": [{"host": "a", "port": 1, "weight": 1, "priority": 1},
            {"host": "b", "port": 1, "weight": 1}]});
        assert!(spec(tiers).is_err());
    }

    #[test]
    fn route_timeout_overrides_upstream_timeout() {
        let t = Timeouts::from_model(Some(Timeout { connect: 1.0, send: 2.0, read: 0.3 }));
        assert_eq!(t.read, Duration::from_millis(300));
        assert_eq!(Timeouts::from_model(None).connect, DEFAULT_TIMEOUT);
    }

    impl Compiled {
        fn router_targets(&self) -> Vec<&Target> {
            let headers = http::HeaderMap::new();
            let info = router::RequestInfo {
                method: &http::Method::GET,
                host: "",
                path: "/",
                query: None,
                headers: &headers,
                remote_addr: "127.0.0.1".parse().unwrap(),
            };
            self.router.find(&info).map(|e| &e.value).into_iter().collect()
        }
    }
}
