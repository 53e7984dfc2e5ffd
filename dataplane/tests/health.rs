//! Active health checks against real servers: a failing node is ejected, comes back, and its state survives
//! changes to the other nodes.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use sluice_testkit::{EchoServer, Etcd, eventually, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A node answering every request (probes included) with 200 or, while `failing` is set, 500; its body names it
/// as the echo backends do.
async fn switchable(name: &'static str) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let failing = Arc::new(AtomicBool::new(false));
    let flag = failing.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let flag = flag.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                // One request per connection is enough here; the proxy opens another when this one closes.
                if stream.read(&mut buf).await.is_ok_and(|n| n > 0) {
                    let status = if flag.load(Ordering::SeqCst) { "500 Internal Server Error" } else { "200 OK" };
                    let body = format!(r#"{{"backend":"{name}"}}"#);
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                         connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(resp.as_bytes()).await;
                }
            });
        }
    });
    (addr, failing)
}

async fn backends(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(get(addr, "x", "/h").await.unwrap().backend().unwrap_or_default());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejects_a_failing_node_and_takes_it_back() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let dp = ready_dataplane(&etcd.endpoint()).await;
    let (addr, admin) = (dp.http_addr(), dp.admin_addr());
    let good = EchoServer::start("good").await.unwrap();
    let (flaky, failing) = switchable("flaky").await;
    let checks = json!({"active": {"http_path": "/status", "healthy": {"interval": 1, "successes": 2},
        "unhealthy": {"interval": 1, "http_failures": 2}}});
    let upstream = json!({"checks": checks, "nodes": {good.addr().to_string(): 1, flaky.to_string(): 1}});
    put(&mut client, "/sluice/upstreams/hc", upstream.clone()).await;
    put(&mut client, "/sluice/routes/h", json!({"uri": "/h", "upstream_id": "hc"})).await;
    assert!(eventually(SETTLE, || async { backends(addr, 4).await.contains(&"flaky".to_string()) }).await);
    // Prometheus writes labels in alphabetical order.
    let gauge = format!(r#"sluice_upstream_node_healthy{{node="{flaky}",upstream="hc"}}"#);
    assert!(eventually(SETTLE, || async { metric(admin, &gauge).await == Some(1.0) }).await);

    // Ejected within interval × http_failures + one interval (plus a little slack for scheduling).
    failing.store(true, Ordering::SeqCst);
    let started = Instant::now();
    assert!(eventually(SETTLE, || async { metric(admin, &gauge).await == Some(0.0) }).await, "never ejected");
    assert!(started.elapsed() <= Duration::from_millis(3_500), "ejected after {:?}", started.elapsed());
    assert!(backends(addr, 10).await.iter().all(|b| b == "good"), "no traffic to the unhealthy node");

    // A change to another node keeps the flaky node's state.
    let other = EchoServer::start("other").await.unwrap();
    let changed = json!({"checks": checks, "nodes": {other.addr().to_string(): 1, flaky.to_string(): 1}});
    put(&mut client, "/sluice/upstreams/hc", changed).await;
    assert!(eventually(SETTLE, || async { backends(addr, 1).await == ["other"] }).await);
    assert!(backends(addr, 10).await.iter().all(|b| b == "other"), "still ejected after the update");

    // Back after `healthy.successes` good probes.
    failing.store(false, Ordering::SeqCst);
    let started = Instant::now();
    assert!(eventually(SETTLE, || async { metric(admin, &gauge).await == Some(1.0) }).await, "never back");
    assert!(started.elapsed() <= Duration::from_millis(3_500), "back after {:?}", started.elapsed());
    assert!(backends(addr, 6).await.contains(&"flaky".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_check_settings_reject_only_that_upstream() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let dp = ready_dataplane(&etcd.endpoint()).await;
    let (addr, admin) = (dp.http_addr(), dp.admin_addr());
    let a = EchoServer::start("a").await.unwrap();
    let nodes = json!({a.addr().to_string(): 1});
    let bad = json!({"checks": {"active": {"healthy": {"successes": 0}}}, "nodes": nodes});
    put(&mut client, "/sluice/upstreams/bad", bad).await;
    put(&mut client, "/sluice/upstreams/fine", json!({"nodes": nodes})).await;
    put(&mut client, "/sluice/routes/bad", json!({"uri": "/bad", "upstream_id": "bad"})).await;
    put(&mut client, "/sluice/routes/fine", json!({"uri": "/fine", "upstream_id": "fine"})).await;
    assert!(wait_served(addr, "x", "/fine", Some("a")).await);
    assert_eq!(get(addr, "x", "/bad").await.unwrap().status, 503);
    assert_eq!(metric(admin, r#"sluice_config_rejected_total{kind="upstream"}"#).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_failures_eject_a_node_passively() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let dp = ready_dataplane(&etcd.endpoint()).await;
    let addr = dp.http_addr();
    let good = EchoServer::start("good").await.unwrap();
    let (flaky, failing) = switchable("flaky").await;
    failing.store(true, Ordering::SeqCst);
    // Active checks that would take a long time to act, so what happens here is passive.
    let checks = json!({
        "active": {"healthy": {"interval": 60}, "unhealthy": {"interval": 60, "http_failures": 254}},
        "passive": {"unhealthy": {"http_failures": 2}}
    });
    let upstream = json!({"checks": checks, "nodes": {good.addr().to_string(): 1, flaky.to_string(): 1}});
    put(&mut client, "/sluice/upstreams/p", upstream).await;
    put(&mut client, "/sluice/routes/h", json!({"uri": "/h", "upstream_id": "p"})).await;
    assert!(wait_served(addr, "x", "/h", Some("good")).await);
    // Round robin alternates: within a few requests the flaky node answers 500 twice and is ejected.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(addr, "x", "/h").await.unwrap().status.as_u16());
    }
    assert!(statuses.iter().filter(|&&s| s == 500).count() <= 2, "{statuses:?}");
    assert!(backends(addr, 10).await.iter().all(|b| b == "good"), "ejected by real traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefers_its_own_zone_and_spills_over_when_it_is_down() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let dp = sluice_dataplane::start(sluice_dataplane::Options {
        zone: Some("zone-a".into()),
        ..loopback(&etcd.endpoint(), false)
    })
    .await
    .unwrap();
    assert!(eventually(SETTLE, || async { dp.is_ready() }).await);
    let (addr, admin) = (dp.http_addr(), dp.admin_addr());
    let (near, failing) = switchable("near").await;
    let far = EchoServer::start("far").await.unwrap();
    let node = |a: SocketAddr, zone: &str| {
        json!({"host": a.ip().to_string(), "port": a.port(), "weight": 1,
        "metadata": {"zone": zone}})
    };
    let checks = json!({"active": {"http_path": "/status", "healthy": {"interval": 1, "successes": 1},
        "unhealthy": {"interval": 1, "http_failures": 1}}});
    let upstream = json!({"checks": checks, "nodes": [node(near, "zone-a"), node(far.addr(), "zone-b")]});
    put(&mut client, "/sluice/upstreams/z", upstream.clone()).await;
    put(&mut client, "/sluice/routes/h", json!({"uri": "/h", "upstream_id": "z"})).await;
    assert!(eventually(SETTLE, || async { backends(addr, 1).await == ["near"] }).await);
    assert!(backends(addr, 10).await.iter().all(|b| b == "near"), "only the node in the data plane's zone");

    // Zone a's node is ejected by its health checks: zone b's takes the traffic, until zone a's is back.
    failing.store(true, Ordering::SeqCst);
    let gauge = format!(r#"sluice_upstream_node_healthy{{node="{near}",upstream="z"}}"#);
    assert!(eventually(SETTLE, || async { metric(admin, &gauge).await == Some(0.0) }).await, "never ejected");
    assert!(backends(addr, 10).await.iter().all(|b| b == "far"), "spilled over to the other zone");
    failing.store(false, Ordering::SeqCst);
    assert!(eventually(SETTLE, || async { metric(admin, &gauge).await == Some(1.0) }).await, "never back");
    assert!(backends(addr, 10).await.iter().all(|b| b == "near"), "back to the data plane's own zone");

    // An upstream that turns the preference off balances over both zones.
    let mut even = upstream;
    even["zone_aware"] = json!(false);
    put(&mut client, "/sluice/upstreams/z", even).await;
    assert!(eventually(SETTLE, || async { backends(addr, 6).await.contains(&"far".to_string()) }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_data_plane_is_ready_only_once_its_checks_know_which_nodes_are_down() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let good = EchoServer::start("good").await.unwrap();
    let (down, failing) = switchable("down").await;
    failing.store(true, Ordering::SeqCst);
    // Far more failures needed than one probe: without the first probe deciding, the node would take traffic
    // for ten seconds.
    let checks = json!({"active": {"http_path": "/status", "healthy": {"interval": 1, "successes": 1},
        "unhealthy": {"interval": 1, "http_failures": 10}}});
    let upstream = json!({"checks": checks, "nodes": {good.addr().to_string(): 1, down.to_string(): 1}});
    put(&mut client, "/sluice/upstreams/hc", upstream).await;
    put(&mut client, "/sluice/routes/h", json!({"uri": "/h", "upstream_id": "hc"})).await;
    // Ready means the first round of probes is over: from the first request on, the failing node gets none.
    let dp = ready_dataplane(&etcd.endpoint()).await;
    let seen = backends(dp.http_addr(), 10).await;
    assert!(seen.iter().all(|b| b == "good"), "a node that failed its first probe took traffic: {seen:?}");
    // It comes back after `healthy.successes` good probes.
    failing.store(false, Ordering::SeqCst);
    assert!(eventually(SETTLE, || async { backends(dp.http_addr(), 4).await.contains(&"down".to_string()) }).await);
}
