//! Kubernetes-API mode against a mocked API server (tower-test): objects listed, then added, changed and
//! deleted through watch events, must reach a real etcd; every request the controller sends is recorded and
//! checked, including the server-side-apply status patch.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{Value, json};
use sluice_controller::kubernetes;
use sluice_controller::metrics::Metrics;
use sluice_controller::pipeline::Pipeline;
use sluice_controller::sink::EtcdSink;
use sluice_controller::translate::{Options, Publish};
use sluice_model::Keys;
use sluice_testkit::{Etcd, eventually};
use tokio::sync::{Notify, mpsc};

type Body = BoxBody<Bytes, Infallible>;

/// One request the controller sent.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    body: String,
}

/// Serves list and watch requests from fixed objects and pushable events; records every request.
#[derive(Clone, Default)]
struct FakeApi {
    lists: Arc<Mutex<HashMap<String, Vec<Value>>>>,
    watchers: Arc<Mutex<HashMap<String, Vec<mpsc::UnboundedSender<Bytes>>>>>,
    leases: Arc<Mutex<HashMap<String, Value>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeApi {
    fn serve(&self, mut handle: tower_test::mock::Handle<Request<kube::client::Body>, Response<Body>>) {
        let api = self.clone();
        tokio::spawn(async move {
            while let Some((req, reply)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let body = body.collect_bytes().await.unwrap_or_default();
                let seen = Seen {
                    method: parts.method.clone(),
                    path: parts.uri.path().to_string(),
                    query: parts.uri.query().unwrap_or("").to_string(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                api.seen.lock().unwrap().push(seen.clone());
                reply.send_response(api.answer(&seen));
            }
        });
    }

    fn answer(&self, req: &Seen) -> Response<Body> {
        let json = |status: StatusCode, v: Value| {
            let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
            *r.status_mut() = status;
            r
        };
        match req.method {
            Method::GET if req.query.contains("watch=true") => {
                let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
                self.watchers.lock().unwrap().entry(req.path.clone()).or_default().push(tx);
                let (tx2, rx2) = mpsc::unbounded_channel::<Result<http_body::Frame<Bytes>, Infallible>>();
                tokio::spawn(async move {
                    while let Some(chunk) = rx.recv().await {
                        if tx2.send(Ok(http_body::Frame::data(chunk))).is_err() {
                            break;
                        }
                    }
                });
                let body = StreamBody::new(futures::stream::unfold(rx2, |mut rx| async move {
                    rx.recv().await.map(|item| (item, rx))
                }));
                Response::new(body.boxed())
            }
            Method::GET if req.path.contains("/leases/") => match self.leases.lock().unwrap().get(&req.path).cloned() {
                Some(lease) => json(StatusCode::OK, lease),
                None => json(
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
            },
            Method::POST | Method::PUT => {
                let mut obj: Value = serde_json::from_str(&req.body).unwrap_or(json!({}));
                obj["metadata"]["resourceVersion"] = json!(format!("{}", self.seen.lock().unwrap().len()));
                if req.path.contains("/leases") {
                    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
                    let path =
                        if req.method == Method::POST { format!("{}/{name}", req.path) } else { req.path.clone() };
                    self.leases.lock().unwrap().insert(path, obj.clone());
                }
                json(if req.method == Method::POST { StatusCode::CREATED } else { StatusCode::OK }, obj)
            }
            Method::GET => {
                let items = self.lists.lock().unwrap().get(&req.path).cloned().unwrap_or_default();
                json(
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            Method::PATCH => {
                // Answer like the API server: the whole object with the applied status.
                let patch: Value = serde_json::from_str(&req.body).unwrap_or(json!({}));
                let name = req.path.rsplit('/').nth(1).unwrap_or("").to_string();
                let collection = req.path.split("/namespaces/").next().unwrap_or("").to_string()
                    + "/"
                    + req.path.rsplit('/').nth(2).unwrap_or("");
                let lists = self.lists.lock().unwrap();
                let mut obj = lists
                    .iter()
                    .filter(|(path, _)| collection.ends_with(path.rsplit('/').next().unwrap_or("")))
                    .flat_map(|(_, items)| items)
                    .find(|o| o["metadata"]["name"] == name.as_str())
                    .cloned()
                    .unwrap_or_else(|| json!({"metadata": {"name": name}}));
                obj["status"] = patch["status"].clone();
                json(StatusCode::OK, obj)
            }
            _ => json(StatusCode::METHOD_NOT_ALLOWED, json!({"kind": "Status", "status": "Failure", "code": 405})),
        }
    }

    fn list(&self, path: &str, items: Vec<Value>) {
        self.lists.lock().unwrap().insert(path.to_string(), items);
    }

    /// Sends a watch event to every open watch on `path`.
    fn push(&self, path: &str, kind: &str, object: Value) {
        let line = Bytes::from(json!({"type": kind, "object": object}).to_string() + "\n");
        for tx in self.watchers.lock().unwrap().get(path).into_iter().flatten() {
            let _ = tx.send(line.clone());
        }
    }

    fn watching(&self, path: &str) -> bool {
        self.watchers.lock().unwrap().get(path).is_some_and(|w| !w.is_empty())
    }
}

const INGRESSES: &str = "/apis/networking.k8s.io/v1/ingresses";
const CLASSES: &str = "/apis/networking.k8s.io/v1/ingressclasses";
const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const API_ROUTES: &str = "/apis/sluice.dev/v1alpha1/apiroutes";
const OTHER_WATCHED: [&str; 5] = [
    "/api/v1/secrets",
    "/api/v1/pods",
    "/apis/sluice.dev/v1alpha1/upstreams",
    "/apis/sluice.dev/v1alpha1/pluginconfigs",
    "/apis/sluice.dev/v1alpha1/consumers",
];
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/sluice/leases";

fn ingress(path: &str, rv: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web", "namespace": "default", "resourceVersion": rv},
        "spec": {"ingressClassName": "sluice", "rules": [{"http": {"paths": [
            {"path": path, "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}})
}

fn slice(addresses: &[&str], rv: &str) -> Value {
    let endpoints: Vec<Value> =
        addresses.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}})).collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default", "resourceVersion": rv,
            "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": endpoints})
}

/// The RBAC verb of a request.
fn verb(s: &Seen) -> &'static str {
    let named = rbac_named(&s.path);
    match s.method {
        Method::GET if s.query.contains("watch=true") => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::PATCH => "patch",
        Method::POST => "create",
        Method::PUT => "update",
        _ => "other",
    }
}

/// Whether a path names one object (rather than a collection).
fn rbac_named(path: &str) -> bool {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let rest = if parts[0] == "api" { &parts[2..] } else { &parts[3..] };
    let rest = if rest.first() == Some(&"namespaces") { &rest[2..] } else { rest };
    rest.len() >= 2
}

fn assert_allowed(seen: &[Seen]) {
    for s in seen {
        let (group, resource) = rbac_resource(&s.path);
        let verb = verb(s);
        let allowed = kubernetes::ACCESS
            .iter()
            .any(|a| a.api_group == group && a.resource == resource && a.verbs.contains(&verb));
        assert!(allowed, "{verb} {group}/{resource} is not in kubernetes::ACCESS");
    }
}

/// The API group and resource (with subresource) a request path addresses.
fn rbac_resource(path: &str) -> (String, String) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
        _ => panic!("unexpected path {path}"),
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] => rest,
        rest => rest,
    };
    let resource = match rest {
        [resource] | [resource, _] => resource.to_string(),
        [resource, _, sub] => format!("{resource}/{sub}"),
        _ => panic!("unexpected path {path}"),
    };
    (group, resource)
}

async fn etcd_json(client: &mut etcd_client::Client, key: &str) -> Option<Value> {
    let resp = client.get(key, None).await.ok()?;
    resp.kvs().first().and_then(|kv| serde_json::from_slice(kv.value()).ok())
}

#[tokio::test]
async fn api_objects_reach_etcd_and_status_is_applied() {
    let etcd = Etcd::start().await.unwrap();
    let mut etcd_client = etcd.client().await.unwrap();
    let api = FakeApi::default();
    api.list(CLASSES, vec![json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "sluice", "resourceVersion": "1"}, "spec": {"controller": "sluice.dev/ingress-controller"}})]);
    api.list(
        SERVICES,
        vec![json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "resourceVersion": "1"},
        "spec": {"ports": [{"name": "http", "port": 80}]}})],
    );
    api.list(SLICES, vec![slice(&["10.0.0.1"], "1")]);
    api.list(INGRESSES, vec![ingress("/a", "1")]);
    api.list(
        API_ROUTES,
        vec![json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "ApiRoute",
        "metadata": {"name": "shop", "namespace": "default", "resourceVersion": "1", "generation": 3},
        "spec": {"ingressClassName": "sluice", "http": [
            {"name": "ok", "match": {"paths": ["/shop/*"], "methods": ["GET"]},
             "backends": [{"serviceName": "web", "servicePort": 80}]},
            {"name": "ghost", "match": {"paths": ["/ghost"]},
             "backends": [{"serviceName": "ghost", "servicePort": "http"}]}]}})],
    );

    let (service, handle) = tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
    api.serve(handle);
    let client = kube::Client::new(service, "default");
    let trigger = Arc::new(Notify::new());
    let (source, reporter) = kubernetes::start(client, trigger.clone(), "test-0".into()).await;
    let keys = Keys::default();
    let sink = EtcdSink::new(etcd.client().await.unwrap(), keys.clone());
    let options = Options { publish: Publish::Addresses(vec!["192.0.2.10".into()]), ..Options::default() };
    let pipeline = Pipeline {
        source,
        reporter,
        sink,
        options,
        keys,
        metrics: Metrics::new(),
        trigger,
        ready: Arc::new(AtomicBool::new(false)),
        debounce: Duration::from_millis(20),
        sealer: Default::default(),
    };
    tokio::spawn(pipeline.run());

    let route = "/sluice/routes/ing.default.web.0.0";
    let upstream = "/sluice/upstreams/svc.default.web.80";
    let wait = Duration::from_secs(10);
    assert!(
        eventually(wait, || {
            let mut c = etcd_client.clone();
            async move { etcd_json(&mut c, route).await.is_some() }
        })
        .await,
        "listed Ingress reached etcd"
    );
    let up = etcd_json(&mut etcd_client, upstream).await.unwrap();
    assert_eq!(up["nodes"], json!([{"host": "10.0.0.1", "port": 8080, "weight": 100}]));

    // The status patch: server-side apply, our field manager, only the status we own.
    let patched = eventually(wait, || {
        let seen = api.seen.clone();
        async move { seen.lock().unwrap().iter().any(|s| s.method == Method::PATCH && s.path.contains("/ingresses/")) }
    })
    .await;
    assert!(patched, "status was patched");
    let patch = api
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.method == Method::PATCH && s.path.contains("/ingresses/"))
        .cloned()
        .unwrap();
    assert_eq!(patch.path, "/apis/networking.k8s.io/v1/namespaces/default/ingresses/web/status");
    assert!(
        patch.query.contains("fieldManager=sluice-controller") && patch.query.contains("force=true"),
        "{}",
        patch.query
    );
    let body: Value = serde_json::from_str(&patch.body).unwrap();
    assert_eq!(body["status"], json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}));

    // The ApiRoute: both rules written; the missing Service is reported as a condition and an Event.
    let ar_route = "/sluice/routes/ar.default.shop.ok";
    assert!(etcd_json(&mut etcd_client, ar_route).await.is_some_and(|r| r["methods"] == json!(["GET"])));
    assert!(etcd_json(&mut etcd_client, "/sluice/routes/ar.default.shop.ghost").await.is_some());
    let ar_status = "/apis/sluice.dev/v1alpha1/namespaces/default/apiroutes/shop/status";
    let reported = eventually(wait, || {
        let seen = api.seen.clone();
        async move {
            seen.lock().unwrap().iter().any(|s| s.path == ar_status)
                && seen.lock().unwrap().iter().any(|s| s.path == EVENTS)
        }
    })
    .await;
    assert!(reported, "ApiRoute status and Event sent");
    let patch_ar = api.seen.lock().unwrap().iter().find(|s| s.path == ar_status).cloned().unwrap();
    let body: Value = serde_json::from_str(&patch_ar.body).unwrap();
    let conditions = body["status"]["conditions"].as_array().unwrap();
    assert_eq!(conditions[0]["type"], "Accepted");
    assert_eq!(conditions[0]["status"], "False");
    assert_eq!(conditions[0]["reason"], "RefNotFound");
    assert!(conditions[0]["message"].as_str().unwrap().contains("Service default/ghost not found"));
    assert_eq!(conditions[0]["observedGeneration"], 3);
    assert_eq!(conditions[1]["type"], "Programmed");
    assert_eq!(conditions[1]["status"], "True");
    assert_eq!(body["status"]["observedGeneration"], 3);
    let event = api.seen.lock().unwrap().iter().find(|s| s.path == EVENTS).cloned().unwrap();
    let event: Value = serde_json::from_str(&event.body).unwrap();
    assert_eq!(event["reason"], "RefNotFound");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["regarding"]["name"], "shop");

    // Changes arrive through watches.
    for path in [INGRESSES, SLICES] {
        assert!(
            eventually(wait, || {
                let api = api.clone();
                async move { api.watching(path) }
            })
            .await,
            "watching {path}"
        );
    }
    api.push(SLICES, "MODIFIED", slice(&["10.0.0.1", "10.0.0.2"], "2"));
    let two_nodes = eventually(wait, || {
        let mut c = etcd_client.clone();
        async move { etcd_json(&mut c, upstream).await.is_some_and(|u| u["nodes"].as_array().map(Vec::len) == Some(2)) }
    })
    .await;
    assert!(two_nodes, "EndpointSlice change reached the upstream");

    // As the API server would, the changed Ingress carries the status we applied.
    let mut changed = ingress("/b", "3");
    changed["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}});
    api.push(INGRESSES, "MODIFIED", changed);
    let moved = eventually(wait, || {
        let mut c = etcd_client.clone();
        async move { etcd_json(&mut c, route).await.is_some_and(|r| r["uris"] == json!(["/b", "/b/*"])) }
    })
    .await;
    assert!(moved, "Ingress change reached the route");

    api.push(INGRESSES, "DELETED", ingress("/b", "4"));
    let gone = eventually(wait, || {
        let mut c = etcd_client.clone();
        async move { etcd_json(&mut c, route).await.is_none() }
    })
    .await;
    assert!(gone, "deleted Ingress removed its route");
    assert!(etcd_json(&mut etcd_client, upstream).await.is_some(), "the upstream stays while the ApiRoute uses it");

    // Every request was a list or watch of a watched kind, or the one status patch.
    let seen = api.seen.lock().unwrap().clone();
    for s in &seen {
        let watched = [INGRESSES, CLASSES, SERVICES, SLICES, API_ROUTES].contains(&s.path.as_str())
            || OTHER_WATCHED.contains(&s.path.as_str());
        match s.method {
            Method::GET => assert!(watched, "unexpected GET {}", s.path),
            Method::PATCH => assert!(s.path == patch.path || s.path == ar_status, "unexpected PATCH {}", s.path),
            Method::POST => assert_eq!(s.path, EVENTS),
            _ => panic!("unexpected request {} {}", s.method, s.path),
        }
    }
    for path in [INGRESSES, CLASSES, SERVICES, SLICES, API_ROUTES].into_iter().chain(OTHER_WATCHED) {
        assert!(seen.iter().any(|s| s.path == path && !s.query.contains("watch=true")), "listed {path}");
    }
    // Every request is covered by the declared RBAC rules (which the Helm chart grants).
    assert_allowed(&seen);
    let ingress_patches = seen.iter().filter(|s| s.path == patch.path).count();
    assert_eq!(ingress_patches, 1, "Ingress status patched once, not on every sync");
    assert_eq!(seen.iter().filter(|s| s.path == ar_status).count(), 1, "ApiRoute status patched once");
}

