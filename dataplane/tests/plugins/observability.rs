//! http-logger, opentelemetry and the access log: entries reach a real log server in batches, a dead one slows
//! nothing, trace context is continued or started, and every request gets an access log line.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sluice_testkit::{eventually, free_port};

use super::{Stack, upstream_saw};

/// A log server that keeps every body POSTed to it.
async fn log_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
    let kept = bodies.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let kept = kept.clone();
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        kept.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    (addr, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_logger_batches_entries_off_the_request_path() {
    let mut s = Stack::start().await;
    let (addr, bodies) = log_server().await;
    s.consumer("jack", json!({"key-auth": {"key": "k1"}})).await;
    s.route(
        "r",
        json!({"uri": "/logged", "plugins": {"key-auth": {}, "http-logger": {
        "uri": format!("http://{addr}/logs"), "batch_max_size": 2, "inactive_timeout": 1}}}),
    )
    .await;
    s.route(
        "custom",
        json!({"uri": "/custom", "plugins": {"http-logger": {"uri": format!("http://{addr}/c"),
        "batch_max_size": 1, "log_format": {"host": "$host", "ip": "$remote_addr", "status": "$status", "lit": 7}}}}),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(s.get_with("/logged?a=1", &[("apikey", "k1")]).await.status, 200);
    }
    assert!(eventually(Duration::from_secs(5), || async { !bodies.lock().unwrap().is_empty() }).await);
    let batch: Value = serde_json::from_str(&bodies.lock().unwrap()[0]).unwrap();
    let entries = batch.as_array().expect("a batch is a JSON array");
    assert_eq!(entries.len(), 2);
    let e = &entries[0];
    assert_eq!(e["route_id"], "r");
    assert_eq!(e["consumer"]["username"], "jack");
    assert_eq!(e["request"]["method"], "GET");
    assert_eq!(e["request"]["uri"], "/logged?a=1");
    assert_eq!(e["request"]["querystring"]["a"], "1");
    assert_eq!(e["response"]["status"], 200);
    assert_eq!(e["client_ip"], "127.0.0.1");
    assert!(e["upstream"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(e["latency"].as_f64().unwrap() >= e["upstream_latency"].as_f64().unwrap());

    bodies.lock().unwrap().clear();
    assert_eq!(s.get("/custom").await.status, 200);
    assert!(eventually(Duration::from_secs(5), || async { !bodies.lock().unwrap().is_empty() }).await);
    let entry: Value = serde_json::from_str(&bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(
        entry,
        json!({"host": "x", "ip": "127.0.0.1", "status": 200, "lit": 7, "route_id": "custom", "service_id": ""})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_log_server_slows_nothing() {
    let mut s = Stack::start().await;
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let dead = format!("127.0.0.1:{}", free_port());
    s.route(
        "slow",
        json!({"uri": "/slow", "plugins": {"http-logger": {"uri": format!("http://{silent_addr}/"),
        "batch_max_size": 1, "timeout": 30, "max_pending_entries": 2, "name": "silent"}}}),
    )
    .await;
    s.route(
        "dead",
        json!({"uri": "/dead", "plugins": {"http-logger": {"uri": format!("http://{dead}/"), "batch_max_size": 1,
        "max_retry_count": 1, "name": "dead"}}}),
    )
    .await;
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(s.get("/slow").await.status, 200);
        assert_eq!(s.get("/dead").await.status, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(5), "requests never wait for the log sink");
    let dropped = s.metric(r#"sluice_log_entries_dropped_total{logger="silent"}"#).await.unwrap_or(0.0);
    assert!(dropped > 0.0, "a full queue drops entries and counts them");
    let failed = || async { s.metric(r#"sluice_log_batches_failed_total{logger="dead"}"#).await.unwrap_or(0.0) > 0.0 };
    assert!(eventually(Duration::from_secs(10), failed).await, "undeliverable batches are counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opentelemetry_continues_or_starts_the_trace() {
    let mut s = Stack::start().await;
    s.route("t", json!({"uri": "/t", "plugins": {"opentelemetry": {"sampler": {"name": "always_on"}}}})).await;
    s.route("p", json!({"uri": "/p", "plugins": {"opentelemetry": {"sampler": {"name": "parent_base"}}}})).await;
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let seen = upstream_saw(&s.get_with("/t", &[("traceparent", incoming), ("tracestate", "k=v")]).await);
    let sent = seen["headers"]["traceparent"].as_str().unwrap().to_string();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts[1], "0af7651916cd43dd8448eb211c80319c", "the client's trace continues");
    assert_ne!(parts[2], "b7ad6b7169203331", "with sluice's own span as the parent");
    assert_eq!(parts[3], "01", "always_on samples");
    assert_eq!(seen["headers"]["tracestate"], "k=v");
    let seen = upstream_saw(&s.get("/t").await);
    let started = seen["headers"]["traceparent"].as_str().unwrap();
    assert_eq!(started.len(), 55);
    let seen = upstream_saw(&s.get_with("/p", &[("traceparent", incoming)]).await);
    assert!(seen["headers"]["traceparent"].as_str().unwrap().ends_with("-00"), "parent_base follows the parent");
    let seen = upstream_saw(&s.get_with("/p", &[("traceparent", "00-nonsense")]).await);
    assert_ne!(seen["headers"]["traceparent"], "00-nonsense");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_an_access_log_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let log = sluice_dataplane::plugins::access_log::AccessLog {
        target: sluice_dataplane::plugins::access_log::Target::File(path.clone()),
        fields: [
            "remote_addr",
            "request_method",
            "request_uri",
            "status",
            "route_id",
            "upstream_addr",
            "http_user_agent",
        ]
        .map(String::from)
        .to_vec(),
    };
    let mut s = Stack::with_access_log(log).await;
    s.route("r", json!({"uri": "/r"})).await;
    assert_eq!(s.get_with("/r?x=1", &[("user-agent", "tester")]).await.status, 200);
    assert_eq!(s.get("/missing").await.status, 404);
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    assert!(eventually(Duration::from_secs(5), || async { read().contains("/missing") }).await);
    let lines: Vec<Value> = read().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let line = lines.iter().find(|l| l["request_uri"] == "/r?x=1").expect("the routed request is logged");
    assert_eq!(line["status"], 200);
    assert_eq!(line["route_id"], "r");
    assert_eq!(line["http_user_agent"], "tester");
    assert!(line["upstream_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    let missing = lines.iter().find(|l| l["request_uri"] == "/missing").unwrap();
    assert_eq!((missing["status"].clone(), missing["route_id"].clone()), (json!(404), Value::Null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_logger_sends_to_https_sinks() {
    let mut s = Stack::start().await;
    // A TLS server signed by the testkit's CA, which the stack's data plane trusts (ssl_verify on).
    let sink = sluice_testkit::TlsEchoServer::start("tls-log", sluice_testkit::ClientAuth::None).await.unwrap();
    let uri = format!("https://localhost:{}/logs", sink.addr().port());
    s.route(
        "tls-logged",
        json!({"uri": "/tls-logged", "plugins": {"http-logger": {"uri": uri, "ssl_verify": true, "batch_max_size": 1,
            "name": "tls-sink"}}}),
    )
    .await;
    assert_eq!(s.get("/tls-logged").await.status, 200);
    // A completed handshake means the data plane accepted the sink's certificate (it aborts one it cannot verify).
    assert!(
        eventually(Duration::from_secs(10), || async { sink.handshakes() >= 1 }).await,
        "the entry went to the https sink"
    );
}
