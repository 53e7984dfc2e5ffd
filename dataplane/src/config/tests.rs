//! The incremental state: runtimes kept, references resolved and re-resolved, rejections alone and counted once.

use std::cell::Cell;

use http::{HeaderMap, Method};
use serde_json::{Value, json};

use super::*;
use crate::error::Unresolved;
use crate::router::RequestInfo;
use crate::upstream::UpstreamRuntime;

fn raw(key: &str, value: Value, revision: i64) -> RawObject {
    RawObject { key: key.into(), value: value.to_string().into_bytes(), revision }
}

struct Harness {
    state: State,
    rejected: Cell<u32>,
    revision: i64,
}

impl Harness {
    fn new() -> Harness {
        Harness { state: State::new(Keys::default()), rejected: Cell::new(0), revision: 1 }
    }

    fn put(&mut self, key: &str, value: Value) -> bool {
        self.revision += 1;
        let on_reject = |_: Kind| self.rejected.set(self.rejected.get() + 1);
        self.state.apply(Update::Put(raw(&format!("/sluice/{key}"), value, self.revision)), &on_reject)
    }

    fn delete(&mut self, key: &str) {
        self.state.apply(Update::Delete(format!("/sluice/{key}")), &|_| {});
    }

    /// Publishes and routes `GET host path`: the route id and its upstream (or the reason it has none).
    fn route(&mut self, host: &str, path: &str) -> Option<(String, Result<String, Unresolved>)> {
        let compiled = self.state.publish();
        let headers = HeaderMap::new();
        let info = RequestInfo {
            method: &Method::GET,
            host,
            path,
            query: None,
            headers: &headers,
            remote_addr: "127.0.0.1".parse().unwrap(),
            tls: false,
        };
        let entry = compiled.router.find(&info)?;
        let t = &entry.value;
        Some((t.route_id.to_string(), t.upstream.as_ref().map(|u| u.name.to_string()).map_err(Clone::clone)))
    }

    /// Publishes and routes `GET x path`: the matched entry.
    fn entry(&mut self, path: &str) -> Arc<crate::router::Entry<Target>> {
        let compiled = self.state.publish();
        let headers = HeaderMap::new();
        let info = RequestInfo {
            method: &Method::GET,
            host: "x",
            path,
            query: None,
            headers: &headers,
            remote_addr: "127.0.0.1".parse().unwrap(),
            tls: false,
        };
        compiled.router.find(&info).unwrap().clone()
    }

    fn runtime(&mut self, path: &str) -> Arc<UpstreamRuntime> {
        self.entry(path).value.upstream.as_ref().unwrap().clone()
    }
}

fn missing(kind: Kind, id: &str) -> Unresolved {
    Unresolved::Missing { kind, id: id.into() }
}

#[test]
fn keeps_runtimes_of_unchanged_upstreams() {
    let mut h = Harness::new();
    h.put("upstreams/u", json!({"nodes": {"127.0.0.1:1": 1}}));
    h.put("routes/r", json!({"uri": "/", "upstream_id": "u"}));
    let first = h.runtime("/");
    h.put("routes/r2", json!({"uri": "/x", "upstream_id": "u"}));
    assert!(Arc::ptr_eq(&first, &h.runtime("/")), "unchanged upstream keeps its balancer");
    h.put("upstreams/u", json!({"nodes": {"127.0.0.1:1": 1}}));
    assert!(Arc::ptr_eq(&first, &h.runtime("/")), "a new revision with the same definition too");
    h.put("upstreams/u", json!({"nodes": {"127.0.0.1:2": 1}}));
    let third = h.runtime("/");
    assert!(!Arc::ptr_eq(&first, &third), "changed upstream gets a new runtime");
    assert!(Arc::ptr_eq(&third, &h.runtime("/x")), "and every route using it follows");
    // An inline upstream keeps its runtime when only the route's matching changes.
    h.put("routes/i", json!({"uri": "/i", "upstream": {"nodes": {"127.0.0.1:3": 1}}}));
    let inline = h.runtime("/i");
    h.put("routes/i", json!({"uri": "/i", "methods": ["GET"], "upstream": {"nodes": {"127.0.0.1:3": 1}}}));
    assert!(Arc::ptr_eq(&inline, &h.runtime("/i")));
    assert_eq!(h.rejected.get(), 0);
}

