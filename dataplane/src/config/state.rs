//! The configuration state, changed one object at a time.
//!
//! Each object is decoded and checked once per etcd revision, and its plugins built (instances of unchanged plugin
//! configurations are kept). A route is resolved (service, plugin config and upstream looked up, its hosts
//! inherited, its plugins merged) into a router entry; a reverse index from every object a route looked at to the
//! route ids lets an upstream, service or plugin config change re-resolve exactly the routes that use it. Changed
//! routes are only marked during a burst and resolved once when the burst is published, so a route written before
//! its upstream in the same burst is not reported as broken. Publishing clones the persistent router and consumer
//! index (O(1)); nothing here is ever read by the request path except through the published snapshot.
//!
//! Fail closed: a rejected version of an object never replaces a good one, which keeps serving. A rejected route
//! with no good version still takes the requests it would have matched (its paths and hosts read leniently) and
//! answers them 503, so they cannot fall through to a broader route; an object that routes need and that was
//! rejected makes them answer 503 the same way; a rejected global rule with no good version makes every request
//! answer 503.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use http::HeaderValue;
use sluice_model::plugins::traffic_split::TrafficSplit;
use sluice_model::{Keys, Kind, PluginConf, Plugins, Timeout};
use tokio::sync::watch;
use tracing::warn;

use super::decode::{self, Ahead, Decoded, Refs, RouteDef, ServiceDef, Wanted};
use super::{Compiled, Destination, RawObject, Target, Update};
use crate::error::{Rejected, Unresolved};
use crate::listener::certs::{self, Certificates, Served};
use crate::membership::ClusterSize;
use crate::metrics::Metrics;
use crate::plugins::registry::{self, Built, Enabled, Registry};
use crate::plugins::{Chain, Consumer, Consumers, RouteMeta};
use crate::router::{Entry, Hosts, Router, Rule};
use crate::upstream::health;
use crate::upstream::pool::Pools;
use crate::upstream::{Timeouts, UpstreamRuntime, UpstreamSpec};

#[derive(Debug)]
struct RouteObject {
    revision: i64,
    /// The rule with the route's own hosts.
    rule: Rule,
    refs: Refs,
    inline: Option<Arc<UpstreamRuntime>>,
    timeout: Option<Timeout>,
    name: Option<Arc<str>>,
    /// The first path and host patterns, for metrics labels.
    matched: (Arc<str>, Arc<str>),
    plugins: Vec<Built>,
    /// The runtimes of the upstreams its traffic-split writes inline, by share number.
    split_inline: SplitInline,
    /// `enable_websocket` as written.
    websocket: Option<bool>,
    /// Set when this is the stand-in of a rejected route that never had a good version: it answers 503.
    rejected: bool,
    /// The objects the current entry was resolved from.
    deps: Vec<(Kind, Arc<str>)>,
    /// What the router holds for this route.
    entry: Option<Arc<Entry<Target>>>,
}

#[derive(Debug)]
struct UpstreamObject {
    revision: i64,
    runtime: Arc<UpstreamRuntime>,
}

#[derive(Debug)]
struct ServiceObject {
    revision: i64,
    hosts: Hosts,
    upstream_id: Option<Arc<str>>,
    inline: Option<Arc<UpstreamRuntime>>,
    name: Option<Arc<str>>,
    plugins: Vec<Built>,
    split_inline: SplitInline,
    websocket: Option<bool>,
}

#[derive(Debug)]
struct PluginSetObject {
    revision: i64,
    plugins: Vec<Built>,
    split_inline: SplitInline,
}

/// The runtimes of the upstreams a traffic-split plugin writes inline, by share number (`None` for shares that
/// name an upstream by id, or none).
type SplitInline = Vec<Option<Arc<UpstreamRuntime>>>;

/// The traffic-split configuration among `plugins`, if there is one.
fn traffic_split(plugins: &[Built]) -> Option<&TrafficSplit> {
    plugins.iter().find_map(|b| match &b.source.conf {
        PluginConf::TrafficSplit(split) => Some(split),
        _ => None,
    })
}

#[derive(Debug)]
struct SslObject {
    revision: i64,
    /// The names it is served for, as written.
    names: Vec<String>,
    /// What it serves; `None` for a client certificate or a disabled object, which serve no name.
    config: Option<Served>,
}

#[derive(Debug)]
struct ConsumerObject {
    revision: i64,
    plugins: Vec<Built>,
}

