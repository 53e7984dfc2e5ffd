//! Proxying against real backends: errors and their bodies, timeouts, forwarded headers, balancing, retries.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::Method;
use serde_json::{Value, json};
use sluice_testkit::{EchoServer, Etcd, free_port, get, request};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

struct Setup {
    _etcd: Etcd,
    client: etcd_client::Client,
    dp: sluice_dataplane::Dataplane,
}

async fn setup() -> Setup {
    let etcd = Etcd::start().await.unwrap();
    let client = etcd.client().await.unwrap();
    let dp = ready_dataplane(&etcd.endpoint()).await;
    Setup { _etcd: etcd, client, dp }
}

impl Setup {
    /// Puts a route and waits until its path stops answering 404 "Route Not Found".
    async fn route(&mut self, id: &str, route: Value) {
        let path = route["uri"].as_str().unwrap().trim_end_matches('*').to_string();
        let host = route["host"].as_str().unwrap_or("x").to_string();
        put(&mut self.client, &format!("/sluice/routes/{id}"), route).await;
        let addr = self.dp.http_addr();
        let routed = sluice_testkit::eventually(SETTLE, || async {
            get(addr, &host, &path).await.is_ok_and(|r| !r.body.contains("Route Not Found"))
        })
        .await;
        assert!(routed, "route {id} never took effect");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_errors_with_apisix_statuses_and_bodies() {
    let mut s = setup().await;
    let addr = s.dp.http_addr();

    let reply = get(addr, "x", "/nothing").await.unwrap();
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body, r#"{"error_msg":"404 Route Not Found"}"#);
    assert_eq!(reply.headers["content-type"], "application/json");

    s.route("missing", json!({"uri": "/missing", "upstream_id": "nope"})).await;
    let reply = get(addr, "x", "/missing").await.unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["error_msg"], "503 Service Unavailable: upstream nope not found");

    let dead = json!({format!("127.0.0.1:{}", free_port()): 1, format!("127.0.0.1:{}", free_port()): 1});
    s.route("down", json!({"uri": "/down", "upstream": {"nodes": dead}})).await;
    let reply = get(addr, "x", "/down").await.unwrap();
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json()["error_msg"], "502 Bad Gateway");

    s.route("empty", json!({"uri": "/empty", "upstream": {"nodes": {}}})).await;
    assert_eq!(get(addr, "x", "/empty").await.unwrap().status, 502);

    s.route("zero", json!({"uri": "/zero", "upstream": {"nodes": {"127.0.0.1:1": 0}}})).await;
    assert_eq!(get(addr, "x", "/zero").await.unwrap().status, 502);

