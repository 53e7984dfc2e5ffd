//! Edge limits over raw sockets: oversized and too many header fields (431), an overlong target (414), a declared
//! body over the limit (413, while one under it passes), and the connection limit (a client beyond it waits to be
//! accepted and is served once a slot frees).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::json;
use sluice_dataplane::listener::Limits;
use sluice_dataplane::{Dataplane, Options};
use sluice_testkit::{EchoServer, Etcd, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `head` (and `body`) on a new connection that closes after the answer; returns the status.
async fn status_of(addr: SocketAddr, head: &str, body: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let _ = stream.write_all(body).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

async fn start(limits: Limits) -> (Etcd, EchoServer, Dataplane) {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let echo = EchoServer::start("echo").await.unwrap();
    put(&mut client, "/sluice/routes/all", json!({"uri": "/*", "upstream": {"nodes": {echo.addr().to_string(): 1}}}))
        .await;
    let opts = Options { limits, ..loopback(&etcd.endpoint(), false) };
    let dp = sluice_dataplane::start(opts).await.unwrap();
    assert!(wait_served(dp.http_addr(), "x", "/ready", Some("echo")).await);
    (etcd, echo, dp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_get_their_status() {
    let limits = Limits {
        max_header_bytes: 8192,
        max_headers: 20,
        max_uri_bytes: 1024,
        max_body_bytes: Some(1000),
        ..Limits::default()
    };
    let (_etcd, _echo, dp) = start(limits).await;
    let http = dp.http_addr();
    let get =
        |extra: String, target: String| format!("GET {target} HTTP/1.1\r\nhost: x\r\n{extra}connection: close\r\n\r\n");
    assert_eq!(status_of(http, &get(String::new(), "/ok".into()), b"").await, 200);
    let big_field = format!("x-big: {}\r\n", "a".repeat(10_000));
    assert_eq!(status_of(http, &get(big_field, "/".into()), b"").await, 431);
    let many: String = (0..30).map(|i| format!("x-f{i}: v\r\n")).collect();
    assert_eq!(status_of(http, &get(many, "/".into()), b"").await, 431);
    assert_eq!(status_of(http, &get(String::new(), format!("/{}", "p".repeat(1100))), b"").await, 414);
    let post =
        |len: usize| format!("POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n");
    assert_eq!(status_of(http, &post(2000), &[b'a'; 2000]).await, 413);
    assert_eq!(status_of(http, &post(500), &[b'a'; 500]).await, 200);
    // A chunked body shows its size only on the way: refused once it passes the limit.
    let chunked = "POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    let chunk = format!("258\r\n{}\r\n", "a".repeat(600));
    let over = format!("{chunk}{chunk}{chunk}0\r\n\r\n");
    assert_eq!(status_of(http, chunked, over.as_bytes()).await, 413);
    let under = format!("{chunk}0\r\n\r\n");
    assert_eq!(status_of(http, chunked, under.as_bytes()).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_for_a_slot() {
    let (_etcd, _echo, dp) = start(Limits { max_connections: 2, ..Limits::default() }).await;
    let http = dp.http_addr();
    // Two keep-alive connections hold both slots (wait_served's own connections have closed by now).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = TcpStream::connect(http).await.unwrap();
        conn.write_all(b"GET /hold HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 1024];
        let n = conn.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(conn);
    }
    // A third client connects (the kernel queues it) but is not served while both slots are taken...
    let third = tokio::spawn(status_of_owned(http));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "served beyond the connection limit");
    // ...and is served as soon as one closes.
    drop(held.pop());
    let served = eventually(SETTLE, || async { third.is_finished() }).await;
    assert!(served, "the waiting client was never served");
    assert_eq!(third.await.unwrap(), 200);
}

async fn status_of_owned(addr: SocketAddr) -> u16 {
    status_of(addr, "GET /third HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", b"").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_are_the_clients_time_not_the_nodes() {
    let limits = Limits { body_timeout: Duration::from_secs(1), ..Limits::default() };
    let (etcd, echo, dp) = start(limits).await;
    let mut client = etcd.client().await.unwrap();
    // A one-second read timeout: an upload that takes longer must still be answered, as the node answers at once
    // once the body is in.
    let route = json!({"uri": "/upload", "timeout": {"connect": 1, "send": 1, "read": 1},
        "upstream": {"nodes": {echo.addr().to_string(): 1}}});
    put(&mut client, "/sluice/routes/upload", route).await;
    let http = dp.http_addr();
    assert!(wait_served(http, "x", "/upload", Some("echo")).await);
    let mut slow = TcpStream::connect(http).await.unwrap();
    slow.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 12\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    for piece in [b"ab", b"cd", b"ef", b"gh", b"ij", b"kl"] {
        tokio::time::sleep(Duration::from_millis(500)).await;
        slow.write_all(piece).await.unwrap();
    }
    let mut answer = Vec::new();
    slow.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "a 3 s upload under a 1 s read timeout is answered: {text}");
    assert!(text.contains("abcdefghijkl"), "the whole body reached the node: {text}");

    // A client that stops sending gets 408 after the body timeout, and the node is not blamed.
    let mut stalled = TcpStream::connect(http).await.unwrap();
    stalled.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(SETTLE, async {
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "a stalled upload is answered");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let gateway_timeouts = metric(dp.admin_addr(), r#"sluice_http_requests_total{code="504"}"#).await;
    assert!(gateway_timeouts.is_none_or(|t| t == 0.0), "no answer was a node timeout: {gateway_timeouts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_control_sets_a_routes_own_body_limit() {
    let (etcd, echo, dp) = start(Limits { max_body_bytes: Some(1000), ..Limits::default() }).await;
    let mut client = etcd.client().await.unwrap();
    let nodes = json!({echo.addr().to_string(): 1});
    for (id, size) in [("bigger", 5000), ("smaller", 100), ("unlimited", 0)] {
        let route = json!({"uri": format!("/{id}"), "plugins": {"client-control": {"max_body_size": size}},
            "upstream": {"nodes": nodes}});
        put(&mut client, &format!("/sluice/routes/{id}"), route).await;
    }
    let http = dp.http_addr();
    let post = |path: &str, len: usize| {
        format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n")
    };
    let body = vec![b'a'; 2000];
    // The catch-all answers these paths until the routes are in: wait for the last one put to raise the limit.
    let routed = eventually(SETTLE, || async { status_of(http, &post("/unlimited", 2000), &body).await == 200 }).await;
    assert!(routed, "the client-control routes were never served");
    assert_eq!(status_of(http, &post("/bigger", 2000), &body).await, 200, "the route raises the limit");
    assert_eq!(status_of(http, &post("/unlimited", 2000), &body).await, 200, "0 lifts it");
    assert_eq!(status_of(http, &post("/smaller", 500), &body[..500]).await, 413, "the route lowers it");
    assert_eq!(status_of(http, &post("/ready", 2000), &body).await, 413, "elsewhere the listener's holds");
    // A chunked body on the smaller route is cut at its limit too.
    let chunked = "POST /smaller HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    let over = format!("c8\r\n{}\r\n0\r\n\r\n", "a".repeat(200));
    assert_eq!(status_of(http, chunked, over.as_bytes()).await, 413);
}