/// Every accepted object, the reverse index and the working router; [`State::publish`] yields snapshots.
pub struct State {
    keys: Keys,
    routes: HashMap<Arc<str>, RouteObject>,
    upstreams: HashMap<Arc<str>, UpstreamObject>,
    services: HashMap<Arc<str>, ServiceObject>,
    plugin_configs: HashMap<Arc<str>, PluginSetObject>,
    consumers: HashMap<Arc<str>, ConsumerObject>,
    /// Ordered by id, so the merged global chain does not depend on the order of writes.
    global_rules: BTreeMap<Arc<str>, PluginSetObject>,
    /// Ordered by id: of two objects claiming one name, the first by id is served.
    ssls: BTreeMap<Arc<str>, SslObject>,
    /// The names of ssl objects rejected with no good version, read leniently: their handshakes are refused.
    broken_snis: HashMap<Arc<str>, Vec<String>>,
    /// The ssl object served when no name matches.
    default_ssl: Option<Arc<str>>,
    certificates_dirty: bool,
    published_certificates: Arc<Certificates>,
    /// Revisions of rejected keys, so a rejection is logged and counted once.
    rejected: HashMap<String, i64>,
    /// Objects rejected with no good version to serve instead; routes needing them answer 503.
    broken: HashSet<(Kind, Arc<str>)>,
    /// Referenced object → ids of the routes resolved through it.
    dependents: HashMap<(Kind, Arc<str>), HashSet<Arc<str>>>,
    /// Routes to resolve at the next publish.
    dirty: HashSet<Arc<str>>,
    /// Whether the global rules changed since the last publish.
    global_dirty: bool,
    router: Router<Target>,
    index: Consumers,
    published_consumers: Arc<Consumers>,
    consumers_dirty: bool,
    global: Result<Chain, Unresolved>,
    /// Plugins the data plane itself adds to the global rules (the access log).
    extra_global: Chain,
    /// Connections to nodes, kept across upstream changes.
    pools: Pools,
    metrics: Metrics,
    registry: Registry,
    enabled: Enabled,
    https_port: Option<u16>,
    /// The number of live data planes, for cluster-wide limits.
    cluster: ClusterSize,
    /// The zone this data plane runs in: its nodes are preferred.
    zone: Option<Arc<str>>,
    /// Opens consumers' sealed credentials.
    credential_keys: super::credentials::CredentialKeys,
    /// Upstream name → the channel feeding its health-check task; dropping the sender ends the task.
    checkers: HashMap<Arc<str>, watch::Sender<Arc<UpstreamRuntime>>>,
    /// The checkers still in their first round (readiness waits for them).
    first_pass: health::FirstPass,
    version: u64,
}

impl State {
    /// An empty state for objects under `keys`.
    pub fn new(keys: Keys) -> State {
        let metrics = Metrics::new();
        State {
            keys,
            routes: HashMap::new(),
            upstreams: HashMap::new(),
            services: HashMap::new(),
            plugin_configs: HashMap::new(),
            consumers: HashMap::new(),
            global_rules: BTreeMap::new(),
            ssls: BTreeMap::new(),
            broken_snis: HashMap::new(),
            default_ssl: None,
            certificates_dirty: false,
            published_certificates: Arc::default(),
            rejected: HashMap::new(),
            broken: HashSet::new(),
            dependents: HashMap::new(),
            dirty: HashSet::new(),
            global_dirty: false,
            router: Router::default(),
            index: Consumers::default(),
            published_consumers: Arc::default(),
            consumers_dirty: false,
            global: Ok(Chain::default()),
            extra_global: Chain::default(),
            pools: Pools::default(),
            registry: Registry::new(Enabled::all(), metrics.clone()),
            enabled: Enabled::all(),
            https_port: None,
            cluster: ClusterSize::default(),
            zone: None,
            credential_keys: Default::default(),
            metrics,
            checkers: HashMap::new(),
            first_pass: health::FirstPass::default(),
            version: 0,
        }
    }

    /// Uses `pools` (which carry the TLS trust settings) for connections to nodes.
    pub fn with_pools(mut self, pools: Pools) -> State {
        self.pools = pools;
        self.rebuild_registry()
    }

    /// Registers upstream and plugin metrics in `metrics` instead of a private registry.
    pub fn with_metrics(mut self, metrics: Metrics) -> State {
        self.metrics = metrics;
        self.rebuild_registry()
    }

    /// Runs only the plugins in `enabled`; objects using others fail closed.
    pub fn with_plugins(mut self, enabled: Enabled) -> State {
        self.enabled = enabled;
        self.rebuild_registry()
    }

    /// Redirects to HTTPS (redirect's `http_to_https`) name `port` when it is not 443.
    pub fn with_https_port(mut self, port: Option<u16>) -> State {
        self.https_port = port;
        self.rebuild_registry()
    }

    /// Divides cluster-wide limits by the number of live data planes `size` counts.
    pub fn with_cluster(mut self, size: ClusterSize) -> State {
        self.cluster = size;
        self.rebuild_registry()
    }

    /// Counts the health checkers' first rounds in `first_pass`.
    pub fn with_first_pass(mut self, first_pass: health::FirstPass) -> State {
        self.first_pass = first_pass;
        self
    }

    /// Opens consumers' sealed credentials with `keys`.
    pub fn with_credential_keys(mut self, keys: super::credentials::CredentialKeys) -> State {
        self.credential_keys = keys;
        self
    }

    /// Prefers upstream nodes in `zone` (set before any upstream is built).
    pub fn with_zone(mut self, zone: Option<&str>) -> State {
        self.zone = zone.filter(|z| !z.is_empty()).map(Arc::from);
        self
    }

    /// A registry with the current settings (called while the state is being set up, before any plugin is built).
    fn rebuild_registry(mut self) -> State {
        self.registry = Registry::new(self.enabled.clone(), self.metrics.clone())
            .with_https_port(self.https_port)
            .with_cluster(self.cluster.clone())
            .with_trust(self.pools.trust().clone())
            .with_policy(self.pools.policy().clone());
        self
    }

