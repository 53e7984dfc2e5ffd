//! proxy-mirror: copies reach a real mirror; a mirror that never answers changes nothing for real requests.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::json;
use sluice_testkit::{EchoServer, eventually};

use super::{Stack, common, upstream_saw};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_mirror_copies_requests_and_samples() {
    let mut s = Stack::start().await;
    let mirror = EchoServer::start("mirror").await.unwrap();
    let host = format!("http://{}", mirror.addr());
    s.route(
        "all",
        json!({"uri": "/all/*", "plugins": {"proxy-mirror": {"host": host, "path": "/copy",
        "path_concat_mode": "prefix"}}}),
    )
    .await;
    let reply = sluice_testkit::request(s.addr(), Method::POST, "x", "/all/a?q=1", &[], Bytes::from_static(b"payload"))
        .await
        .unwrap();
    assert_eq!(upstream_saw(&reply)["body"], "payload", "the node gets the request as before");
    assert!(eventually(common::SETTLE, || async { mirror.hits() == 1 }).await, "the mirror got a copy");

    s.route("half", json!({"uri": "/half", "plugins": {"proxy-mirror": {"host": host, "sample_ratio": 0.5}}})).await;
    let before = mirror.hits();
    for _ in 0..200 {
        assert_eq!(s.get("/half").await.status, 200);
    }
    let copies = || mirror.hits() - before;
    // 200 draws at one half: within 60..=140 but for odds of about one in a billion.
    assert!(eventually(common::SETTLE, || async { copies() >= 60 }).await, "{} copies", copies());
    assert!(copies() <= 140, "{} copies of 200 at ratio 0.5", copies());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_that_never_answers_changes_nothing_for_real_requests() {
    let mut s = Stack::start().await;
    // A black hole: connections are accepted (by the kernel's backlog) and never answered.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("http://{}", hole.local_addr().unwrap());
    s.route(
        "m",
        json!({"uri": "/m", "plugins": {"proxy-mirror": {"host": host, "queue_size": 4,
        "timeout": 30000}}}),
    )
    .await;
    let started = Instant::now();
    for _ in 0..50 {
        assert_eq!(s.get("/m").await.status, 200);
    }
    // The copies wait on the mirror for up to 30 s each; the requests do not.
    assert!(started.elapsed() < Duration::from_secs(20), "50 requests took {:?}", started.elapsed());
    let dropped = s.metric("sluice_mirror_requests_total{result=\"dropped\"}").await.unwrap_or(0.0);
    assert!(dropped >= 1.0, "with the mirror stuck the queue fills and copies are dropped ({dropped})");
    drop(hole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_go_to_https_mirrors() {
    let mut s = Stack::start().await;
    // The stack's data plane trusts the testkit's CA, which signed the mirror's certificate for localhost.
    let mirror = sluice_testkit::TlsEchoServer::start("tls-mirror", sluice_testkit::ClientAuth::None).await.unwrap();
    let host = format!("https://localhost:{}", mirror.addr().port());
    s.route("tls", json!({"uri": "/tls", "plugins": {"proxy-mirror": {"host": host}}})).await;
    assert_eq!(s.get("/tls").await.status, 200);
    let sent = "sluice_mirror_requests_total{result=\"sent\"}";
    assert!(
        eventually(common::SETTLE, || async { s.metric(sent).await == Some(1.0) }).await,
        "the copy went to the https mirror (handshakes: {})",
        mirror.handshakes()
    );
}