#[test]
fn rejects_bad_objects_once_and_alone() {
    let mut state = State::new(Keys::default());
    let rejected = Cell::new(0);
    let on_reject = |_: Kind| rejected.set(rejected.get() + 1);
    let bad = RawObject { key: "/sluice/routes/bad".into(), value: b"{not json".to_vec(), revision: 2 };
    let objects = vec![
        bad.clone(),
        raw("/sluice/routes/plug", json!({"uri": "/p", "plugins": {"nope": {}}, "upstream_id": "u"}), 3),
        raw("/sluice/routes/ok", json!({"uri": "/ok", "upstream_id": "u"}), 4),
        raw("/sluice/upstreams/u", json!({"scheme": "tls", "nodes": {}}), 5),
        raw("/sluice/routes/param", json!({"uri": "/u/:id", "upstream_id": "u"}), 6),
        raw("/sluice/ssls/s", json!({}), 7),
        raw("/elsewhere/routes/x", json!({}), 8),
        raw("/sluice/routes/regex", json!({"uri": "/r", "vars": [["arg_a", "~~", "("]], "upstream_id": "u"}), 9),
        raw("/sluice/routes/expr", json!({"uri": "/e", "vars": [["arg_a", "=~", "x"]], "upstream_id": "u"}), 10),
        raw("/sluice/routes/both", json!({"uri": "/b", "upstream_id": "u", "upstream": {"nodes": {}}}), 11),
        raw("/sluice/services/s", json!({"plugins": {"nope": {}}}), 12),
        raw("/sluice/plugin_configs/pc", json!({"plugins": {"nope": {}}}), 13),
    ];
    state.apply(Update::Reset(objects.clone()), &on_reject);
    assert_eq!(rejected.get(), 9);
    // ok and param, and stand-ins answering 503 for the rejected routes whose paths could be read.
    assert_eq!(state.routes(), 6);
    // A re-list with the same revisions does not count again; a new revision does.
    state.apply(Update::Reset(objects), &on_reject);
    assert_eq!(rejected.get(), 9);
    state.apply(Update::Put(RawObject { revision: 99, ..bad }), &on_reject);
    assert_eq!(rejected.get(), 10);
    state.apply(Update::Delete("/sluice/routes/ok".into()), &on_reject);
    assert_eq!(state.routes(), 5);
    // A re-list without a key deletes it.
    state.apply(Update::Reset(vec![]), &on_reject);
    assert_eq!(state.routes(), 0);
}

#[test]
fn unresolved_references_answer_until_they_resolve() {
    let mut h = Harness::new();
    h.put("routes/r", json!({"uri": "/r", "upstream_id": "u"}));
    assert_eq!(h.route("x", "/r"), Some(("r".into(), Err(missing(Kind::Upstream, "u")))));
    h.put("upstreams/u", json!({"nodes": {"127.0.0.1:1": 1}}));
    assert_eq!(h.route("x", "/r"), Some(("r".into(), Ok("u".into()))));
    h.delete("upstreams/u");
    assert_eq!(h.route("x", "/r"), Some(("r".into(), Err(missing(Kind::Upstream, "u")))));

    h.put("routes/p", json!({"uri": "/p", "upstream_id": "u", "plugin_config_id": "pc"}));
    h.put("upstreams/u", json!({"nodes": {"127.0.0.1:1": 1}}));
    assert_eq!(h.route("x", "/p"), Some(("p".into(), Err(missing(Kind::PluginConfig, "pc")))));
    h.put("plugin_configs/pc", json!({"plugins": {}}));
    assert_eq!(h.route("x", "/p"), Some(("p".into(), Ok("u".into()))));
    // A plugin config that becomes invalid is rejected, and its last good version keeps serving.
    h.put("plugin_configs/pc", json!({"plugins": {"nope": {}}}));
    assert_eq!(h.route("x", "/p"), Some(("p".into(), Ok("u".into()))));
    // One that never had a good version makes its routes answer 503, naming it as rejected.
    h.put("routes/q", json!({"uri": "/q", "upstream_id": "u", "plugin_config_id": "bad"}));
    h.put("plugin_configs/bad", json!({"plugins": {"nope": {}}}));
    let rejected = |kind, id: &str| Unresolved::Rejected { kind, id: id.into() };
    assert_eq!(h.route("x", "/q"), Some(("q".into(), Err(rejected(Kind::PluginConfig, "bad")))));
    h.put("plugin_configs/bad", json!({"plugins": {}}));
    assert_eq!(h.route("x", "/q"), Some(("q".into(), Ok("u".into()))));
}