    /// Serves ssl object `id` to clients whose server name matches no other (or who send none).
    pub fn with_default_ssl(mut self, id: Option<&str>) -> State {
        self.default_ssl = id.map(Arc::from);
        self.certificates_dirty = true;
        self
    }

    /// Runs `chain` on every request after the global rules' plugins (the access log).
    pub fn with_global(mut self, chain: Chain) -> State {
        self.extra_global = chain;
        self.global_dirty = true;
        self
    }

    /// Applies one change; returns whether anything served may have changed. `on_reject` is called once per
    /// rejected object version.
    pub fn apply(&mut self, update: Update, on_reject: &dyn Fn(Kind)) -> bool {
        match update {
            Update::Reset(objects) => {
                let listed: HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
                let mut changed = false;
                for key in self.keys_held().into_iter().filter(|k| !listed.contains(k.as_str())) {
                    changed |= self.delete(&key);
                }
                self.rejected.retain(|k, _| listed.contains(k.as_str()));
                // Decoding is a large part of a first sync and needs nothing from the state, so it runs on every core.
                let wanted = objects.iter().map(|o| self.wanted(o)).collect();
                let decoded = decode::decode_all(&objects, wanted);
                for (object, ahead) in objects.iter().zip(decoded) {
                    changed |= self.put(object, ahead, on_reject);
                }
                changed
            }
            Update::Put(object) => self.put(&object, None, on_reject),
            Update::Delete(key) => self.delete(&key),
        }
    }

    fn keys_held(&self) -> Vec<String> {
        let mut held = Vec::new();
        let mut add = |kind: Kind, ids: &mut dyn Iterator<Item = &Arc<str>>| {
            held.extend(ids.map(|id| self.keys.key(kind, id)));
        };
        add(Kind::Route, &mut self.routes.keys());
        add(Kind::Upstream, &mut self.upstreams.keys());
        add(Kind::Service, &mut self.services.keys());
        add(Kind::PluginConfig, &mut self.plugin_configs.keys());
        add(Kind::Consumer, &mut self.consumers.keys());
        add(Kind::GlobalRule, &mut self.global_rules.keys());
        add(Kind::Ssl, &mut self.ssls.keys());
        for (kind, id) in &self.broken {
            held.push(self.keys.key(*kind, id));
        }
        held.sort_unstable();
        held.dedup();
        held
    }

    fn revision(&self, kind: Kind, id: &str) -> Option<i64> {
        match kind {
            Kind::Route => self.routes.get(id).map(|o| o.revision),
            Kind::Upstream => self.upstreams.get(id).map(|o| o.revision),
            Kind::Service => self.services.get(id).map(|o| o.revision),
            Kind::PluginConfig => self.plugin_configs.get(id).map(|o| o.revision),
            Kind::Consumer => self.consumers.get(id).map(|o| o.revision),
            Kind::GlobalRule => self.global_rules.get(id).map(|o| o.revision),
            Kind::Ssl => self.ssls.get(id).map(|o| o.revision),
        }
    }

    /// Whether an object of `kind` and `id` is held (a good version, or a stand-in for a rejected route).
    fn holds(&self, kind: Kind, id: &str) -> bool {
        self.revision(kind, id).is_some()
    }

    /// The kind and id of `object` when it is of a served kind and this version was neither accepted nor rejected.
    fn wanted(&self, object: &RawObject) -> Wanted {
        let (kind, id) = self.keys.parse(&object.key)?;
        let id: Arc<str> = id.into();
        if self.rejected.get(&object.key) == Some(&object.revision) || self.revision(kind, &id) == Some(object.revision)
        {
            return None;
        }
        Some((kind, id))
    }

    /// Applies a put; `ahead` is this object's decoding when it was done beforehand.
    fn put(&mut self, object: &RawObject, ahead: Ahead, on_reject: &dyn Fn(Kind)) -> bool {
        // Asked again even when decoded ahead, so a key listed twice is treated as if put twice.
        let Some((kind, id)) = self.wanted(object) else { return false };
        let decoded = ahead.unwrap_or_else(|| decode::decode(kind, &id, &object.value));
        let result = decoded.and_then(|decoded| match decoded {
            Decoded::Route(def) => self.put_route(&id, object.revision, def),
            Decoded::Upstream(spec) => self.put_upstream(&id, object.revision, spec),
            Decoded::Service(def) => self.put_service(&id, object.revision, def),
            Decoded::PluginConfig(plugins) => self.put_plugin_config(&id, object.revision, &plugins),
            Decoded::Consumer(consumer) => self.put_consumer(&id, object.revision, consumer),
            Decoded::GlobalRule(plugins) => self.put_global_rule(&id, object.revision, &plugins),
            Decoded::Ssl(ssl) => self.put_ssl(&id, object.revision, *ssl),
        });
        match result {
            Ok(()) => {
                self.rejected.remove(&object.key);
                if self.broken.remove(&(kind, id.clone())) {
                    self.mark_dependents(kind, &id);
                }
                true
            }
            Err(reason) => {
                on_reject(kind);
                self.rejected.insert(object.key.clone(), object.revision);
                let good =
                    self.holds(kind, &id) && !self.routes.get(&id).is_some_and(|r| kind == Kind::Route && r.rejected);
                if good {
                    warn!(key = %object.key, %reason, "rejected {kind}; its last good version keeps serving");
                    return false;
                }
                warn!(key = %object.key, %reason, "rejected {kind}; it answers 503 until fixed");
                self.reject_without_good_version(kind, &id, &object.value)
            }
        }
    }