/// Leader election: the first replica creates the Lease and renews it with updates; a second replica stands by
/// while the Lease is fresh. Every request is one the RBAC rules allow.
#[tokio::test]
async fn leader_election_with_a_lease() {
    use sluice_controller::leader::Elector;
    let api = FakeApi::default();
    let (service, handle) = tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
    api.serve(handle);
    let client = kube::Client::new(service, "default");
    let first = Elector::new(client.clone(), "sluice", "sluice-controller", "replica-a", Duration::from_secs(3));
    tokio::time::timeout(Duration::from_secs(5), first.acquire()).await.expect("the first replica leads at once");
    let keeping = tokio::spawn(async move { first.keep().await });
    let renewed = eventually(Duration::from_secs(5), || {
        let seen = api.seen.clone();
        async move { seen.lock().unwrap().iter().any(|s| s.method == Method::PUT) }
    })
    .await;
    assert!(renewed, "the leader renews its Lease");
    let second = Elector::new(client, "sluice", "sluice-controller", "replica-b", Duration::from_secs(3));
    let waited = tokio::time::timeout(Duration::from_millis(2500), second.acquire()).await;
    assert!(waited.is_err(), "a second replica does not lead while the Lease is renewed");
    keeping.abort();

    let seen = api.seen.lock().unwrap().clone();
    let lease_path = format!("{LEASES}/sluice-controller");
    assert!(seen.iter().any(|s| s.method == Method::POST && s.path == LEASES), "the Lease was created");
    let put = seen.iter().find(|s| s.method == Method::PUT).unwrap();
    assert_eq!(put.path, lease_path);
    let lease: Value = serde_json::from_str(&put.body).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 3);
    assert_allowed(&seen);
}