#[test]
fn a_rejected_route_keeps_its_last_good_version_or_answers_503_in_its_place() {
    let mut h = Harness::new();
    h.put("upstreams/u", json!({"nodes": {"127.0.0.1:1": 1}}));
    h.put("routes/any", json!({"uri": "/*", "upstream_id": "u"}));
    h.put("routes/r", json!({"uri": "/r", "upstream_id": "u"}));
    h.put("routes/r", json!({"uri": "/r", "upstream_id": "u", "plugins": {"nope": {}}}));
    assert_eq!(h.route("x", "/r"), Some(("r".into(), Ok("u".into()))), "the last good version serves");
    assert_eq!(h.rejected.get(), 1);
    // A new route that is rejected takes its requests and answers 503: they do not reach the catch-all.
    let rejected = Err(Unresolved::Rejected { kind: Kind::Route, id: "new".into() });
    h.put("routes/new", json!({"uri": "/new", "upstream_id": "u", "plugins": {"key-auth": {"header": 1}}}));
    assert_eq!(h.route("x", "/new"), Some(("new".into(), rejected.clone())));
    // Conditions that cannot be compiled are dropped: the 503 covers more, never less.
    h.put("routes/new", json!({"uri": "/new", "methods": ["GET"], "vars": [["x"]], "upstream_id": "u"}));
    assert_eq!(h.route("x", "/new"), Some(("new".into(), rejected)));
    h.put("routes/new", json!({"uri": "/new", "upstream_id": "u"}));
    assert_eq!(h.route("x", "/new"), Some(("new".into(), Ok("u".into()))), "fixed");
    // Bytes that say nothing about paths cannot stand in for anything.
    h.put("routes/junk", json!({"uri": 5}));
    assert_eq!(h.route("x", "/junk"), Some(("any".into(), Ok("u".into()))));
    h.delete("routes/new");
    assert_eq!(h.route("x", "/new"), Some(("any".into(), Ok("u".into()))));
}

impl Harness {
    /// Publishes and routes `GET x path`: the upstream names of its traffic-split shares.
    fn splits(&mut self, path: &str) -> Vec<Result<String, Unresolved>> {
        let entry = self.entry(path);
        entry
            .value
            .splits
            .iter()
            .map(|d| d.upstream.as_ref().map(|u| u.name.to_string()).map_err(Clone::clone))
            .collect()
    }
}

#[test]
fn traffic_split_upstreams_resolve_with_the_route() {
    let mut h = Harness::new();
    h.put("upstreams/u", json!({"nodes": {"127.0.0.1:1": 1}}));
    let split = |canary: &str| {
        json!({"traffic-split": {"rules": [{"weighted_upstreams": [
            {"upstream_id": canary, "weight": 1},
            {"upstream": {"nodes": {"127.0.0.1:2": 1}}, "weight": 1},
            {"weight": 1}]}]}})
    };
    h.put("routes/r", json!({"uri": "/r", "upstream_id": "u", "plugins": split("canary")}));
    // A share naming a missing upstream makes the whole route unresolved, as its own upstream would.
    assert_eq!(h.route("x", "/r").unwrap().1, Err(missing(Kind::Upstream, "canary")));
    h.put("upstreams/canary", json!({"nodes": {"127.0.0.1:3": 1}}));
    assert_eq!(h.route("x", "/r").unwrap().1, Ok("u".into()));
    let names = |v: Vec<Result<String, Unresolved>>| v.into_iter().map(Result::unwrap).collect::<Vec<_>>();
    assert_eq!(names(h.splits("/r")), ["canary", "route r traffic-split 1", "u"]);
    let inline = |h: &mut Harness| h.entry("/r").value.splits[1].upstream.as_ref().unwrap().clone();
    let before = inline(&mut h);
    h.put("upstreams/canary", json!({"nodes": {"127.0.0.1:4": 1}}));
    assert!(Arc::ptr_eq(&before, &inline(&mut h)), "an unchanged inline share keeps its runtime");

    // From a plugin config: the route's own traffic-split wins over it, as in the merge.
    h.put("plugin_configs/pc", json!({"plugins": split("u")}));
    h.put("routes/p", json!({"uri": "/p", "upstream_id": "canary", "plugin_config_id": "pc"}));
    assert_eq!(names(h.splits("/p")), ["u", "plugin_config pc traffic-split 1", "canary"]);
    h.put(
        "routes/p",
        json!({"uri": "/p", "upstream_id": "canary", "plugin_config_id": "pc", "plugins": split("canary")}),
    );
    assert_eq!(names(h.splits("/p")), ["canary", "route p traffic-split 1", "canary"]);

    // Not on consumers or global rules: they are not resolved with a route.
    let rejected = h.rejected.get();
    h.put("global_rules/g", json!({"plugins": split("u")}));
    h.put("consumers/c", json!({"username": "c", "plugins": split("u")}));
    assert_eq!(h.rejected.get(), rejected + 2);
}