    /// Serves a rejected object that has no good version as broken: a route stands in with its matching rule and
    /// answers 503; the routes needing any other kind answer 503.
    fn reject_without_good_version(&mut self, kind: Kind, id: &Arc<str>, value: &[u8]) -> bool {
        if kind == Kind::Route {
            self.remove(kind, id);
            let Some(rule) = decode::fallback_rule(id, value) else {
                warn!(route = %id, "rejected route has no readable paths; it matches nothing");
                return true;
            };
            let stand_in = RouteObject {
                revision: 0,
                rule,
                refs: Refs::default(),
                inline: None,
                timeout: None,
                name: None,
                matched: (Arc::from(""), Arc::from("")),
                plugins: Vec::new(),
                split_inline: Vec::new(),
                websocket: None,
                rejected: true,
                deps: Vec::new(),
                entry: None,
            };
            self.routes.insert(id.clone(), stand_in);
            self.dirty.insert(id.clone());
            return true;
        }
        if kind == Kind::GlobalRule {
            self.global_dirty = true;
        }
        if kind == Kind::Ssl {
            self.broken_snis.insert(id.clone(), decode::fallback_snis(value));
            self.certificates_dirty = true;
        }
        self.broken.insert((kind, id.clone()));
        self.mark_dependents(kind, id);
        true
    }

    fn delete(&mut self, key: &str) -> bool {
        self.rejected.remove(key);
        match self.keys.parse(key) {
            Some((kind, id)) => {
                let was_broken = self.broken.remove(&(kind, Arc::from(id)));
                if was_broken {
                    self.mark_dependents(kind, id);
                    self.global_dirty |= kind == Kind::GlobalRule;
                    self.certificates_dirty |= self.broken_snis.remove(id).is_some();
                }
                self.remove(kind, id) || was_broken
            }
            None => false,
        }
    }

    fn remove(&mut self, kind: Kind, id: &str) -> bool {
        let existed = match kind {
            Kind::Route => match self.routes.remove(id) {
                Some(obj) => {
                    self.unlink(&obj);
                    self.stop_split_upstreams(&obj.split_inline, &[]);
                    let name = format!("route {id}");
                    self.checkers.remove(name.as_str());
                    self.metrics.forget_upstream(&name);
                    true
                }
                None => false,
            },
            Kind::Upstream => {
                let removed = self.upstreams.remove(id).is_some();
                if removed {
                    self.metrics.forget_upstream(id);
                    self.checkers.remove(id);
                }
                removed
            }
            Kind::Service => {
                let name = format!("service {id}");
                self.checkers.remove(name.as_str());
                self.metrics.forget_upstream(&name);
                match self.services.remove(id) {
                    Some(old) => {
                        self.stop_split_upstreams(&old.split_inline, &[]);
                        true
                    }
                    None => false,
                }
            }
            Kind::PluginConfig => match self.plugin_configs.remove(id) {
                Some(old) => {
                    self.stop_split_upstreams(&old.split_inline, &[]);
                    true
                }
                None => false,
            },
            Kind::Consumer => {
                let removed = self.consumers.remove(id).is_some();
                self.consumers_dirty |= self.index.remove(id);
                removed
            }
            Kind::GlobalRule => {
                let removed = self.global_rules.remove(id).is_some();
                self.global_dirty |= removed;
                removed
            }
            Kind::Ssl => {
                let removed = self.ssls.remove(id).is_some();
                self.certificates_dirty |= removed;
                removed
            }
        };
        if existed && kind != Kind::Route {
            self.mark_dependents(kind, id);
        }
        existed
    }

    /// Takes a route out of the router and the reverse index.
    fn unlink(&mut self, obj: &RouteObject) {
        if let Some(entry) = &obj.entry {
            self.router.remove(entry);
        }
        for dep in &obj.deps {
            if let Some(set) = self.dependents.get_mut(dep) {
                set.remove(obj.rule.id());
                if set.is_empty() {
                    self.dependents.remove(dep);
                }
            }
        }
    }

    fn mark_dependents(&mut self, kind: Kind, id: &str) {
        if let Some(set) = self.dependents.get(&(kind, Arc::from(id))) {
            self.dirty.extend(set.iter().cloned());
        }
    }

    /// Builds `plugins` of `owner` (`routes/r1`), keeping the instances of unchanged configurations from `old`.
    fn build(&self, plugins: &Plugins, old: &[Built], owner: &str) -> Result<Vec<Built>, Rejected> {
        self.registry.build_all(plugins, old, owner).map_err(Rejected::Plugin)
    }

