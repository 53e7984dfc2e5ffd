//! api-breaker against a real backend whose answers the test switches between failing and healthy.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use sluice_testkit::{eventually, get};

use super::Stack;

/// A backend answering every request with the status the test sets, counting what it answered.
struct Switchable {
    addr: std::net::SocketAddr,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Switchable {
    async fn start() -> Switchable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (status, hits) = (Arc::new(AtomicU16::new(200)), Arc::new(AtomicU64::new(0)));
        let (s, h) = (status.clone(), hits.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, h) = (s.clone(), h.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        h.fetch_add(1, Ordering::Relaxed);
                        let mut resp = hyper::Response::new(Full::new(Bytes::from_static(b"node")));
                        *resp.status_mut() = http::StatusCode::from_u16(s.load(Ordering::Relaxed)).unwrap();
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Switchable { addr, status, hits, task }
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Switchable {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_breaker_opens_half_opens_and_closes_against_a_failing_node() {
    let mut s = Stack::start().await;
    let node = Switchable::start().await;
    s.route(
        "breaker",
        json!({"uri": "/b", "upstream": {"nodes": {node.addr.to_string(): 1}},
            "plugins": {"api-breaker": {"break_response_code": 502, "break_response_body": "breaker open",
                "break_response_headers": [{"key": "x-breaker", "value": "open"}],
                "unhealthy": {"http_statuses": [500, 503], "failures": 2}, "healthy": {"successes": 1},
                "max_breaker_sec": 3}}}),
    )
    .await;
    assert_eq!(s.get("/b").await.status, 200);
    node.answer(500);
    assert_eq!(s.get("/b").await.status, 500);
    assert_eq!(s.get("/b").await.status, 500);
    // Tripped: answered by the breaker, the node not asked.
    let before = node.hits();
    let r = s.get("/b").await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (502, "breaker open"));
    assert_eq!(r.headers.get("x-breaker").map(|v| v.to_str().unwrap()), Some("open"));
    assert_eq!(node.hits(), before, "an open breaker keeps requests off the node");

    // Still failing when it half-opens: the probe fails and the breaker opens again at once.
    let addr = s.addr();
    let probed =
        eventually(Duration::from_secs(10), || async { get(addr, "x", "/b").await.is_ok_and(|r| r.status == 500) })
            .await;
    assert!(probed, "after its open time the breaker lets a probe through");
    assert_eq!(s.get("/b").await.status, 502, "a failed probe opens it again");

    // The node recovers: the next probe succeeds and closes the breaker.
    node.answer(200);
    let closed =
        eventually(Duration::from_secs(10), || async { get(addr, "x", "/b").await.is_ok_and(|r| r.status == 200) })
            .await;
    assert!(closed, "a probe reaches the recovered node");
    for _ in 0..3 {
        assert_eq!(s.get("/b").await.status, 200, "closed again: requests flow");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_breaker_trips_on_the_failure_rate() {
    let mut s = Stack::start().await;
    let node = Switchable::start().await;
    s.route(
        "rate",
        json!({"uri": "/r", "upstream": {"nodes": {node.addr.to_string(): 1}},
            "plugins": {"api-breaker": {"break_response_code": 503, "unhealthy": {"failures": 100},
                "failure_rate": {"threshold": 0.5, "window": 30, "min_requests": 4}}}}),
    )
    .await;
    for status in [500, 200, 500] {
        node.answer(status);
        assert_eq!(s.get("/r").await.status, status, "fewer than min_requests: no trip");
    }
    node.answer(500);
    assert_eq!(s.get("/r").await.status, 500, "3 of 4 failed: this one trips it");
    let before = node.hits();
    assert_eq!(s.get("/r").await.status, 503);
    assert_eq!(node.hits(), before);
}
