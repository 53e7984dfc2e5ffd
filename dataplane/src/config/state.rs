//! The configuration state, changed one object at a time.
//!
//! Each object is decoded and checked once per etcd revision. A route is resolved (service, plugin config and
//! upstream looked up, its hosts inherited) into a router entry; a reverse index from every object a route looked
//! at to the route ids lets an upstream, service or plugin config change re-resolve exactly the routes that use
//! it. Changed routes are only marked during a burst and resolved once when the burst is published, so a route
//! written before its upstream in the same burst is not reported as broken. Publishing clones the persistent
//! router (O(1)); nothing here is ever read by the request path except through the published snapshot.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sluice_model::{Keys, Kind, Timeout};
use tracing::warn;

use super::decode::{self, Ahead, Decoded, Refs, RouteDef, ServiceDef, Wanted};
use super::upstream::{Timeouts, UpstreamRuntime, UpstreamSpec};
use super::{Compiled, RawObject, Rejected, Target, Unresolved, Update};
use crate::health;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::pool::Pools;
use crate::router::{Entry, Hosts, Router, Rule};
use tokio::sync::watch;

#[derive(Debug)]
struct RouteObject {
    revision: i64,
    /// The rule with the route's own hosts.
    rule: Rule,
    refs: Refs,
    inline: Option<Arc<UpstreamRuntime>>,
    timeout: Option<Timeout>,
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
}

/// Every accepted object, the reverse index and the working router; [`State::publish`] yields snapshots.
pub struct State {
    keys: Keys,
    routes: HashMap<Arc<str>, RouteObject>,
    upstreams: HashMap<Arc<str>, UpstreamObject>,
    services: HashMap<Arc<str>, ServiceObject>,
    plugin_configs: HashMap<Arc<str>, i64>,
    /// Revisions of rejected keys, so a rejection is logged and counted once.
    rejected: HashMap<String, i64>,
    /// Referenced object → ids of the routes resolved through it.
    dependents: HashMap<(Kind, Arc<str>), HashSet<Arc<str>>>,
    /// Routes to resolve at the next publish.
    dirty: HashSet<Arc<str>>,
    router: Router<Target>,
    /// Connections to nodes, kept across upstream changes.
    pools: Pools,
    metrics: Metrics,
    /// Upstream name → the channel feeding its health-check task; dropping the sender ends the task.
    checkers: HashMap<Arc<str>, watch::Sender<Arc<UpstreamRuntime>>>,
    version: u64,
}

impl State {
    /// An empty state for objects under `keys`.
    pub fn new(keys: Keys) -> State {
        State {
            keys,
            routes: HashMap::new(),
            upstreams: HashMap::new(),
            services: HashMap::new(),
            plugin_configs: HashMap::new(),
            rejected: HashMap::new(),
            dependents: HashMap::new(),
            dirty: HashSet::new(),
            router: Router::default(),
            pools: Pools::default(),
            metrics: Metrics::new(),
            checkers: HashMap::new(),
            version: 0,
        }
    }

    /// Uses `pools` (which carry the TLS trust settings) for connections to nodes.
    pub fn with_pools(mut self, pools: Pools) -> State {
        self.pools = pools;
        self
    }

    /// Registers upstream metrics in `metrics` instead of a private registry.
    pub fn with_metrics(mut self, metrics: Metrics) -> State {
        self.metrics = metrics;
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
        held
    }

    fn revision(&self, kind: Kind, id: &str) -> Option<i64> {
        match kind {
            Kind::Route => self.routes.get(id).map(|o| o.revision),
            Kind::Upstream => self.upstreams.get(id).map(|o| o.revision),
            Kind::Service => self.services.get(id).map(|o| o.revision),
            Kind::PluginConfig => self.plugin_configs.get(id).copied(),
            _ => None,
        }
    }