    fn put_route(&mut self, id: &Arc<str>, revision: i64, def: RouteDef) -> Result<(), Rejected> {
        let old = self.routes.get(id).filter(|o| !o.rejected);
        let old_plugins = old.map(|o| o.plugins.clone()).unwrap_or_default();
        let old_inline = old.and_then(|o| o.inline.clone());
        let old_split = old.map(|o| o.split_inline.clone()).unwrap_or_default();
        let plugins = self.build(&def.plugins, &old_plugins, &format!("routes/{id}"))?;
        let split_inline = self.split_runtimes(&format!("route {id}"), &plugins, &old_split)?;
        let inline = self.inline_upstream(&format!("route {id}"), def.inline, old_inline)?;
        self.start_split_upstreams(&old_split, &split_inline);
        let obj = RouteObject {
            revision,
            rule: def.rule,
            refs: def.refs,
            inline,
            timeout: def.timeout,
            name: def.name,
            matched: def.matched,
            plugins,
            split_inline,
            websocket: def.websocket,
            rejected: false,
            deps: Vec::new(),
            entry: None,
        };
        // The old version stays routed until the burst is published with the new one resolved.
        let rule_id = obj.rule.id().clone();
        if let Some(old) = self.routes.insert(rule_id.clone(), obj) {
            self.unlink(&old);
        }
        self.dirty.insert(rule_id);
        Ok(())
    }

    /// The runtime of an upstream written inside a route or service (named `name`), with its health checker
    /// started, replaced or stopped to match.
    fn inline_upstream(
        &mut self,
        name: &str,
        spec: Option<UpstreamSpec>,
        old: Option<Arc<UpstreamRuntime>>,
    ) -> Result<Option<Arc<UpstreamRuntime>>, Rejected> {
        let inline = spec
            .map(|spec| runtime_for(name, &spec, old, &self.metrics, &self.pools, self.zone.as_deref()))
            .transpose()?;
        match &inline {
            Some(rt) => self.track_health(rt),
            None => drop(self.checkers.remove(name)),
        }
        Ok(inline)
    }

    /// The runtimes of the upstreams written inline in the traffic-split among `plugins` (of the object called
    /// `owner`), reusing `old`'s while unchanged. Nothing starts here: the caller calls
    /// [`State::start_split_upstreams`] once the whole object is accepted, so a rejected version changes nothing.
    fn split_runtimes(&self, owner: &str, plugins: &[Built], old: &SplitInline) -> Result<SplitInline, Rejected> {
        let Some(split) = traffic_split(plugins) else { return Ok(Vec::new()) };
        let mut runtimes = Vec::new();
        for (n, share) in split.shares().enumerate() {
            let Some(up) = &share.upstream else {
                runtimes.push(None);
                continue;
            };
            let name = format!("{owner} traffic-split {n}");
            let spec = UpstreamSpec::from_model(up).map_err(|e| Rejected::Invalid(format!("{name}: {e}")))?;
            let previous = old.get(n).cloned().flatten();
            runtimes.push(Some(runtime_for(&name, &spec, previous, &self.metrics, &self.pools, self.zone.as_deref())?));
        }
        Ok(runtimes)
    }

    /// Health checks for an accepted version's split upstreams `new`, and an end to those of `old` it dropped.
    fn start_split_upstreams(&mut self, old: &SplitInline, new: &SplitInline) {
        self.stop_split_upstreams(old, new);
        for rt in new.iter().flatten() {
            self.track_health(rt);
        }
    }

    /// Stops the health checks and forgets the metrics of the split upstreams in `old` that `new` no longer has.
    fn stop_split_upstreams(&mut self, old: &[Option<Arc<UpstreamRuntime>>], new: &[Option<Arc<UpstreamRuntime>>]) {
        for (n, rt) in old.iter().enumerate() {
            if let Some(rt) = rt
                && new.get(n).is_none_or(Option::is_none)
            {
                self.checkers.remove(&rt.name);
                self.metrics.forget_upstream(&rt.name);
            }
        }
    }

    fn put_upstream(&mut self, id: &Arc<str>, revision: i64, spec: UpstreamSpec) -> Result<(), Rejected> {
        let old = self.upstreams.get(id).map(|o| o.runtime.clone());
        let unchanged = old.as_ref().is_some_and(|rt| *rt.spec() == spec);
        let runtime = runtime_for(id, &spec, old, &self.metrics, &self.pools, self.zone.as_deref())?;
        self.track_health(&runtime);
        self.upstreams.insert(id.clone(), UpstreamObject { revision, runtime });
        if !unchanged {
            self.mark_dependents(Kind::Upstream, id);
        }
        Ok(())
    }

    fn put_service(&mut self, id: &Arc<str>, revision: i64, def: ServiceDef) -> Result<(), Rejected> {
        let old_plugins = self.services.get(id).map(|o| o.plugins.clone()).unwrap_or_default();
        let plugins = self.build(&def.plugins, &old_plugins, &format!("services/{id}"))?;
        let old_split = self.services.get(id).map(|o| o.split_inline.clone()).unwrap_or_default();
        let split_inline = self.split_runtimes(&format!("service {id}"), &plugins, &old_split)?;
        let old_inline = self.services.get(id).and_then(|o| o.inline.clone());
        let inline = self.inline_upstream(&format!("service {id}"), def.inline, old_inline)?;
        self.start_split_upstreams(&old_split, &split_inline);
        let ServiceDef { hosts, upstream_id, name, websocket, .. } = def;
        let service = ServiceObject { revision, hosts, upstream_id, inline, name, plugins, split_inline, websocket };
        self.services.insert(id.clone(), service);
        self.mark_dependents(Kind::Service, id);
        Ok(())
    }

