//! The data plane follows etcd: changes without restart, etcd outages, compaction, bad objects, readiness.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;
use sluice_testkit::{Child, EchoServer, Etcd, eventually, free_port, get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_follow_etcd_changes_without_restart() {
    let etcd = Etcd::start().await.unwrap();
    let mut c = etcd.client().await.unwrap();
    let (a, b) = (EchoServer::start("a").await.unwrap(), EchoServer::start("b").await.unwrap());
    let dp = ready_dataplane(&etcd.endpoint()).await;
    let addr = dp.http_addr();
    assert_eq!(get(addr, "x", "/r").await.unwrap().status, 404, "nothing configured yet");

    // Added.
    put(&mut c, "/sluice/upstreams/u", json!({"nodes": {a.addr().to_string(): 1}})).await;
    put(&mut c, "/sluice/routes/r", json!({"uri": "/r", "upstream_id": "u"})).await;
    assert!(wait_served(addr, "x", "/r", Some("a")).await);

    // Upstream changed.
    put(&mut c, "/sluice/upstreams/u", json!({"nodes": {b.addr().to_string(): 1}})).await;
    assert!(wait_served(addr, "x", "/r", Some("b")).await);

    // Route changed: new path, old one gone.
    put(&mut c, "/sluice/routes/r", json!({"uri": "/moved/*", "upstream_id": "u"})).await;
    assert!(wait_served(addr, "x", "/moved/here", Some("b")).await);
    assert_eq!(get(addr, "x", "/r").await.unwrap().status, 404);

    // Inline upstream.
    put(&mut c, "/sluice/routes/i", json!({"uri": "/inline", "upstream": {"nodes": {a.addr().to_string(): 1}}})).await;
    assert!(wait_served(addr, "x", "/inline", Some("a")).await);

    // Deleted.
    delete(&mut c, "/sluice/routes/r").await;
    assert!(wait_served(addr, "x", "/moved/here", None).await);
    assert!(metric(dp.admin_addr(), "sluice_config_compiles_total").await.unwrap() >= 2.0);
    assert_eq!(metric(dp.admin_addr(), "sluice_routes").await, Some(1.0));
    assert_eq!(metric(dp.admin_addr(), "sluice_etcd_connected").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_while_etcd_is_down_and_resyncs_after() {
    let mut etcd = Etcd::start().await.unwrap();
    let mut c = etcd.client().await.unwrap();
    let a = EchoServer::start("a").await.unwrap();
    put(&mut c, "/sluice/routes/r", json!({"uri": "/r", "upstream": {"nodes": {a.addr().to_string(): 1}}})).await;
    let dp = ready_dataplane(&etcd.endpoint()).await;
    let (addr, admin) = (dp.http_addr(), dp.admin_addr());
    assert!(wait_served(addr, "x", "/r", Some("a")).await);

    etcd.kill();
    assert!(eventually(SETTLE, || async { metric(admin, "sluice_etcd_connected").await == Some(0.0) }).await);
    for _ in 0..5 {
        assert_eq!(get(addr, "x", "/r").await.unwrap().backend().as_deref(), Some("a"), "still serving");
    }
    assert_eq!(get(admin, "x", "/readyz").await.unwrap().status, 200, "stays ready on the last config");

    etcd.resume().await.unwrap();
    let mut c = etcd.client().await.unwrap();
    put(&mut c, "/sluice/routes/later", json!({"uri": "/later", "upstream": {"nodes": {a.addr().to_string(): 1}}}))
        .await;
    assert!(wait_served(addr, "x", "/later", Some("a")).await, "changes after reconnect are seen");
    assert_eq!(metric(admin, "sluice_etcd_connected").await, Some(1.0));
    assert_eq!(metric(admin, "sluice_etcd_lists_total").await, Some(1.0), "resumed the watch, no re-list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relists_after_compaction_without_dropping_the_config() {
    let etcd = Etcd::start().await.unwrap();
    let mut c = etcd.client().await.unwrap();
    let a = EchoServer::start("a").await.unwrap();
    let up = json!({"nodes": {a.addr().to_string(): 1}});
    put(&mut c, "/sluice/upstreams/u", up.clone()).await;
    put(&mut c, "/sluice/routes/old", json!({"uri": "/old", "upstream_id": "u"})).await;
    let gate = Gate::start(etcd.endpoint()).await;
    let dp = ready_dataplane(&gate.endpoint()).await;
    let (addr, admin) = (dp.http_addr(), dp.admin_addr());
    assert!(wait_served(addr, "x", "/old", Some("a")).await);

    // Cut the data plane off, then change things and compact the history it would need to catch up.
    gate.close();
    assert!(eventually(SETTLE, || async { metric(admin, "sluice_etcd_connected").await == Some(0.0) }).await);
    delete(&mut c, "/sluice/routes/old").await;
    for i in 0..20 {
        put(&mut c, "/sluice/routes/churn", json!({"uri": format!("/churn{i}"), "upstream_id": "u"})).await;
    }
    put(&mut c, "/sluice/routes/new", json!({"uri": "/new", "upstream_id": "u"})).await;
    let revision = c.get("/sluice/", None).await.unwrap().header().unwrap().revision();
    c.compact(revision, None).await.unwrap();
    assert_eq!(get(addr, "x", "/old").await.unwrap().backend().as_deref(), Some("a"), "last config still served");

    gate.open();
    assert!(wait_served(addr, "x", "/new", Some("a")).await, "re-listed after compaction");
    assert!(wait_served(addr, "x", "/old", None).await, "deletion during the outage applied");
    assert_eq!(get(addr, "x", "/churn19").await.unwrap().backend().as_deref(), Some("a"));
    assert_eq!(metric(admin, "sluice_etcd_lists_total").await, Some(2.0));
    assert_eq!(get(admin, "x", "/readyz").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_bad_objects_alone() {
    let etcd = Etcd::start().await.unwrap();
    let mut c = etcd.client().await.unwrap();
    let a = EchoServer::start("a").await.unwrap();
    let nodes = json!({a.addr().to_string(): 1});
    put_raw(&mut c, "/sluice/routes/broken", "{\"uri\": \"/broken\", ").await;
    put(&mut c, "/sluice/routes/invalid", json!({"uri": "no-slash", "upstream": {"nodes": nodes}})).await;
    put(
        &mut c,
        "/sluice/routes/unknown",
        json!({"uri": "/plug", "plugins": {"nope": {}}, "upstream": {"nodes": nodes}}),
    )
    .await;
    put(&mut c, "/sluice/upstreams/stream", json!({"scheme": "tcp", "nodes": nodes})).await;
    put(&mut c, "/sluice/routes/good", json!({"uri": "/good", "upstream": {"nodes": nodes}})).await;
    put(&mut c, "/sluice/routes/catch-all", json!({"uri": "/*", "upstream": {"nodes": nodes}})).await;
    put(&mut c, "/sluice/ssls/ignored", json!({"whatever": true})).await;
    let dp = ready_dataplane(&etcd.endpoint()).await;
    let (addr, admin) = (dp.http_addr(), dp.admin_addr());
    assert!(wait_served(addr, "x", "/good", Some("a")).await);
    // A route with a plugin this data plane cannot run answers 503; it does not fall through to the catch-all.
    let reply = get(addr, "x", "/plug").await.unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["error_msg"], "503 Service Unavailable: route unknown was rejected");
    assert_eq!(metric(admin, r#"sluice_config_rejected_total{kind="route"}"#).await, Some(3.0));
    assert_eq!(metric(admin, r#"sluice_config_rejected_total{kind="upstream"}"#).await, Some(1.0));

    // A later bad write of a good route is rejected and counted; the last good version keeps serving. The marker
    // route after it has a backend of its own: the catch-all would answer its path from `a` before it is applied.
    put_raw(&mut c, "/sluice/routes/good", "not json").await;
    let b = EchoServer::start("b").await.unwrap();
    put(&mut c, "/sluice/routes/other", json!({"uri": "/other", "upstream": {"nodes": {b.addr().to_string(): 1}}}))
        .await;
    assert!(wait_served(addr, "x", "/other", Some("b")).await);
    assert_eq!(metric(admin, r#"sluice_config_rejected_total{kind="route"}"#).await, Some(4.0));
    assert_eq!(get(addr, "x", "/good").await.unwrap().backend().as_deref(), Some("a"));
}

/// The binary: flags, retrying an unreachable etcd at start, /readyz 503 then 200, and SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_waits_for_etcd_and_stops_on_sigterm() {
    let mut etcd = Etcd::start().await.unwrap();
    let mut c = etcd.client().await.unwrap();
    let a = EchoServer::start("a").await.unwrap();
    put(&mut c, "/custom/routes/r", json!({"uri": "/r", "upstream": {"nodes": {a.addr().to_string(): 1}}})).await;
    drop(c);
    etcd.kill();

    let (http, admin) = (free_port(), free_port());
    let log = std::env::temp_dir().join(format!("sluice-dataplane-test-{}.log", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-dataplane"));
    cmd.arg("--etcd-endpoints")
        .arg(etcd.endpoint())
        .arg("--etcd-prefix=/custom")
        .arg(format!("--http-addr=127.0.0.1:{http}"))
        .arg(format!("--admin-addr=127.0.0.1:{admin}"))
        .arg("--workers=1")
        .arg("--shutdown-grace=2")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = Child::spawn("sluice-dataplane", cmd).unwrap();
    let (http, admin) = (format!("127.0.0.1:{http}").parse().unwrap(), format!("127.0.0.1:{admin}").parse().unwrap());

    assert!(eventually(SETTLE, || async { get(admin, "x", "/healthz").await.is_ok_and(|r| r.status == 200) }).await);
    assert_eq!(get(admin, "x", "/readyz").await.unwrap().status, 503);
    assert!(
        eventually(SETTLE, || async {
            std::fs::read_to_string(&log).unwrap_or_default().contains("cannot reach etcd at")
        })
        .await,
        "logs why it is not ready"
    );

    etcd.resume().await.unwrap();
    assert!(eventually(SETTLE, || async { get(admin, "x", "/readyz").await.is_ok_and(|r| r.status == 200) }).await);
    assert!(wait_served(http, "x", "/r", Some("a")).await);

    let kill = Command::new("kill").arg("-TERM").arg(child.pid().to_string()).status().unwrap();
    assert!(kill.success());
    assert!(
        eventually(Duration::from_secs(5), || {
            let exited = child.exited();
            async move { exited.is_some_and(|s| s.success()) }
        })
        .await,
        "exits cleanly on SIGTERM"
    );
    let _ = std::fs::remove_file(&log);
}
