//! The sync loop's runtime failure reasons, with a real etcd: `Conflict` when a key we want holds an object
//! someone else wrote, and `SyncFailed` (Programmed=False) while etcd is down, then recovery.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sluice_controller::conditions;
use sluice_controller::metrics::Metrics;
use sluice_controller::pipeline::{Pipeline, Reporter, Source};
use sluice_controller::resources::Resources;
use sluice_controller::sink::EtcdSink;
use sluice_controller::translate::{Options, StatusUpdate};
use sluice_model::Keys;
use sluice_testkit::{Etcd, eventually};
use tokio::sync::Notify;

/// A set of objects the test can change.
#[derive(Clone)]
struct Shared(Arc<Mutex<Resources>>);

impl Source for Shared {
    fn snapshot(&mut self) -> Resources {
        self.0.lock().unwrap().clone()
    }
}

/// Keeps the conditions of the last report of the ApiRoute.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(String, String, String)>>>);

impl Reporter for Capture {
    async fn report(&mut self, statuses: &[StatusUpdate], synced: Result<(), &str>) {
        let route = statuses.iter().find(|s| s.object.kind == "ApiRoute").expect("the ApiRoute reports");
        let conds = conditions::conditions(route, synced, &[]);
        *self.0.lock().unwrap() = conds.into_iter().map(|c| (c.type_, c.status, c.reason)).collect();
    }
}

impl Capture {
    fn has(&self, kind: &str, status: &str, reason: &str) -> bool {
        self.0.lock().unwrap().iter().any(|(k, s, r)| k == kind && s == status && r == reason)
    }
}

fn resources() -> Resources {
    let mut r = Resources::default();
    r.ingress_classes.push(
        serde_json::from_value(
            json!({"metadata": {"name": "sluice"}, "spec": {"controller": "sluice.dev/ingress-controller"}}),
        )
        .unwrap(),
    );
    r.services.push(
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"ports": [{"port": 80}]}}),
        )
        .unwrap(),
    );
    r.api_routes.push(
        serde_json::from_value(json!({"metadata": {"name": "store", "namespace": "shop"},
            "spec": {"ingressClassName": "sluice", "http": [{"name": "main", "match": {"paths": ["/store/*"]},
                "backends": [{"serviceName": "web", "servicePort": 80}]}]}}))
        .unwrap(),
    );
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_and_sync_failure_are_reported() {
    let mut etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    // Someone else's object sits where the ApiRoute's route goes.
    let key = "/sluice/routes/ar.shop.store.main";
    client.put(key, json!({"uri": "/theirs", "upstream_id": "x"}).to_string(), None).await.unwrap();

    let capture = Capture::default();
    let source = Shared(Arc::new(Mutex::new(resources())));
    let trigger = Arc::new(Notify::new());
    let pipeline = Pipeline {
        source: source.clone(),
        reporter: capture.clone(),
        sink: EtcdSink::new(etcd.client().await.unwrap(), Keys::default()),
        options: Options::default(),
        keys: Keys::default(),
        metrics: Metrics::new(),
        trigger: trigger.clone(),
        ready: Arc::new(AtomicBool::new(false)),
        debounce: Duration::from_millis(10),
        sealer: Default::default(),
    };
    tokio::spawn(pipeline.run());
    let wait = Duration::from_secs(10);
    assert!(eventually(wait, || async { capture.has("Accepted", "False", "Conflict") }).await, "Conflict reported");
    let theirs = client.get(key, None).await.unwrap();
    assert!(String::from_utf8_lossy(theirs.kvs()[0].value()).contains("/theirs"), "their object was left alone");

    // The other object goes away: the route is written and the conflict clears.
    client.delete(key, None).await.unwrap();
    trigger.notify_one();
    assert!(eventually(wait, || async { capture.has("Accepted", "True", "Accepted") }).await, "conflict cleared");

    // etcd down while the ApiRoute changes: the sync fails and says so; once etcd is back, Programmed returns to
    // True. (A sync with nothing to change needs no etcd at all.)
    etcd.kill();
    source.0.lock().unwrap().api_routes[0].spec.http[0].matches.paths = vec!["/shop/*".into()];
    trigger.notify_one();
    let failed = eventually(Duration::from_secs(30), || async { capture.has("Programmed", "False", "SyncFailed") });
    assert!(failed.await, "SyncFailed reported");
    etcd.resume().await.unwrap();
    let back = eventually(Duration::from_secs(30), || async { capture.has("Programmed", "True", "Programmed") });
    assert!(back.await, "Programmed again after etcd returned");
}