    fn put_plugin_config(&mut self, id: &Arc<str>, revision: i64, plugins: &Plugins) -> Result<(), Rejected> {
        let old = self.plugin_configs.get(id).map(|o| o.plugins.clone()).unwrap_or_default();
        let old_split = self.plugin_configs.get(id).map(|o| o.split_inline.clone()).unwrap_or_default();
        let plugins = self.build(plugins, &old, &format!("plugin_configs/{id}"))?;
        let split_inline = self.split_runtimes(&format!("plugin_config {id}"), &plugins, &old_split)?;
        self.start_split_upstreams(&old_split, &split_inline);
        self.plugin_configs.insert(id.clone(), PluginSetObject { revision, plugins, split_inline });
        self.mark_dependents(Kind::PluginConfig, id);
        Ok(())
    }

    fn put_global_rule(&mut self, id: &Arc<str>, revision: i64, plugins: &Plugins) -> Result<(), Rejected> {
        let old = self.global_rules.get(id).map(|o| o.plugins.clone()).unwrap_or_default();
        let plugins = self.build(plugins, &old, &format!("global_rules/{id}"))?;
        // The model refuses traffic-split here: global rules are not resolved with a route.
        self.global_rules.insert(id.clone(), PluginSetObject { revision, plugins, split_inline: Vec::new() });
        self.global_dirty = true;
        Ok(())
    }

    fn put_ssl(&mut self, id: &Arc<str>, revision: i64, mut ssl: sluice_model::Ssl) -> Result<(), Rejected> {
        self.credential_keys.open_ssl(&mut ssl).map_err(|e| Rejected::Invalid(e.to_string()))?;
        ssl.validate().map_err(sluice_model::DecodeError::from)?;
        let ssl = &ssl;
        let serves = ssl.kind == sluice_model::ssl::SslType::Server && ssl.status.is_enabled();
        let config = match serves {
            true => Some(Served::Config {
                config: certs::build(ssl).map_err(|e| Rejected::Invalid(e.to_string()))?,
                client_auth: ssl.client.is_some(),
            }),
            false => None,
        };
        let names = ssl.server_names().into_iter().map(str::to_string).collect();
        if self.broken.contains(&(Kind::Ssl, id.clone())) {
            self.broken_snis.remove(id);
        }
        self.ssls.insert(id.clone(), SslObject { revision, names, config });
        self.certificates_dirty = true;
        Ok(())
    }

    /// The certificate table from the current ssl objects.
    fn certificates(&self) -> Certificates {
        let served = |id: &Arc<str>| match self.ssls.get(id) {
            Some(SslObject { config: Some(served), .. }) => Some(served.clone()),
            Some(_) => None,
            None => self.broken_snis.contains_key(id).then_some(Served::Refused),
        };
        let mut table = Certificates::new(self.default_ssl.as_ref().and_then(served));
        for obj in self.ssls.values() {
            if let Some(config) = &obj.config {
                for name in &obj.names {
                    table.insert(name, config.clone());
                }
            }
        }
        for name in self.broken_snis.values().flatten() {
            table.insert(name, Served::Refused);
        }
        table
    }

    fn put_consumer(
        &mut self,
        id: &Arc<str>,
        revision: i64,
        mut consumer: sluice_model::Consumer,
    ) -> Result<(), Rejected> {
        // Opened here, off the request path; the error names the field and the key id, never a value.
        self.credential_keys.open(&mut consumer.plugins.credentials).map_err(|e| Rejected::Invalid(e.to_string()))?;
        let old = self.consumers.get(id).map(|o| o.plugins.clone()).unwrap_or_default();
        let plugins = self.build(&consumer.plugins.plugins, &old, &format!("consumers/{id}"))?;
        let jwt = crate::plugins::jwt_keys(&consumer.plugins.credentials).map_err(Rejected::Invalid)?;
        let runtime = Arc::new(Consumer {
            jwt,
            username: id.clone(),
            username_header: HeaderValue::from_str(id).ok(),
            custom_id: consumer.labels.get("custom_id").and_then(|v| HeaderValue::from_str(v).ok()),
            chain: Chain::new(registry::slots(&plugins)),
            credentials: consumer.plugins.credentials,
        });
        for (plugin, _) in self.index.insert(runtime) {
            warn!(consumer = %id, plugin, "another consumer has the same credential; the first by name is used");
        }
        self.consumers.insert(id.clone(), ConsumerObject { revision, plugins });
        self.consumers_dirty = true;
        Ok(())
    }

