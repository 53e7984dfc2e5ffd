//! The configuration snapshot on disk: a data plane restarted while etcd is down serves from it, says so, and
//! takes etcd's configuration again once etcd is back; a damaged snapshot is refused.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use sluice_testkit::{EchoServer, Etcd, eventually, get};

fn options(endpoint: &str, file: &std::path::Path) -> sluice_dataplane::Options {
    sluice_dataplane::Options { snapshot_file: Some(file.to_path_buf()), ..loopback(endpoint, false) }
}

async fn readyz(dp: &sluice_dataplane::Dataplane) -> (u16, String) {
    let r = get(dp.admin_addr(), "localhost", "/readyz").await.unwrap();
    (r.status.as_u16(), r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_snapshot_while_etcd_is_down_and_etcd_again_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.json");
    let mut etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let echo = EchoServer::start("echo").await.unwrap();
    put(&mut client, "/sluice/upstreams/u", json!({"nodes": {echo.addr().to_string(): 1}})).await;
    put(&mut client, "/sluice/routes/r", json!({"uri": "/r", "upstream_id": "u"})).await;

    let dp = sluice_dataplane::start(options(&etcd.endpoint(), &file)).await.unwrap();
    assert!(wait_served(dp.http_addr(), "x", "/r", Some("echo")).await);
    let written = eventually(SETTLE, || async {
        sluice_dataplane::snapshot::read(&file).is_ok_and(|s| s.objects.iter().any(|o| o.key == "/sluice/routes/r"))
    });
    assert!(written.await, "the snapshot holds the served configuration");
    drop(dp);

    // etcd goes down, and the data plane restarts meanwhile: it serves from the snapshot.
    etcd.kill();
    let dp = sluice_dataplane::start(options(&etcd.endpoint(), &file)).await.unwrap();
    assert!(eventually(SETTLE, || async { dp.is_ready() }).await, "ready from the snapshot");
    assert!(wait_served(dp.http_addr(), "x", "/r", Some("echo")).await, "the snapshot's route is served");
    let (status, body) = readyz(&dp).await;
    assert_eq!(status, 200);
    assert!(body.contains("snapshot"), "/readyz says where the configuration comes from: {body}");
    assert_eq!(metric(dp.admin_addr(), "sluice_config_from_snapshot").await, Some(1.0));

    // etcd is back: its configuration replaces the snapshot's, and changes flow again.
    etcd.resume().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    put(&mut client, "/sluice/routes/new", json!({"uri": "/new", "upstream_id": "u"})).await;
    assert!(wait_served(dp.http_addr(), "x", "/new", Some("echo")).await, "changes flow once etcd is back");
    assert!(eventually(SETTLE, || async { readyz(&dp).await == (200, "ready\n".to_string()) }).await);
    assert_eq!(metric(dp.admin_addr(), "sluice_config_from_snapshot").await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.json");
    std::fs::write(&file, br#"{"format":1,"revision":3,"checksum":"00","objects":[]}"#).unwrap();
    // Nothing listens on this endpoint.
    let endpoint = format!("http://127.0.0.1:{}", sluice_testkit::free_port());
    let dp = sluice_dataplane::start(options(&endpoint, &file)).await.unwrap();
    // The source gives up on etcd, looks at the snapshot, and refuses it.
    let admin = dp.admin_addr();
    let refused = eventually(Duration::from_secs(20), || async {
        metric(admin, "sluice_config_snapshot_refused_total").await == Some(1.0)
    });
    assert!(refused.await, "the damaged snapshot is looked at and refused");
    assert!(!dp.is_ready(), "a snapshot whose checksum does not match is not served");
    assert_eq!(readyz(&dp).await.0, 503);
}