    /// The kind and id of `object` when it is of a served kind and this version was neither accepted nor rejected.
    fn wanted(&self, object: &RawObject) -> Wanted {
        let (kind, id) = self.keys.parse(&object.key)?;
        if !matches!(kind, Kind::Route | Kind::Upstream | Kind::Service | Kind::PluginConfig) {
            // Other kinds are not served yet; they are ignored without noise.
            return None;
        }
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
            Decoded::PluginConfig => self.put_plugin_config(&id, object.revision),
        });
        match result {
            Ok(()) => {
                self.rejected.remove(&object.key);
                true
            }
            Err(reason) => {
                warn!(key = %object.key, %reason, "rejected {kind}; it is not served");
                on_reject(kind);
                self.rejected.insert(object.key.clone(), object.revision);
                // A previously good version is dropped: a rejected object is served as if absent.
                self.remove(kind, &id)
            }
        }
    }

    fn delete(&mut self, key: &str) -> bool {
        self.rejected.remove(key);
        match self.keys.parse(key) {
            Some((kind, id)) => self.remove(kind, id),
            None => false,
        }
    }

    fn remove(&mut self, kind: Kind, id: &str) -> bool {
        let existed = match kind {
            Kind::Route => match self.routes.remove(id) {
                Some(obj) => {
                    self.unlink(&obj);
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
                self.services.remove(id).is_some()
            }
            Kind::PluginConfig => self.plugin_configs.remove(id).is_some(),
            _ => false,
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

    fn put_route(&mut self, id: &Arc<str>, revision: i64, def: RouteDef) -> Result<(), Rejected> {
        let old_inline = self.routes.get(id).and_then(|o| o.inline.clone());
        let inline = self.inline_upstream(&format!("route {id}"), def.inline, old_inline)?;
        let obj = RouteObject {
            revision,
            rule: def.rule,
            refs: def.refs,
            inline,
            timeout: def.timeout,
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
        let inline = spec.map(|spec| runtime_for(name, &spec, old, &self.metrics, &self.pools)).transpose()?;
        match &inline {
            Some(rt) => self.track_health(rt),
            None => drop(self.checkers.remove(name)),
        }
        Ok(inline)
    }

    fn put_upstream(&mut self, id: &Arc<str>, revision: i64, spec: UpstreamSpec) -> Result<(), Rejected> {
        let old = self.upstreams.get(id).map(|o| o.runtime.clone());
        let unchanged = old.as_ref().is_some_and(|rt| *rt.spec() == spec);
        let runtime = runtime_for(id, &spec, old, &self.metrics, &self.pools)?;
        self.track_health(&runtime);
        self.upstreams.insert(id.clone(), UpstreamObject { revision, runtime });
        if !unchanged {
            self.mark_dependents(Kind::Upstream, id);
        }
        Ok(())
    }

    fn put_service(&mut self, id: &Arc<str>, revision: i64, def: ServiceDef) -> Result<(), Rejected> {
        let old_inline = self.services.get(id).and_then(|o| o.inline.clone());
        let inline = self.inline_upstream(&format!("service {id}"), def.inline, old_inline)?;
        let ServiceDef { hosts, upstream_id, .. } = def;
        self.services.insert(id.clone(), ServiceObject { revision, hosts, upstream_id, inline });
        self.mark_dependents(Kind::Service, id);
        Ok(())
    }

    fn put_plugin_config(&mut self, id: &Arc<str>, revision: i64) -> Result<(), Rejected> {
        self.plugin_configs.insert(id.clone(), revision);
        self.mark_dependents(Kind::PluginConfig, id);
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
            handle.spawn(health::run(active, rx, self.metrics.clone()));
            self.checkers.insert(rt.name.clone(), tx);
        }
    }

    /// Resolves the routes changed since the last publish and returns a new snapshot (an O(1) copy of the
    /// persistent router).
    pub fn publish(&mut self) -> Compiled {
        let mut dirty = std::mem::take(&mut self.dirty);
        for id in dirty.drain() {
            self.resolve(&id);
        }
        self.dirty = dirty;
        self.version += 1;
        Compiled { router: self.router.clone(), version: self.version }
    }

    /// (Re)builds the router entry of one route from the current objects.
    fn resolve(&mut self, id: &Arc<str>) {
        let Some(obj) = self.routes.get(id) else { return };
        let mut deps: Vec<(Kind, Arc<str>)> = Vec::new();
        let mut missing: Option<Unresolved> = None;
        let mut lookup = |kind: Kind, id: &Arc<str>, found: bool| {
            deps.push((kind, id.clone()));
            if !found && missing.is_none() {
                missing = Some(Unresolved::Missing { kind, id: id.clone() });
            }
        };
        let service = obj.refs.service_id.as_ref().and_then(|s| {
            let svc = self.services.get(s);
            lookup(Kind::Service, s, svc.is_some());
            svc
        });
        if let Some(pc) = &obj.refs.plugin_config_id {
            lookup(Kind::PluginConfig, pc, self.plugin_configs.contains_key(pc));
        }
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
        // A missing service or plugin config is reported before what could not be found through it.
        let upstream = match missing {
            Some(m) => Err(m),
            None => upstream,
        };
        if let Err(reason) = &upstream {
            warn!(route = %id, %reason, "route cannot be served; it answers 503 until the reference resolves");
        }
        let rule = match service {
            Some(svc) => obj.rule.with_hosts(&svc.hosts),
            None => obj.rule.clone(),
        };
        let timeouts = Timeouts::from_model(obj.timeout.or(upstream.as_ref().ok().and_then(|u| u.timeout())));
        let target =
            Target { route_id: id.clone(), upstream, timeouts, warned: false.into(), pipeline: Pipeline::default() };
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

    /// The number of accepted routes (enabled or not).
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
}

/// Feeds arbitrary bytes through route compilation: as a route (decode, checks, rule, a one-route state published
/// and one request routed through it) and as a `vars` list. Never panics on any input; the fuzz target and the
/// corpus replay test call it.
pub fn exercise(data: &[u8]) {
    let mut state = State::new(Keys::default());
    let object = RawObject { key: "/sluice/routes/fuzz".into(), value: data.to_vec(), revision: 1 };
    let upstream =
        RawObject { key: "/sluice/upstreams/u".into(), value: br#"{"nodes":{"127.0.0.1:1":1}}"#.to_vec(), revision: 2 };
    state.apply(Update::Reset(vec![object, upstream]), &|_| {});
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
        };
        std::hint::black_box(compiled.router.find(&info));
    }
    if let Ok(list) = serde_json::from_slice::<Vec<serde_json::Value>>(data) {
        let _ = crate::router::Vars::compile(&list);
    }
}

/// The runtime for `spec`: the old one while the definition is unchanged (keeping the balancer position).
fn runtime_for(
    name: &str,
    spec: &UpstreamSpec,
    old: Option<Arc<UpstreamRuntime>>,
    metrics: &Metrics,
    pools: &Pools,
) -> Result<Arc<UpstreamRuntime>, Rejected> {
    match old {
        Some(rt) if rt.spec() == spec => Ok(rt),
        old => {
            let runtime = UpstreamRuntime::new(name.into(), spec.clone(), metrics, pools)?;
            if let Some(old) = old {
                runtime.inherit_health(&old);
            }
            Ok(Arc::new(runtime))
        }
    }
}