    /// Starts, feeds or stops the health-check task of `rt`'s upstream to match its settings.
    fn track_health(&mut self, rt: &Arc<UpstreamRuntime>) {
        let Some(active) = rt.checks().and_then(|c| c.active.clone()) else {
            self.checkers.remove(&rt.name);
            return;
        };
        if let Some(tx) = self.checkers.get(&rt.name).filter(|tx| !tx.is_closed()) {
            if !Arc::ptr_eq(&tx.borrow(), rt) {
                tx.send_replace(rt.clone());
            }
            return;
        }
        // Without a runtime (unit tests of the state) there is nothing to run checks on.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (tx, rx) = watch::channel(rt.clone());
            let first = self.first_pass.begin();
            handle.spawn(health::supervise(rt.name.clone(), active, rx, self.metrics.clone(), first));
            self.checkers.insert(rt.name.clone(), tx);
        }
    }

    /// Resolves the routes changed since the last publish and returns a new snapshot (an O(1) copy of the
    /// persistent router and consumer index).
    pub fn publish(&mut self) -> Compiled {
        let mut dirty = std::mem::take(&mut self.dirty);
        for id in dirty.drain() {
            self.resolve(&id);
        }
        self.dirty = dirty;
        if std::mem::take(&mut self.global_dirty) {
            self.global = match self.broken.iter().find(|(kind, _)| *kind == Kind::GlobalRule) {
                Some((kind, id)) => Err(Unresolved::Rejected { kind: *kind, id: id.clone() }),
                None => {
                    let slots = self.global_rules.values().flat_map(|r| registry::slots(&r.plugins));
                    Ok(Chain::new(slots.chain(self.extra_global.slots().iter().cloned())))
                }
            };
        }
        if std::mem::take(&mut self.consumers_dirty) {
            self.published_consumers = Arc::new(self.index.clone());
        }
        if std::mem::take(&mut self.certificates_dirty) {
            self.published_certificates = Arc::new(self.certificates());
        }
        self.version += 1;
        Compiled {
            router: self.router.clone(),
            global: self.global.clone(),
            consumers: self.published_consumers.clone(),
            certificates: self.published_certificates.clone(),
            version: self.version,
        }
    }

    /// (Re)builds the router entry of one route from the current objects.
    fn resolve(&mut self, id: &Arc<str>) {
        let Some(obj) = self.routes.get(id) else { return };
        let mut deps: Vec<(Kind, Arc<str>)> = Vec::new();
        let mut missing: Option<Unresolved> =
            if obj.rejected { Some(Unresolved::Rejected { kind: Kind::Route, id: id.clone() }) } else { None };
        let broken = &self.broken;
        let mut lookup = |kind: Kind, id: &Arc<str>, found: bool| {
            deps.push((kind, id.clone()));
            if !found && missing.is_none() {
                missing = Some(if broken.contains(&(kind, id.clone())) {
                    Unresolved::Rejected { kind, id: id.clone() }
                } else {
                    Unresolved::Missing { kind, id: id.clone() }
                });
            }
        };
        let service = obj.refs.service_id.as_ref().and_then(|s| {
            let svc = self.services.get(s);
            lookup(Kind::Service, s, svc.is_some());
            svc
        });
        let plugin_config = obj.refs.plugin_config_id.as_ref().and_then(|pc| {
            let found = self.plugin_configs.get(pc);
            lookup(Kind::PluginConfig, pc, found.is_some());
            found
        });
        let mut by_id = |up: &Arc<str>| {
            let found = self.upstreams.get(up).map(|o| o.runtime.clone());
            lookup(Kind::Upstream, up, found.is_some());
            found.ok_or_else(|| Unresolved::Missing { kind: Kind::Upstream, id: up.clone() })
        };
        let upstream = match (&obj.inline, &obj.refs.upstream_id, service) {
            (Some(rt), _, _) => Ok(rt.clone()),
            (None, Some(up), _) => by_id(up),
            (None, None, Some(ServiceObject { inline: Some(rt), .. })) => Ok(rt.clone()),
            (None, None, Some(ServiceObject { upstream_id: Some(up), .. })) => by_id(up),
            _ => Err(Unresolved::NoUpstream),
        };
        // traffic-split's upstreams, from the layer whose traffic-split runs (the same precedence as the merge
        // below); one that is missing makes the route unresolved, as its own upstream would.
        let split = [
            Some((&obj.plugins, &obj.split_inline)),
            plugin_config.map(|pc| (&pc.plugins, &pc.split_inline)),
            service.map(|s| (&s.plugins, &s.split_inline)),
        ]
        .into_iter()
        .flatten()
        .find_map(|(plugins, inline)| traffic_split(plugins).map(|split| (split, inline)));
        let route_timeout = obj.timeout;
        let destination = |upstream: Result<Arc<UpstreamRuntime>, Unresolved>| Destination {
            timeouts: Timeouts::from_model(route_timeout.or(upstream.as_ref().ok().and_then(|u| u.timeout()))),
            upstream,
        };
        let splits: Box<[Destination]> = match split {
            None => Box::default(),
            Some((split, inline)) => split
                .shares()
                .enumerate()
                .map(|(n, share)| {
                    destination(match (inline.get(n).cloned().flatten(), &share.upstream_id) {
                        (Some(rt), _) => Ok(rt),
                        (None, Some(up)) => by_id(&Arc::from(up.as_str())),
                        (None, None) => upstream.clone(),
                    })
                })
                .collect(),
        };
        // A rejected route, or a missing service or plugin config, is reported before what could not be found
        // through it.
        let upstream = match missing {
            Some(m) => Err(m),
            None => upstream,
        };
        if let Err(reason) = &upstream {
            warn!(route = %id, %reason, "route cannot be served; it answers 503 until this is fixed");
        }
        let rule = match service {
            Some(svc) => obj.rule.with_hosts(&svc.hosts),
            None => obj.rule.clone(),
        };
        // Precedence for one plugin: route over plugin config over service.
        let layers = [
            service.map(|s| registry::slots(&s.plugins)).unwrap_or_default(),
            plugin_config.map(|pc| registry::slots(&pc.plugins)).unwrap_or_default(),
            registry::slots(&obj.plugins),
        ];
        // Plugins run when the route is whole: with an upstream, or with none at all (plugins then answer, as
        // redirect or mocking do). A missing or rejected part means none of them run: the route answers 503.
        let whole = matches!(upstream, Ok(_) | Err(Unresolved::NoUpstream));
        let chain = if whole { Chain::merge(layers.iter().map(Vec::as_slice)) } else { Chain::default() };
        let meta = Arc::new(RouteMeta {
            id: id.clone(),
            name: obj.name.clone(),
            service_id: obj.refs.service_id.clone(),
            service_name: service.and_then(|s| s.name.clone()),
            matched_uri: obj.matched.0.clone(),
            matched_host: obj.matched.1.clone(),
        });
        let Destination { upstream, timeouts } = destination(upstream);
        // As APISIX: the route's own setting, else its service's.
        let websocket = obj.websocket.or(service.and_then(|s| s.websocket)).unwrap_or(false);
        let target =
            Target { route_id: id.clone(), meta, upstream, timeouts, warned: false.into(), chain, websocket, splits };
        let entry = Arc::new(Entry { rule, value: target });

        let Some(obj) = self.routes.get_mut(id) else { return };
        let old_deps = std::mem::replace(&mut obj.deps, deps.clone());
        if let Some(old) = obj.entry.replace(entry.clone()) {
            self.router.remove(&old);
        }
        self.router.insert(&entry);
        for dep in old_deps {
            if let Some(set) = self.dependents.get_mut(&dep) {
                set.remove(id);
                if set.is_empty() {
                    self.dependents.remove(&dep);
                }
            }
        }
        for dep in deps {
            self.dependents.entry(dep).or_default().insert(id.clone());
        }
    }

    /// The number of routes held: accepted (enabled or not) and stand-ins for rejected ones.
    pub fn routes(&self) -> usize {
        self.routes.len()
    }

    /// The number of routes waiting to be resolved at the next publish.
    pub fn pending(&self) -> usize {
        self.dirty.len()
    }

    /// The number of accepted upstreams.
    pub fn upstreams(&self) -> usize {
        self.upstreams.len()
    }

    /// The number of accepted consumers.
    pub fn consumers(&self) -> usize {
        self.consumers.len()
    }
}

