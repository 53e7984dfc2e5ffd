//! limit-count's Redis policies against a real `redis-server`: one limit shared by two data plane processes, the
//! error bound under concurrent load, the local fallback while Redis is stopped and the return to Redis counting,
//! and the cluster and Sentinel flavours.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sluice_testkit::{EchoServer, Etcd, Redis, eventually, get};

use super::limits::member;
use super::{Stack, common};

/// Two data planes registered in one etcd, so that each knows there are two.
struct Pair {
    etcd: Etcd,
    client: etcd_client::Client,
    a: sluice_dataplane::Dataplane,
    b: sluice_dataplane::Dataplane,
    echo: EchoServer,
}

impl Pair {
    async fn start() -> Pair {
        let etcd = Etcd::start().await.unwrap();
        let client = etcd.client().await.unwrap();
        let echo = EchoServer::start("echo").await.unwrap();
        let (a, b) = (member(&etcd.endpoint(), "dp-a").await, member(&etcd.endpoint(), "dp-b").await);
        for dp in [&a, &b] {
            let size = || async { common::metric(dp.admin_addr(), "sluice_dataplane_cluster_size").await };
            assert!(eventually(common::SETTLE, || async { size().await == Some(2.0) }).await);
        }
        Pair { etcd, client, a, b, echo }
    }

    /// Puts route `id` at `/<id>` with `limit` as its limit-count, and waits until both data planes serve it: a
    /// route put after it (`/<id>-ready`, unlimited) answering means it is served, as revisions apply in order.
    async fn route(&mut self, id: &str, limit: Value) {
        let upstream = json!({"nodes": {self.echo.addr().to_string(): 1}});
        let route = json!({"uri": format!("/{id}"), "upstream": upstream.clone(), "plugins": {"limit-count": limit}});
        common::put(&mut self.client, &format!("/sluice/routes/{id}"), route).await;
        let ready = json!({"uri": format!("/{id}-ready"), "upstream": upstream});
        common::put(&mut self.client, &format!("/sluice/routes/{id}-ready"), ready).await;
        for dp in [&self.a, &self.b] {
            assert!(common::wait_served(dp.http_addr(), "x", &format!("/{id}-ready"), Some("echo")).await);
        }
    }
}

