//! etcd chaos under load: a 3-member etcd cluster on loopback, the data plane binary connected to all three
//! members (through gates the test can cut), and a bounded load loop through the data plane the whole time.
//! One member killed, then all, then all restarted; compaction past the data plane's watch while it is cut off;
//! the data plane restarted while etcd is down (it serves its snapshot). No request may fail, and configuration
//! changes flow again within seconds of etcd coming back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_e2e::{Load, spawn};
use sluice_testkit::{Child, EchoServer, EtcdCluster, Gate, eventually, free_port, get};

/// Puts a route `/<name>` to the echo backend through `client`.
async fn put_route(client: &mut etcd_client::Client, name: &str, echo: &EchoServer) {
    let route = json!({"uri": format!("/{name}"), "upstream": {"nodes": {echo.addr().to_string(): 1}}});
    client.put(format!("/sluice/routes/{name}"), route.to_string(), None).await.unwrap();
}

/// How long until `/<name>` is routed to the echo backend, if it is within `within`.
async fn routed_within(addr: SocketAddr, name: &str, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let path = format!("/{name}");
    let ok = eventually(within, || async { get(addr, "chaos", &path).await.is_ok_and(|r| r.status == 200) }).await;
    ok.then(|| start.elapsed())
}

fn dataplane(endpoints: &str, snapshot: &std::path::Path, http: u16, admin: u16, logs: &std::path::Path) -> Child {
    spawn(
        "sluice-dataplane",
        &[
            format!("--etcd-endpoints={endpoints}"),
            format!("--http-addr=127.0.0.1:{http}"),
            format!("--admin-addr=127.0.0.1:{admin}"),
            "--https-addr=off".into(),
            format!("--snapshot-file={}", snapshot.display()),
            // Short pings: a member that dies under the watch is left within a second.
            "--etcd-keepalive-interval-ms=500".into(),
            "--etcd-keepalive-timeout-ms=500".into(),
            "--etcd-dial-timeout-ms=1000".into(),
        ],
        logs,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_failures_under_load_cost_no_request() {
    let mut cluster = EtcdCluster::start(3).await.unwrap();
    let endpoints = cluster.endpoints();
    let mut gates = Vec::new();
    for e in &endpoints {
        gates.push(Gate::start(e.clone()).await);
    }
    let echo = EchoServer::start("echo").await.unwrap();
    let mut client = cluster.client().await.unwrap();
    put_route(&mut client, "x", &echo).await;

    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("snapshot.json");
    let (http, admin) = (free_port(), free_port());
    let via_gates = gates.iter().map(Gate::endpoint).collect::<Vec<_>>().join(",");
    let mut dp = dataplane(&via_gates, &snapshot, http, admin, dir.path());
    let addr = SocketAddr::from(([127, 0, 0, 1], http));
    assert!(routed_within(addr, "x", Duration::from_secs(30)).await.is_some(), "the data plane never routed /x");
    let load = Load::start(addr);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // One member down: the data plane's watch moves to another member; changes flow through the other two.
    cluster.kill(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut survivors = etcd_client::Client::connect(&endpoints[1..], None).await.unwrap();
    put_route(&mut survivors, "one", &echo).await;
    let took = routed_within(addr, "one", Duration::from_secs(20)).await;
    assert!(took.is_some(), "a change made with one member down was never routed");
    eprintln!("one member down: a change was routed after {took:?}");
    load.none_failed("one member killed");

    // Every member down: the last configuration is served; changes wait.
    cluster.kill(1);
    cluster.kill(2);
    tokio::time::sleep(Duration::from_secs(3)).await;
    load.none_failed("every member killed");

    // Every member back: changes flow again within seconds, and no request saw a 404 in between.
    let back = Instant::now();
    cluster.resume(&[0, 1, 2]).await.unwrap();
    let mut client = cluster.client().await.unwrap();
    put_route(&mut client, "two", &echo).await;
    let took = routed_within(addr, "two", Duration::from_secs(20)).await;
    assert!(took.is_some(), "no change was routed after etcd came back");
    eprintln!("etcd back: up after {:?}, a change routed {took:?} later", back.elapsed());
    load.none_failed("every member restarted");

    // Compaction past the data plane's watch: cut it off, change and compact, let it back. It lists again (one
    // reset, not a reload per object) and serves the change, without a failed request.
    for g in &gates {
        g.close();
    }
    put_route(&mut client, "three", &echo).await;
    for i in 0..20 {
        client.put("/sluice/filler", i.to_string(), None).await.unwrap();
    }
    let head = client.get("/sluice/filler", None).await.unwrap().header().map_or(0, |h| h.revision());
    client.compact(head, Some(etcd_client::CompactionOptions::new().with_physical())).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for g in &gates {
        g.open();
    }
    let took = routed_within(addr, "three", Duration::from_secs(30)).await;
    assert!(took.is_some(), "the change made during the cut was never routed after compaction");
    let log = std::fs::read_to_string(dir.path().join("sluice-dataplane.log")).unwrap_or_default();
    assert!(log.contains("compacted"), "the data plane saw the compaction:\n{log}");
    load.none_failed("compaction past the watch");
    let sent = load.stop().await;
    eprintln!("{sent} requests through every etcd failure, none failed");

    // The data plane restarted while etcd is down: it starts from its snapshot and serves what it served. The
    // snapshot is written at most once a second, so the test waits until it has the last change.
    let written = eventually(Duration::from_secs(10), || async {
        std::fs::read_to_string(&snapshot).is_ok_and(|s| s.contains("/sluice/routes/three"))
    })
    .await;
    assert!(written, "the snapshot never took the last change");
    for i in 0..3 {
        cluster.kill(i);
    }
    drop(dp);
    let http2 = free_port();
    dp = dataplane(&via_gates, &snapshot, http2, free_port(), dir.path());
    let addr2 = SocketAddr::from(([127, 0, 0, 1], http2));
    for name in ["x", "one", "two", "three"] {
        assert!(
            routed_within(addr2, name, Duration::from_secs(30)).await.is_some(),
            "/{name} not served from the snapshot"
        );
    }
    drop(dp);
}