    let admin = s.dp.admin_addr();
    assert!(metric(admin, r#"sluice_http_requests_total{code="404"}"#).await.unwrap() >= 1.0);
    assert!(metric(admin, r#"sluice_http_requests_total{code="502"}"#).await.unwrap() >= 3.0);
    assert!(metric(admin, r#"sluice_http_requests_total{code="503"}"#).await.unwrap() >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_out_waiting_for_a_slow_node() {
    let mut s = setup().await;
    // A node that accepts and reads the request but never answers.
    let slow = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_addr = slow.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = slow.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            });
        }
    });
    let timeout = json!({"connect": 1, "send": 1, "read": 0.3});
    put(
        &mut s.client,
        "/sluice/routes/slow",
        json!({"uri": "/slow", "timeout": timeout,
        "upstream": {"nodes": {slow_addr.to_string(): 1}}}),
    )
    .await;
    let addr = s.dp.http_addr();
    assert!(
        sluice_testkit::eventually(SETTLE, || async { get(addr, "x", "/slow").await.is_ok_and(|r| r.status == 504) })
            .await
    );
    let started = Instant::now();
    let reply = get(addr, "x", "/slow").await.unwrap();
    assert_eq!(reply.status, 504);
    assert_eq!(reply.json()["error_msg"], "504 Gateway Timeout");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_headers_and_bodies() {
    let mut s = setup().await;
    let a = EchoServer::start("a").await.unwrap();
    let nodes = json!({a.addr().to_string(): 1});
    s.route("pass", json!({"uri": "/pass", "host": "app.example.com", "upstream": {"nodes": nodes}})).await;
    let addr = s.dp.http_addr();

    let reply = request(
        addr,
        Method::POST,
        "app.example.com",
        "/pass?q=1",
        &[("x-forwarded-for", "203.0.113.7"), ("connection", "keep-alive, x-drop"), ("x-drop", "1")],
        Bytes::from_static(b"hello body"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    let echoed = reply.json();
    let h = &echoed["headers"];
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["path"], "/pass?q=1");
    assert_eq!(echoed["body"], "hello body");
    assert_eq!(h["host"], "app.example.com", "pass_host defaults to pass");
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "app.example.com");
    assert_eq!(h["x-forwarded-port"], addr.port().to_string());
    assert!(h.get("x-drop").is_none(), "headers named in Connection are hop-by-hop");
    assert_eq!(reply.headers["x-backend"], "a");

    s.route("node", json!({"uri": "/node", "upstream": {"pass_host": "node", "nodes": nodes}})).await;
    let reply = get(addr, "x", "/node").await.unwrap();
    assert_eq!(reply.json()["headers"]["host"], a.addr().to_string());

    s.route(
        "rw",
        json!({"uri": "/rw", "upstream": {"pass_host": "rewrite", "upstream_host": "internal.svc",
        "nodes": nodes}}),
    )
    .await;
    let reply = get(addr, "x", "/rw").await.unwrap();
    assert_eq!(reply.json()["headers"]["host"], "internal.svc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_by_weight_and_skips_dead_nodes() {
    let mut s = setup().await;
    let (a, b) = (EchoServer::start("a").await.unwrap(), EchoServer::start("b").await.unwrap());
    put(&mut s.client, "/sluice/upstreams/w", json!({"nodes": {a.addr().to_string(): 3, b.addr().to_string(): 1}}))
        .await;
    s.route("w", json!({"uri": "/w", "upstream_id": "w"})).await;
    let addr = s.dp.http_addr();
    let (a0, b0) = (a.hits(), b.hits());
    for _ in 0..40 {
        assert_eq!(get(addr, "x", "/w").await.unwrap().status, 200);
    }
    assert_eq!((a.hits() - a0, b.hits() - b0), (30, 10), "3:1 weights");

    // One node down: requests without a body go to the live node instead.
    let dead = format!("127.0.0.1:{}", free_port());
    put(&mut s.client, "/sluice/upstreams/half", json!({"nodes": {dead: 1, b.addr().to_string(): 1}})).await;
    s.route("half", json!({"uri": "/half", "upstream_id": "half"})).await;
    for _ in 0..6 {
        assert_eq!(get(addr, "x", "/half").await.unwrap().backend().as_deref(), Some("b"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_h2c_with_prior_knowledge() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let mut s = setup().await;
    let a = EchoServer::start("a").await.unwrap();
    s.route("h2", json!({"uri": "/h2", "upstream": {"nodes": {a.addr().to_string(): 1}}})).await;
    let stream = tokio::net::TcpStream::connect(s.dp.http_addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://x/h2").body(Empty::<Bytes>::new()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echoed: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echoed["backend"], "a");
    assert_eq!(echoed["headers"]["host"], "x", "the :authority becomes the Host upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish() {
    use tokio::io::AsyncWriteExt;

    let mut s = setup().await;
    // A node that answers after 500 ms.
    let slow = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_addr = slow.local_addr().unwrap();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = slow.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow").await;
            });
        }
    });
    s.route("slow", json!({"uri": "/slow", "upstream": {"nodes": {slow_addr.to_string(): 1}}})).await;
    let addr = s.dp.http_addr();
    let before = received.load(std::sync::atomic::Ordering::SeqCst);
    let in_flight = tokio::spawn(async move { get(addr, "x", "/slow").await });
    let reached = || async { received.load(std::sync::atomic::Ordering::SeqCst) > before };
    assert!(sluice_testkit::eventually(SETTLE, reached).await, "request reached the node");
    let Setup { dp, _etcd, .. } = s;
    let stopped = tokio::spawn(dp.shutdown());
    let reply = in_flight.await.unwrap().unwrap();
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "slow"));
    stopped.await.unwrap();
    assert!(get(addr, "x", "/slow").await.is_err(), "no longer accepting");
}

/// `nodes` as APISIX's `{"host:port": weight}` map, every weight 1.
fn node_map<'a>(addrs: impl IntoIterator<Item = &'a String>) -> Value {
    Value::Object(addrs.into_iter().map(|a| (a.clone(), json!(1))).collect())
}