/// A Redis-backed limit-count of `count` per `window` seconds on one constant key.
fn limit(redis: &Redis, count: u64, window: u64, key: &str) -> Value {
    json!({"count": count, "time_window": window, "key_type": "constant", "key": key, "rejected_code": 429,
        "policy": "redis", "redis_host": "127.0.0.1", "redis_port": redis.port(), "redis_timeout": 500})
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Waits for the start of the next aligned `window`-second window (plus a margin for clocks and scheduling) and
/// returns when that window ends.
async fn next_window(window: u64) -> u64 {
    let w = window * 1000;
    let start = (unix_ms() / w + 1) * w;
    tokio::time::sleep(Duration::from_millis(start + 150 - unix_ms())).await;
    start + w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_data_planes_share_one_redis_limit() {
    let redis = Redis::start().await.unwrap();
    let mut pair = Pair::start().await;
    // The window is long so that the test runs within one (and a new key per attempt if it does not).
    pair.route("shared", limit(&redis, 10, 3600, "all")).await;
    let mut admitted = 0;
    let mut headers = Vec::new();
    for i in 0..24 {
        let dp = if i % 2 == 0 { &pair.a } else { &pair.b };
        let r = get(dp.http_addr(), "x", "/shared").await.unwrap();
        admitted += u32::from(r.status == 200);
        headers.push(r.headers.get("x-ratelimit-limit").and_then(|v| v.to_str().ok()).map(str::to_string));
    }
    let keys = redis.command(&["KEYS", "sluice:limit-count:routes/shared:*"]).unwrap();
    assert_eq!(keys.lines().count(), 1, "one counter for the window: {keys}");
    let counted: u32 = redis.command(&["GET", keys.trim()]).unwrap().parse().unwrap();
    assert_eq!(counted, 10, "Redis holds the whole limit as claimed");
    assert_eq!(admitted, 10, "two data planes together admit the limit");
    assert!(headers.iter().all(|h| h.as_deref() == Some("10")), "X-RateLimit-Limit is the whole limit: {headers:?}");
    // Every refusal is counted, by whichever data plane made it.
    let refused = |dp: &sluice_dataplane::Dataplane| {
        let admin = dp.admin_addr();
        async move { common::metric(admin, "sluice_limit_rejected_total{plugin=\"limit-count\"}").await.unwrap_or(0.0) }
    };
    assert_eq!(refused(&pair.a).await + refused(&pair.b).await, 14.0, "the 14 refusals are counted");
    drop(pair.etcd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_limit_stays_within_its_bound_under_load() {
    let redis = Redis::start().await.unwrap();
    let mut pair = Pair::start().await;
    let (count, window) = (400u32, 4u64);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let key = format!("load-{attempt}");
        pair.route(&key, limit(&redis, u64::from(count), window, &key)).await;
        let end = next_window(window).await;
        // Eight clients, four on each data plane, as fast as they are answered, until just before the window ends.
        let admitted = Arc::new(AtomicU32::new(0));
        let sent = Arc::new(AtomicU32::new(0));
        let mut clients = Vec::new();
        for i in 0..8 {
            let addr = if i % 2 == 0 { pair.a.http_addr() } else { pair.b.http_addr() };
            let (admitted, sent, path) = (admitted.clone(), sent.clone(), format!("/{key}"));
            clients.push(tokio::spawn(async move {
                while unix_ms() + 200 < end {
                    let ok = get(addr, "x", &path).await.is_ok_and(|r| r.status == 200);
                    admitted.fetch_add(u32::from(ok), Ordering::Relaxed);
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
        let (admitted, sent) = (admitted.load(Ordering::Relaxed), sent.load(Ordering::Relaxed));
        if sent < count * 3 / 2 && attempt < 3 {
            // A machine too loaded to offer more than the limit says nothing about the bound; try again.
            eprintln!("only {sent} requests sent in the window; again");
            continue;
        }
        assert!(sent >= count, "the load must exceed the limit: {sent} sent");
        assert!(admitted <= count, "admitted {admitted} of {count} (never more than the limit)");
        assert!(admitted * 100 >= count * 97, "admitted {admitted} of {count}: more than 3% below the limit");
        eprintln!("limit {count}: admitted {admitted} of {sent} sent by 8 clients through 2 data planes");
        break;
    }
}

async fn statuses(addr: std::net::SocketAddr, path: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(addr, "x", path).await.unwrap().status.as_u16());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_locally_while_redis_is_down_and_returns_to_redis() {
    let mut redis = Redis::start().await.unwrap();
    let port = redis.port();
    let mut s = Stack::start().await;
    let conf = |key: &str| {
        json!({"uri": "/r", "plugins": {"limit-count": {"count": 3, "time_window": 3600, "key_type": "constant",
            "key": key, "policy": "redis", "redis_host": "127.0.0.1", "redis_port": port, "redis_timeout": 300}}})
    };
    let up = format!("sluice_redis_up{{target=\"127.0.0.1:{port}\"}}");
    // The marker requests of a sync do not pass this route, so each window is whole.
    s.route("r", conf("before")).await;
    assert_eq!(statuses(s.dp.http_addr(), "/r", 5).await, [200, 200, 200, 503, 503]);
    let counter = redis.command(&["KEYS", "sluice:limit-count:routes/r:*:before"]).unwrap();
    assert_eq!(redis.command(&["GET", counter.trim()]).unwrap(), "3", "counted in Redis");
    assert_eq!(s.metric(&up).await, Some(1.0));

    // Redis gone: the first failed claim marks it down; from then on the limit counts locally (all of the 3 on
    // the one data plane), and traffic keeps flowing.
    redis.kill();
    s.route("r", conf("during")).await;
    let during = statuses(s.dp.http_addr(), "/r", 5).await;
    assert_eq!(during, [200, 200, 200, 503, 503], "admitted and limited by the local fallback");
    let fallback = s.metric("sluice_limit_redis_fallback_total{plugin=\"limit-count\"}").await.unwrap_or(0.0);
    assert!(fallback >= 5.0, "requests decided without Redis are counted: {fallback}");
    assert_eq!(s.metric(&up).await, Some(0.0));

    // Redis back: the link probes it, marks it up, and the limit counts in Redis again.
    redis.resume().await.unwrap();
    let back = eventually(Duration::from_secs(10), || async { s.metric(&up).await == Some(1.0) }).await;
    assert!(back, "the link notices that Redis is back");
    s.route("r", conf("after")).await;
    assert_eq!(statuses(s.dp.http_addr(), "/r", 4).await, [200, 200, 200, 503]);
    let counter = redis.command(&["KEYS", "sluice:limit-count:routes/r:*:after"]).unwrap();
    assert_eq!(redis.command(&["GET", counter.trim()]).unwrap(), "3", "counting is back in Redis");
}

/// Routes `/<id>` with a limit of 3 counted by `policy` with `fields`, and expects Redis counting.
async fn counts_three_with(s: &mut Stack, id: &str, policy: &str, fields: Value) -> Vec<u16> {
    let mut conf = json!({"count": 3, "time_window": 3600, "key_type": "constant", "key": id, "policy": policy});
    for (k, v) in fields.as_object().unwrap() {
        conf[k] = v.clone();
    }
    s.route(id, json!({"uri": format!("/{id}"), "plugins": {"limit-count": conf}})).await;
    statuses(s.dp.http_addr(), &format!("/{id}"), 4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_in_a_redis_cluster_and_through_sentinels() {
    let cluster = Redis::cluster().await.unwrap();
    let master = Redis::start().await.unwrap();
    let sentinel = Redis::sentinel(master.port()).await.unwrap();
    let mut s = Stack::start().await;

    let nodes = json!({"redis_cluster_nodes": [format!("127.0.0.1:{}", cluster.port())], "redis_cluster_name": "c"});
    assert_eq!(counts_three_with(&mut s, "in-cluster", "redis-cluster", nodes).await, [200, 200, 200, 503]);
    let counter = cluster.command(&["KEYS", "sluice:limit-count:routes/in-cluster:*"]).unwrap();
    assert_eq!(cluster.command(&["GET", counter.trim()]).unwrap(), "3", "counted in the cluster");

    let sentinels =
        json!({"redis_sentinels": [format!("127.0.0.1:{}", sentinel.port())], "redis_master_name": "master"});
    assert_eq!(counts_three_with(&mut s, "by-sentinel", "redis-sentinel", sentinels).await, [200, 200, 200, 503]);
    let counter = master.command(&["KEYS", "sluice:limit-count:routes/by-sentinel:*"]).unwrap();
    assert_eq!(master.command(&["GET", counter.trim()]).unwrap(), "3", "counted in the master the Sentinel names");
    let fallback = s.metric("sluice_limit_redis_fallback_total{plugin=\"limit-count\"}").await.unwrap_or(0.0);
    assert_eq!(fallback, 0.0, "nothing was decided without Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_in_redis_over_tls() {
    let redis = Redis::start_tls().await.unwrap();
    let mut s = Stack::start().await;
    // The server's certificate is signed by the testkit's CA, which the Redis client's (system) roots do not
    // hold: redis_ssl_verify false connects, verified it cannot.
    let tls = json!({"redis_host": "localhost", "redis_port": redis.port(), "redis_ssl": true, "redis_timeout": 500});
    assert_eq!(counts_three_with(&mut s, "over-tls", "redis", tls).await, [200, 200, 200, 503]);
    let up = format!("sluice_redis_up{{target=\"localhost:{}\"}}", redis.port());
    assert_eq!(s.metric(&up).await, Some(1.0), "counted in Redis over TLS");
    let verified = json!({"redis_host": "localhost", "redis_port": redis.port(), "redis_ssl": true,
        "redis_ssl_verify": true, "redis_timeout": 500});
    // A second target (verification on): its link fails, so the limit counts locally and says so.
    assert_eq!(counts_three_with(&mut s, "verified-tls", "redis", verified).await, [200, 200, 200, 503]);
    let fallback = s.metric("sluice_limit_redis_fallback_total{plugin=\"limit-count\"}").await.unwrap_or(0.0);
    assert!(fallback >= 4.0, "the unverifiable server was not used: {fallback}");
}
