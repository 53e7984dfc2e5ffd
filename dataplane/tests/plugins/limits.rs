//! limit-count, limit-req and limit-conn, after APISIX's t/plugin/limit-*.t cases, and cluster-wide limits shared
//! by two data plane processes on one etcd.

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_testkit::{eventually, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Stack, common};

fn quota(r: &sluice_testkit::Reply) -> (u16, String, String, u64) {
    let header = |name: &str| r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let reset = header("x-ratelimit-reset").parse().unwrap_or(0);
    (r.status.as_u16(), header("x-ratelimit-limit"), header("x-ratelimit-remaining"), reset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_count_admits_count_per_window_with_quota_headers() {
    let mut s = Stack::start().await;
    s.route(
        "count",
        json!({"uri": "/count", "plugins": {"limit-count": {"count": 2, "time_window": 60, "rejected_code": 503}}}),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(quota(&s.get("/count").await));
    }
    let statuses: Vec<_> = seen.iter().map(|q| q.0).collect();
    assert_eq!(statuses, [200, 200, 503, 503]);
    let remaining: Vec<_> = seen.iter().map(|q| q.2.as_str()).collect();
    assert_eq!(remaining, ["1", "0", "0", "0"]);
    for (_, limit, _, reset) in &seen {
        assert_eq!(limit, "2");
        assert!((1..=60).contains(reset), "X-RateLimit-Reset {reset} is the seconds left in the window");
    }
    assert_eq!(s.metric("sluice_limit_rejected_total{plugin=\"limit-count\"}").await, Some(2.0));

    // Counted per key: another user has a window of its own; a message makes a JSON body.
    s.route(
        "by-user",
        json!({"uri": "/user", "plugins": {"limit-count": {"count": 1, "time_window": 60, "key": "http_x_user",
            "rejected_code": 429, "rejected_msg": "slow down", "show_limit_quota_header": false}}}),
    )
    .await;
    assert_eq!(s.get_with("/user", &[("x-user", "ann")]).await.status, 200);
    let refused = s.get_with("/user", &[("x-user", "ann")]).await;
    assert_eq!((refused.status.as_u16(), refused.body.as_str()), (429, r#"{"error_msg":"slow down"}"#));
    assert!(refused.headers.get("x-ratelimit-limit").is_none(), "show_limit_quota_header false");
    assert_eq!(s.get_with("/user", &[("x-user", "bob")]).await.status, 200);

    // A group is one counter for every route naming it; a constant key is one counter for the route.
    let grouped = json!({"count": 3, "time_window": 60, "group": "g", "key_type": "constant", "key": "all"});
    s.route("g1", json!({"uri": "/g1", "plugins": {"limit-count": grouped.clone()}})).await;
    s.route("g2", json!({"uri": "/g2", "plugins": {"limit-count": grouped}})).await;
    let mut admitted = 0;
    for path in ["/g1", "/g2", "/g1", "/g2", "/g1"] {
        admitted += u32::from(s.get(path).await.status == 200);
    }
    assert_eq!(admitted, 3, "the two routes share the group's count");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_count_window_reopens() {
    let mut s = Stack::start().await;
    s.route("w", json!({"uri": "/w", "plugins": {"limit-count": {"count": 1, "time_window": 1}}})).await;
    assert_eq!(s.get("/w").await.status, 200);
    assert_eq!(s.get("/w").await.status, 503);
    let addr = s.addr();
    let reopened =
        eventually(Duration::from_secs(5), || async { get(addr, "x", "/w").await.is_ok_and(|r| r.status == 200) })
            .await;
    assert!(reopened, "a one-second window admits again once it has closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_req_delays_within_the_burst_and_refuses_beyond() {
    let mut s = Stack::start().await;
    s.route(
        "nodelay",
        json!({"uri": "/nodelay", "plugins": {"limit-req": {"rate": 0.1, "burst": 1, "key": "remote_addr",
            "nodelay": true, "rejected_code": 429}}}),
    )
    .await;
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(s.get("/nodelay").await.status.as_u16());
        }
        v
    };
    assert_eq!(statuses, [200, 200, 429], "one at the rate, one in the burst at once, the third refused");

    // Without nodelay the request in the burst waits for the bucket to drain to it: 1 / rate seconds.
    s.route("delay", json!({"uri": "/delay", "plugins": {"limit-req": {"rate": 2, "burst": 1, "key": "http_x_user"}}}))
        .await;
    let user = [("x-user", "carol")];
    let started = Instant::now();
    assert_eq!(s.get_with("/delay", &user).await.status, 200);
    assert_eq!(s.get_with("/delay", &user).await.status, 200);
    // The second is let through half a second after the first arrived. A lower bound only: on a loaded machine
    // it may come later, never sooner.
    assert!(started.elapsed() >= Duration::from_millis(450), "took {:?}", started.elapsed());
    assert_eq!(s.metric("sluice_limit_rejected_total{plugin=\"limit-req\"}").await, Some(1.0));
}

/// Sends a request head that announces a body and does not send it, so the request stays in flight.
async fn hold(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Sends the held request's body and reads the status of its answer.
async fn release(mut stream: TcpStream) -> u16 {
    stream.write_all(b"hello").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_conn_refuses_beyond_conn_and_burst_until_requests_end() {
    let mut s = Stack::start().await;
    s.route(
        "conn",
        json!({"uri": "/conn", "plugins": {"limit-conn": {"conn": 1, "burst": 0, "default_conn_delay": 0.1,
            "key": "remote_addr", "rejected_code": 503}}}),
    )
    .await;
    let addr = s.addr();
    let held = hold(addr, "/conn").await;
    let refused = eventually(common::SETTLE, || async { get(addr, "x", "/conn").await.is_ok_and(|r| r.status == 503) });
    assert!(refused.await, "a second request while one is in flight is refused");
    assert_eq!(release(held).await, 200);
    let freed = eventually(common::SETTLE, || async { get(addr, "x", "/conn").await.is_ok_and(|r| r.status == 200) });
    assert!(freed.await, "once the first request has ended, the next one passes");

    // Within the burst a request waits default_conn_delay, then passes.
    s.route(
        "burst",
        json!({"uri": "/burst", "plugins": {"limit-conn": {"conn": 1, "burst": 1, "default_conn_delay": 0.5,
            "only_use_default_delay": true, "key": "remote_addr"}}}),
    )
    .await;
    let held = hold(addr, "/burst").await;
    // The held request reaches its access phase soon after its head; until it does, the next one is not delayed.
    let mut delayed = false;
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(get(addr, "x", "/burst").await.unwrap().status, 200);
        if started.elapsed() >= Duration::from_millis(450) {
            delayed = true;
            break;
        }
    }
    assert!(delayed, "a request beyond conn within the burst waits default_conn_delay");
    assert_eq!(release(held).await, 200);

    // By default the delay follows the latency. Requests here take 200 ms (fault-injection, before limit-conn),
    // so after a dozen the unit delay is near 200 ms, far from default_conn_delay's 2 s.
    s.route(
        "adaptive",
        json!({"uri": "/adaptive", "plugins": {"fault-injection": {"delay": {"duration": 0.2}},
            "limit-conn": {"conn": 1, "burst": 1, "default_conn_delay": 2, "key": "remote_addr"}}}),
    )
    .await;
    for _ in 0..12 {
        assert_eq!(get(addr, "x", "/adaptive").await.unwrap().status, 200);
    }
    let held = hold(addr, "/adaptive").await;
    // Until the held request counts, the next is not delayed (about 200 ms in all); once it does, it waits one
    // adapted unit (about 400 ms in all), never the default's 2 s.
    let mut waited = None;
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(get(addr, "x", "/adaptive").await.unwrap().status, 200);
        if started.elapsed() >= Duration::from_millis(330) {
            waited = Some(started.elapsed());
            break;
        }
    }
    let waited = waited.expect("a request beyond conn was delayed");
    assert!(waited < Duration::from_millis(1500), "delayed {waited:?}: the unit delay did not follow the latency");
    assert_eq!(release(held).await, 200);
    assert_eq!(s.metric("sluice_limit_rejected_total{plugin=\"limit-conn\"}").await.map(|n| n >= 1.0), Some(true));
}

/// A data plane on `endpoint` registered as `id`, whose registration lapses two seconds after its last renewal.
pub(super) async fn member(endpoint: &str, id: &str) -> sluice_dataplane::Dataplane {
    let opts = sluice_dataplane::Options {
        node_id: Some(id.into()),
        registration_ttl: Duration::from_secs(2),
        ..common::loopback(endpoint, false)
    };
    let dp = sluice_dataplane::start(opts).await.unwrap();
    assert!(eventually(common::SETTLE, || async { dp.is_ready() }).await, "data plane never became ready");
    dp
}

async fn cluster_size(dp: &sluice_dataplane::Dataplane) -> Option<f64> {
    common::metric(dp.admin_addr(), "sluice_dataplane_cluster_size").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_limits_are_shared_by_the_live_data_planes() {
    let etcd = sluice_testkit::Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let echo = sluice_testkit::EchoServer::start("echo").await.unwrap();
    let upstream = json!({"nodes": {echo.addr().to_string(): 1}});
    let limit = |uri: &str| {
        json!({"uri": uri, "upstream": upstream.clone(), "plugins": {"limit-count": {"count": 4, "time_window": 60,
            "key_type": "constant", "key": "all", "scope": "cluster"}}})
    };
    common::put(&mut client, "/sluice/routes/first", limit("/first")).await;
    let (a, b) = (member(&etcd.endpoint(), "dp-a").await, member(&etcd.endpoint(), "dp-b").await);
    for dp in [&a, &b] {
        let both = eventually(common::SETTLE, || async { cluster_size(dp).await == Some(2.0) }).await;
        assert!(both, "each data plane counts two live data planes");
    }
    let registered = client.get("/sluice/data_plane/server_info/dp-a", None).await.unwrap();
    let info: sluice_model::ServerInfo = serde_json::from_slice(registered.kvs()[0].value()).unwrap();
    assert_eq!(info.id, "dp-a");

    // Each admits half of the cluster's 4; together they admit the limit.
    let mut admitted = 0;
    for i in 0..8 {
        let dp = if i % 2 == 0 { &a } else { &b };
        admitted += u32::from(get(dp.http_addr(), "x", "/first").await.unwrap().status == 200);
    }
    assert_eq!(admitted, 4, "two data planes together admit the cluster-wide limit");

    // One dies without leaving: once its lease has expired, the survivor admits the whole limit alone.
    drop(b);
    let alone = eventually(Duration::from_secs(20), || async { cluster_size(&a).await == Some(1.0) }).await;
    assert!(alone, "the survivor notices that the other data plane is gone");
    common::put(&mut client, "/sluice/routes/second", limit("/second")).await;
    assert!(common::wait_served(a.http_addr(), "x", "/second", Some("echo")).await);
    let mut admitted = 1;
    for _ in 0..6 {
        admitted += u32::from(get(a.http_addr(), "x", "/second").await.unwrap().status == 200);
    }
    assert_eq!(admitted, 4, "the survivor alone admits the cluster-wide limit");

    // One that shuts down leaves at once.
    let c = member(&etcd.endpoint(), "dp-c").await;
    assert!(eventually(common::SETTLE, || async { cluster_size(&a).await == Some(2.0) }).await);
    c.shutdown().await;
    let left = client.get("/sluice/data_plane/server_info/dp-c", None).await.unwrap();
    assert!(left.kvs().is_empty(), "a data plane that shuts down revokes its registration");
}