async fn retries(admin: std::net::SocketAddr, upstream: &str) -> f64 {
    metric(admin, &format!(r#"sluice_upstream_retries_total{{upstream="{upstream}"}}"#)).await.unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_go_to_other_nodes_within_limits() {
    let mut s = setup().await;
    let (addr, admin) = (s.dp.http_addr(), s.dp.admin_addr());
    let a = EchoServer::start("a").await.unwrap();
    let dead: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();

    // Default retries: every node may be tried once, so three dead nodes never fail a request.
    let live = a.addr().to_string();
    put(&mut s.client, "/sluice/upstreams/many", json!({"nodes": node_map(dead.iter().chain([&live]))})).await;
    s.route("many", json!({"uri": "/many", "upstream_id": "many"})).await;
    for _ in 0..8 {
        assert_eq!(get(addr, "x", "/many").await.unwrap().backend().as_deref(), Some("a"));
    }
    assert!(retries(admin, "many").await > 0.0);
    let latency = metric(admin, r#"sluice_upstream_latency_seconds_count{upstream="many"}"#).await;
    assert!(latency.unwrap() >= 8.0, "{latency:?}");

    // Never the same node twice: with only dead nodes and more retries than nodes, 3 tries then 502.
    put(&mut s.client, "/sluice/upstreams/dead", json!({"retries": 10, "nodes": node_map(&dead)})).await;
    s.route("dead", json!({"uri": "/dead", "upstream_id": "dead"})).await;
    let before = retries(admin, "dead").await;
    assert_eq!(get(addr, "x", "/dead").await.unwrap().status, 502);
    assert_eq!(retries(admin, "dead").await - before, 2.0, "two retries: each other node once");

    // retries 0: the first connect failure answers 502. Round robin alternates, so half fail.
    let half = [dead[0].clone(), live.clone()];
    put(&mut s.client, "/sluice/upstreams/once", json!({"retries": 0, "nodes": node_map(&half)})).await;
    s.route("once", json!({"uri": "/once", "upstream_id": "once"})).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(addr, "x", "/once").await.unwrap().status.as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 502, 502]);
    assert_eq!(retries(admin, "once").await, 0.0);

    // retry_timeout: once it has passed, no new attempt starts.
    put(&mut s.client, "/sluice/upstreams/hurry", json!({"retry_timeout": 0.000001, "nodes": node_map(&dead)})).await;
    s.route("hurry", json!({"uri": "/hurry", "upstream_id": "hurry"})).await;
    let before = retries(admin, "hurry").await;
    assert_eq!(get(addr, "x", "/hurry").await.unwrap().status, 502);
    assert_eq!(retries(admin, "hurry").await, before, "no retry after retry_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_overrides_the_upstreams() {
    use tokio::io::AsyncWriteExt;

    let mut s = setup().await;
    // A keep-alive node that answers paths containing "slow" after 1.5 s, others at once.
    let slow = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_addr = slow.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = slow.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    if String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().contains("slow") {
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                    }
                    if stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let short = json!({"connect": 0.2, "send": 0.2, "read": 0.2});
    let upstream = json!({"timeout": short, "nodes": {slow_addr: 1}, "keepalive_pool": {"size": 1}});
    put(&mut s.client, "/sluice/upstreams/slow", upstream).await;
    s.route("short", json!({"uri": "/short/*", "upstream_id": "slow"})).await;
    let long = json!({"connect": 1, "send": 5, "read": 5});
    s.route("long", json!({"uri": "/long/*", "upstream_id": "slow", "timeout": long})).await;
    let addr = s.dp.http_addr();
    // The one pooled connection first carries a request with the long deadline; the short one must still hold
    // for the next request on it.
    assert_eq!(get(addr, "x", "/long/fast").await.unwrap().status, 200);
    let started = Instant::now();
    assert_eq!(get(addr, "x", "/short/slow").await.unwrap().status, 504, "the upstream's read timeout");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    let reply = get(addr, "x", "/long/slow").await.unwrap();
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "slow"), "the route's timeout wins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chash_sends_a_key_to_the_same_node() {
    let mut s = setup().await;
    let echoes = [EchoServer::start("a").await.unwrap(), EchoServer::start("b").await.unwrap()];
    let addrs: Vec<String> = echoes.iter().map(|e| e.addr().to_string()).collect();
    let upstream = json!({"type": "chash", "hash_on": "vars", "key": "arg_user", "nodes": node_map(&addrs)});
    s.route("ch", json!({"uri": "/ch", "upstream": upstream})).await;
    let addr = s.dp.http_addr();
    let mut seen = std::collections::HashSet::new();
    for user in 0..20 {
        let path = format!("/ch?user={user}");
        let first = get(addr, "x", &path).await.unwrap().backend().unwrap();
        for _ in 0..3 {
            assert_eq!(get(addr, "x", &path).await.unwrap().backend().unwrap(), first, "user {user}");
        }
        seen.insert(first);
    }
    assert_eq!(seen.len(), 2, "keys spread over both nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answering_before_the_upload_ends_does_not_hold_up_the_next_request() {
    use tokio::io::AsyncWriteExt;
    let mut s = setup().await;
    // A node that answers 413 as soon as it has the request head, without reading the body, and keeps the
    // connection open: the proxy is then still sending the first client's upload on it.
    let node = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node_addr = node.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = node.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let answer = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let nodes = json!({node_addr.to_string(): 1});
    s.route("upload", json!({"uri": "/upload", "upstream": {"nodes": nodes, "keepalive_pool": {"size": 1}}})).await;
    let addr = s.dp.http_addr();

    // A client that announces a large body, sends a little of it, and stalls.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\npartial").await.unwrap();
    let mut head = [0u8; 12];
    slow.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");

    // The next request must not be queued behind that upload on the same node connection.
    let started = Instant::now();
    let reply = get(addr, "x", "/upload").await.unwrap();
    assert_eq!(reply.status, 413);
    assert!(started.elapsed() < Duration::from_secs(2), "waited {:?} for a busy connection", started.elapsed());
    drop(slow);
}

/// A node written byte by byte: it answers each request on a connection with what `script` returns for the
/// request's first line and its number on that connection (`None` closes the connection without answering), and
/// counts the connections it accepted.
async fn scripted_node(
    script: fn(&str, usize) -> Option<&'static [u8]>,
) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;
    let node = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = node.local_addr().unwrap();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = node.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut seen, mut buf, mut nth) = (Vec::new(), [0u8; 4096], 0);
                loop {
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end]).into_owned();
                        seen.drain(..end + 4);
                        let line = head.lines().next().unwrap_or_default().to_string();
                        nth += 1;
                        let Some(answer) = script(&line, nth) else { return };
                        if stream.write_all(answer).await.is_err() || line.contains("/close") {
                            return;
                        }
                    }
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_every_kind_of_node_response() {
    use std::sync::atomic::Ordering;
    let mut s = setup().await;
    let (node, accepted) = scripted_node(|line, _| {
        Some(match line {
            l if l.contains("/chunked") => {
                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: x-hop\r\nx-hop: 1\r\n\
                   keep-alive: timeout=5\r\nx-kept: 1\r\n\r\n5;ext\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n"[..]
            }
            l if l.contains("/close") => b"HTTP/1.1 200 OK\r\n\r\nuntil close",
            l if l.contains("/interim") => {
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
                  HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
            }
            l if l.starts_with("HEAD") => b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
            _ => b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n",
        })
    })
    .await;
    s.route("script", json!({"uri": "/s/*", "upstream": {"nodes": {node.to_string(): 1}}})).await;
    let addr = s.dp.http_addr();
    // The route's settling request opened the one connection the following answers all reuse.
    let before = accepted.load(Ordering::SeqCst);
    assert_eq!(before, 1);

    for _ in 0..3 {
        let reply = get(addr, "x", "/s/chunked").await.unwrap();
        assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "hello world"));
        assert_eq!(reply.headers["x-kept"], "1");
        // (Transfer-Encoding is the proxy's own framing towards the client, not the node's.)
        for hop in ["x-hop", "keep-alive", "connection"] {
            assert!(!reply.headers.contains_key(hop), "{hop} passed on");
        }
        let reply = get(addr, "x", "/s/interim").await.unwrap();
        assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "ok"), "interim answers are skipped");
        let reply = request(addr, Method::HEAD, "x", "/s/head", &[], Bytes::new()).await.unwrap();
        assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, ""));
        assert_eq!(reply.headers["content-length"], "10");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), before, "chunked, interim and HEAD answers keep the connection");

    let reply = get(addr, "x", "/s/close").await.unwrap();
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "until close"));
    let reply = get(addr, "x", "/s/chunked").await.unwrap();
    assert_eq!(reply.body, "hello world");
    assert_eq!(accepted.load(Ordering::SeqCst), before + 1, "a close-delimited body uses up its connection");

    // A chunked upload is passed on chunked, and the node's echo shows it arrived whole.
    let echo = EchoServer::start("e").await.unwrap();
    s.route("echo", json!({"uri": "/echo", "upstream": {"nodes": {echo.addr().to_string(): 1}}})).await;
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let upload = b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
                   5\r\nhello\r\n7\r\n chunks\r\n0\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut client, upload).await.unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""body":"hello chunks""#), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_closed_by_the_node_is_replaced_for_requests_safe_to_resend() {
    use std::sync::atomic::Ordering;
    let mut s = setup().await;
    // Each connection carries one answer; the node closes it when the next request arrives on it, unanswered, as
    // a node whose keep-alive timeout ends just as the proxy reuses the connection.
    let (node, accepted) =
        scripted_node(|_, nth| (nth == 1).then_some(&b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..])).await;
    let upstream = json!({"nodes": {node.to_string(): 1}, "retries": 0});
    s.route("flaky", json!({"uri": "/flaky", "upstream": upstream})).await;
    let addr = s.dp.http_addr();
    for _ in 0..3 {
        let reply = get(addr, "x", "/flaky").await.unwrap();
        assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "ok"), "a GET is sent again");
    }
    let used = accepted.load(Ordering::SeqCst);
    // A request with a body may have been acted on: it is not sent twice.
    let reply = request(addr, Method::POST, "x", "/flaky", &[], Bytes::from_static(b"once")).await.unwrap();
    assert_eq!(reply.status, 502);
    assert_eq!(accepted.load(Ordering::SeqCst), used, "the POST was not sent again");
}