#[test]
fn routes_inherit_upstream_and_hosts_from_their_service() {
    let mut h = Harness::new();
    h.put("upstreams/u1", json!({"nodes": {"127.0.0.1:1": 1}}));
    h.put("upstreams/u2", json!({"nodes": {"127.0.0.1:2": 1}}));
    h.put("routes/r", json!({"uri": "/r", "service_id": "s"}));
    assert_eq!(h.route("x", "/r"), Some(("r".into(), Err(missing(Kind::Service, "s")))));
    h.put("services/s", json!({"upstream_id": "u1", "hosts": ["svc.com"]}));
    assert_eq!(h.route("x", "/r"), None, "the service's hosts apply");
    assert_eq!(h.route("svc.com", "/r"), Some(("r".into(), Ok("u1".into()))));
    // The route's own upstream_id wins over the service's.
    h.put("routes/own", json!({"uri": "/own", "service_id": "s", "upstream_id": "u2", "host": "own.com"}));
    assert_eq!(h.route("own.com", "/own"), Some(("own".into(), Ok("u2".into()))));
    assert_eq!(h.route("svc.com", "/own"), None, "the route's own hosts win");
    // Changing the service re-resolves its routes.
    h.put("services/s", json!({"upstream": {"nodes": {"127.0.0.1:3": 1}}}));
    assert_eq!(h.route("x", "/r"), Some(("r".into(), Ok("service s".into()))));
    // Changing an upstream the service points at re-resolves routes through the service.
    h.put("services/s", json!({"upstream_id": "u1"}));
    h.put("upstreams/u1", json!({"nodes": {"127.0.0.1:9": 1}}));
    assert_eq!(h.runtime("/r").nodes[0].authority.as_str(), "127.0.0.1:9");
    h.put("services/empty", json!({}));
    h.put("routes/none", json!({"uri": "/none", "service_id": "empty"}));
    assert_eq!(h.route("x", "/none"), Some(("none".into(), Err(Unresolved::NoUpstream))));
    h.delete("services/s");
    assert_eq!(h.route("x", "/r"), Some(("r".into(), Err(missing(Kind::Service, "s")))));
}

#[test]
fn an_upstream_change_touches_only_its_routes() {
    let mut h = Harness::new();
    h.put("upstreams/a", json!({"nodes": {"127.0.0.1:1": 1}}));
    h.put("upstreams/b", json!({"nodes": {"127.0.0.1:2": 1}}));
    for i in 0..50 {
        h.put(&format!("routes/a{i}"), json!({"uri": format!("/a{i}"), "upstream_id": "a"}));
        h.put(&format!("routes/b{i}"), json!({"uri": format!("/b{i}"), "upstream_id": "b"}));
    }
    h.state.publish();
    h.put("upstreams/a", json!({"nodes": {"127.0.0.1:3": 1}}));
    assert_eq!(h.state.pending(), 50, "only the routes of upstream a are re-resolved");
    assert_eq!(h.runtime("/a7").nodes[0].authority.as_str(), "127.0.0.1:3");
}