/// Feeds arbitrary bytes through route compilation: as a route (decode, checks, rule, plugins, a one-route state
/// published and one request routed through it), as a consumer, a global rule and as a `vars` list. Never panics
/// on any input; the fuzz target and the corpus replay test call it.
pub fn exercise(data: &[u8]) {
    let mut state = State::new(Keys::default());
    let object = |key: &str, value: &[u8], revision| RawObject { key: key.into(), value: value.to_vec(), revision };
    let objects = vec![
        object("/sluice/routes/fuzz", data, 1),
        object("/sluice/upstreams/u", br#"{"nodes":{"127.0.0.1:1":1}}"#, 2),
        object("/sluice/plugin_configs/fuzz", data, 3),
        object("/sluice/consumers/fuzz", data, 4),
        object("/sluice/global_rules/fuzz", data, 5),
        object("/sluice/services/fuzz", data, 6),
    ];
    state.apply(Update::Reset(objects), &|_| {});
    let compiled = state.publish();
    let headers = http::HeaderMap::new();
    for (host, path) in [("example.com", "/"), ("a.example.com", "/user/1/x"), ("x", "/hello")] {
        let info = crate::router::RequestInfo {
            method: &http::Method::GET,
            host,
            path,
            query: Some("a=1&b"),
            headers: &headers,
            remote_addr: std::net::IpAddr::from([10, 0, 0, 1]),
            tls: false,
        };
        std::hint::black_box(compiled.router.find(&info));
    }
    if let Ok(list) = serde_json::from_slice::<Vec<serde_json::Value>>(data) {
        let _ = crate::router::Vars::compile(&list);
    }
    if let Ok(map) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data) {
        let _ = sluice_model::Plugins::from_json(map);
    }
}

/// The runtime for `spec`: the old one while the definition is unchanged (keeping the balancer position).
fn runtime_for(
    name: &str,
    spec: &UpstreamSpec,
    old: Option<Arc<UpstreamRuntime>>,
    metrics: &Metrics,
    pools: &Pools,
    zone: Option<&str>,
) -> Result<Arc<UpstreamRuntime>, Rejected> {
    match old {
        Some(rt) if rt.spec() == spec => Ok(rt),
        old => {
            let runtime = UpstreamRuntime::new(name.into(), spec.clone(), metrics, pools, zone)?;
            if let Some(old) = old {
                runtime.inherit_health(&old);
            }
            Ok(Arc::new(runtime))
        }
    }
}