/// Objects of every served kind, some of them rejected, more than one decoding thread takes.
fn listing() -> Vec<RawObject> {
    let mut objects = vec![
        raw("/sluice/upstreams/u", json!({"nodes": {"127.0.0.1:1": 1}}), 2),
        raw("/sluice/upstreams/grpc", json!({"scheme": "tls", "nodes": {}}), 3),
        raw("/sluice/services/s", json!({"upstream_id": "u", "hosts": ["svc.com"]}), 4),
        raw("/sluice/services/plug", json!({"plugins": {"nope": {}}}), 5),
        raw("/sluice/plugin_configs/pc", json!({"plugins": {}}), 6),
        raw("/sluice/ssls/broken", json!({}), 7),
    ];
    for i in 0..1_500_i64 {
        let value = match i % 7 {
            0 => json!({"uri": format!("/s/{i}"), "service_id": "s"}),
            1 => json!({"uri": format!("/i/{i}"), "upstream": {"nodes": {"127.0.0.1:2": 1}}}),
            2 => json!({"uri": format!("/pc/{i}"), "upstream_id": "u", "plugin_config_id": "pc"}),
            3 if i % 3 == 0 => json!({"uri": format!("/bad/{i}"), "upstream_id": "u", "plugins": {"nope": {}}}),
            4 if i % 3 == 0 => json!({"uri": 42}),
            _ => json!({"uri": format!("/u/{i}"), "upstream_id": "u"}),
        };
        objects.push(raw(&format!("/sluice/routes/r{i}"), value, 10 + i));
    }
    objects
}

/// What every listed route path answers: its route id and upstream (or why there is none).
fn answers(state: &mut State) -> Vec<Option<(String, Result<String, Unresolved>)>> {
    let compiled = state.publish();
    let headers = HeaderMap::new();
    let requests = (0..1_500).flat_map(|i| {
        [("x", format!("/s/{i}")), ("svc.com", format!("/s/{i}")), ("x", format!("/i/{i}")), ("x", format!("/pc/{i}"))]
            .into_iter()
            .chain([("x", format!("/bad/{i}")), ("x", format!("/u/{i}"))])
    });
    requests
        .map(|(host, path)| {
            let info = RequestInfo {
                method: &Method::GET,
                host,
                path: &path,
                query: None,
                headers: &headers,
                remote_addr: "127.0.0.1".parse().unwrap(),
                tls: false,
            };
            let t = &compiled.router.find(&info)?.value;
            Some((t.route_id.to_string(), t.upstream.as_ref().map(|u| u.name.to_string()).map_err(Clone::clone)))
        })
        .collect()
}

#[test]
fn a_listing_decoded_ahead_serves_what_puts_one_by_one_serve() {
    let (listed, one_by_one) = (Cell::new(0), Cell::new(0));
    let mut reset = State::new(Keys::default());
    assert!(reset.apply(Update::Reset(listing()), &|_| listed.set(listed.get() + 1)));
    let mut puts = State::new(Keys::default());
    for object in listing() {
        puts.apply(Update::Put(object), &|_| one_by_one.set(one_by_one.get() + 1));
    }
    assert_eq!((listed.get(), reset.routes(), reset.upstreams()), (one_by_one.get(), puts.routes(), puts.upstreams()));
    assert!(listed.get() > 100, "the listing has rejections spread over every share");
    assert_eq!(answers(&mut reset), answers(&mut puts));

    // The same listing again changes nothing and counts no rejection twice.
    assert!(!reset.apply(Update::Reset(listing()), &|_| listed.set(listed.get() + 1)));
    assert_eq!(listed.get(), one_by_one.get());

    // A key listed twice is applied as two puts in order: the later, bad version is counted and the good one
    // before it keeps serving.
    let good = raw("/sluice/routes/twice", json!({"uri": "/twice", "upstream_id": "u"}), 90_000);
    let bad = raw("/sluice/routes/twice", json!({"uri": 1}), 90_001);
    let mut twice = listing();
    twice.extend([good, bad]);
    reset.apply(Update::Reset(twice), &|_| listed.set(listed.get() + 1));
    assert_eq!(listed.get(), one_by_one.get() + 1);
    assert_eq!(reset.routes(), puts.routes() + 1);
}

fn shared() -> Arc<crate::Shared> {
    Arc::new(crate::Shared {
        config: arc_swap::ArcSwap::from_pointee(Compiled::default()),
        ready: AtomicBool::new(false),
        metrics: crate::metrics::Metrics::new(),
        pools: Default::default(),
        limits: Default::default(),
        snapshot_revision: Default::default(),
        draining: AtomicBool::new(false),
        config_alive: AtomicBool::new(true),
        unbound_proxies: Default::default(),
        first_pass: Default::default(),
        loaded_at_ms: Default::default(),
        settled: AtomicBool::new(false),
        started: std::time::Instant::now(),
        admin_token_file: None,
    })
}

/// Waits up to 5 s for `done`.
async fn until(done: impl Fn() -> bool) -> bool {
    for _ in 0..500 {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    done()
}

/// The nice values of this process's threads called `name`, from `/proc` (Linux).
fn niceness_of_threads_named(name: &str) -> Vec<i64> {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    let read = |task: &std::path::Path, file: &str| std::fs::read_to_string(task.join(file)).unwrap_or_default();
    tasks
        .flatten()
        .map(|task| task.path())
        .filter(|task| read(task, "comm").trim_end() == name)
        // Fields after the parenthesised name start at the third; nice is the 19th.
        .filter_map(|task| read(&task, "stat").rsplit_once(')')?.1.split_whitespace().nth(16)?.parse().ok())
        .collect()
}

#[tokio::test]
async fn the_config_thread_publishes_starts_health_checks_and_ends_with_its_source() {
    let shared = shared();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let running = tokio::spawn(run(
        Keys::default(),
        rx,
        shared.clone(),
        super::Settings {
            plugins: Enabled::all(),
            global: Chain::default(),
            default_ssl: None,
            https_port: None,
            cluster: crate::membership::ClusterSize::default(),
            zone: None,
            credential_keys: Default::default(),
        },
    ));
    let node = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let checks =
        json!({"active": {"http_path": "/status", "healthy": {"interval": 60}, "unhealthy": {"interval": 60}}});
    let upstream = json!({"checks": checks, "nodes": {node.local_addr().unwrap().to_string(): 1}});
    let objects = vec![
        raw("/sluice/upstreams/u", upstream, 2),
        raw("/sluice/routes/r", json!({"uri": "/", "upstream_id": "u"}), 3),
    ];
    tx.send(Update::Reset(objects)).await.unwrap();
    assert!(until(|| shared.is_ready()).await, "the first listing is published");
    assert_eq!(shared.config.load().router.len(), 1);
    if cfg!(target_os = "linux") {
        let nice = niceness_of_threads_named("sluice-config");
        assert!(matches!(nice[..], [n] if n >= 9), "one config thread, below normal priority: {nice:?}");
    }
    // The health check was spawned from the config thread onto this runtime, and probes the node.
    let probed = tokio::time::timeout(std::time::Duration::from_secs(5), node.accept()).await;
    assert!(probed.is_ok_and(|accepted| accepted.is_ok()), "the node is probed");

    for i in 0..20 {
        let route = raw(&format!("/sluice/routes/r{i}"), json!({"uri": format!("/{i}"), "upstream_id": "u"}), 10 + i);
        tx.send(Update::Put(route)).await.unwrap();
    }
    assert!(until(|| shared.config.load().router.len() == 21).await, "the burst is published");

    drop(tx);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), running).await;
    assert!(ended.is_ok_and(|joined| joined.is_ok()), "the thread ends once the source is gone");
}

#[test]
fn consumers_are_indexed_by_credential() {
    let mut h = Harness::new();
    h.put("consumers/jack", json!({"username": "jack", "plugins": {"key-auth": {"key": "k1"}}}));
    let compiled = h.state.publish();
    assert_eq!(h.rejected.get(), 0);
    assert_eq!(compiled.consumers.len(), 1);
    assert_eq!(compiled.consumers.find("key-auth", "k1").map(|c| &*c.username), Some("jack"));
    h.put("consumers/jack", json!({"username": "jack", "plugins": {"key-auth": {"key": "k2"}}}));
    let compiled = h.state.publish();
    assert!(compiled.consumers.find("key-auth", "k1").is_none());
    h.put("consumers/other", json!({"username": "mismatch", "plugins": {}}));
    assert_eq!(h.rejected.get(), 1, "the user name must be the key's");
}

#[test]
fn a_route_with_an_unknown_plugin_stands_in_before_a_catch_all() {
    let mut h = Harness::new();
    h.put("upstreams/u", json!({"nodes": {"127.0.0.1:1": 1}}));
    h.put("routes/catch-all", json!({"uri": "/*", "upstream_id": "u"}));
    assert!(h.route("x", "/unknown").is_some());
    h.put("routes/unknown", json!({"uri": "/unknown", "upstream_id": "u", "plugins": {"no-such-plugin": {}}}));
    let rejected = Err(Unresolved::Rejected { kind: Kind::Route, id: "unknown".into() });
    assert_eq!(h.route("x", "/unknown"), Some(("unknown".into(), rejected)));
}

/// What the published certificate table serves for `sni`: "config", "refused" or "none".
fn served(compiled: &Compiled, sni: Option<&str>) -> &'static str {
    use crate::listener::certs::Served;
    match compiled.certificates.select(sni) {
        None => "none",
        Some(Served::Refused) => "refused",
        Some(Served::Config { .. }) => "config",
    }
}

#[test]
fn ssls_serve_their_names_and_fail_closed() {
    let cert = rcgen::generate_simple_self_signed(vec!["a.example.test".to_string()]).unwrap();
    let (pem, key) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let mut state = State::new(Keys::default()).with_default_ssl(Some("default"));
    let rejected = Cell::new(0);
    let on_reject = |_: Kind| rejected.set(rejected.get() + 1);
    let ssl = |snis: Value| json!({"cert": pem, "key": key, "snis": snis});
    state.apply(
        Update::Reset(vec![
            raw("/sluice/ssls/a", ssl(json!(["a.example.test", "*.wild.test"])), 2),
            raw("/sluice/ssls/client", json!({"type": "client", "cert": pem, "key": key}), 3),
            raw("/sluice/ssls/off", json!({"cert": pem, "key": key, "snis": ["off.test"], "status": 0}), 4),
        ]),
        &on_reject,
    );
    let compiled = state.publish();
    assert_eq!(served(&compiled, Some("a.example.test")), "config");
    assert_eq!(served(&compiled, Some("x.wild.test")), "config");
    assert_eq!(served(&compiled, Some("off.test")), "none");
    // The default names an ssl that does not exist (yet): nothing is served without a match.
    assert_eq!(served(&compiled, None), "none");
    assert_eq!(rejected.get(), 0);

    // A bad new version keeps the good one; a bad object with no good version refuses its names, even where a
    // wildcard would match.
    let mismatched = rcgen::generate_simple_self_signed(vec!["b.test".to_string()]).unwrap();
    let wrong_key = json!({"cert": pem, "key": mismatched.signing_key.serialize_pem(), "snis": ["a.example.test"]});
    state.apply(Update::Put(raw("/sluice/ssls/a", wrong_key, 5)), &on_reject);
    state.apply(Update::Put(raw("/sluice/ssls/b", json!({"cert": "junk", "snis": ["y.wild.test"]}), 6)), &on_reject);
    state.apply(Update::Put(raw("/sluice/ssls/default", ssl(json!(["default.test"])), 7)), &on_reject);
    let compiled = state.publish();
    assert_eq!(rejected.get(), 2);
    assert_eq!(served(&compiled, Some("a.example.test")), "config");
    assert_eq!(served(&compiled, Some("y.wild.test")), "refused");
    assert_eq!(served(&compiled, Some("z.wild.test")), "config");
    assert_eq!(served(&compiled, Some("unknown.test")), "config");
    assert_eq!(served(&compiled, None), "config");

    // Fixed, and deleted.
    state.apply(Update::Put(raw("/sluice/ssls/b", ssl(json!(["y.wild.test"])), 8)), &on_reject);
    assert_eq!(served(&state.publish(), Some("y.wild.test")), "config");
    state.apply(Update::Delete("/sluice/ssls/a".into()), &on_reject);
    state.apply(Update::Delete("/sluice/ssls/default".into()), &on_reject);
    let compiled = state.publish();
    assert_eq!(served(&compiled, Some("a.example.test")), "none");
    assert_eq!(served(&compiled, Some("y.wild.test")), "config");
    assert_eq!(served(&compiled, None), "none");
}
