//! Hostile requests over raw sockets: request smuggling attempts (conflicting `Content-Length` and
//! `Transfer-Encoding`, obfuscated `Transfer-Encoding`, repeated and listed lengths) must never get a request to a
//! node that the data plane did not route. A protected prefix refuses everyone; a node behind the public prefix
//! records every request head it receives, and none may name the protected path.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;
use sluice_testkit::Etcd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A node that parses requests as a standards-following HTTP server does (hyper), answers each `200`, and records
/// each request's path: a request smuggled past the data plane's parsing would show here as one of its own.
async fn recording_node() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    record.lock().unwrap().push(req.uri().to_string());
                    async move {
                        let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"ok"),
                        )))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    (addr, seen)
}

/// Sends `raw` and reads until the data plane closes or goes quiet; returns the status codes of its answers.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> Vec<u16> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.match_indices("HTTP/1.1 ").filter_map(|(i, _)| text[i + 9..].get(..3)?.parse().ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_never_reach_a_node_unrouted() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let (node, seen) = recording_node().await;
    let nodes = json!({node.to_string(): 1});
    let deny = json!({"ip-restriction": {"blacklist": ["0.0.0.0/0", "::/0"]}});
    put(&mut client, "/sluice/routes/admin", json!({"uri": "/admin/*", "plugins": deny, "upstream": {"nodes": nodes}}))
        .await;
    put(&mut client, "/sluice/routes/public", json!({"uri": "/*", "upstream": {"nodes": nodes}})).await;
    let dp = ready_dataplane(&etcd.endpoint()).await;
    let http = dp.http_addr();
    assert_eq!(exchange(http, b"GET /public HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await, [200]);

    let smuggled = "GET /admin/secret HTTP/1.1\r\nhost: x\r\n\r\n";
    let attempts = [
        // CL.TE and TE.CL: both framings in one request.
        format!(
            "POST /public HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /public HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 50\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        // Obfuscated Transfer-Encoding.
        format!(
            "POST /public HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /public HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /public HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ntransfer-encoding: identity\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /public HTTP/1.1\r\nhost: x\r\ntransfer-encoding:\tchunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!("POST /public HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"),
        // Two lengths, or a list of them.
        format!("POST /public HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\ncontent-length: 44\r\n\r\n{smuggled}"),
        format!("POST /public HTTP/1.1\r\nhost: x\r\ncontent-length: 0, 44\r\n\r\n{smuggled}"),
        // A chunk size with a sign, and a bare LF inside the head.
        format!("POST /public HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n+0\r\n\r\n{smuggled}"),
        format!("POST /public HTTP/1.1\nhost: x\ncontent-length: 0\n\n{smuggled}"),
    ];
    for attempt in &attempts {
        let statuses = exchange(http, attempt.as_bytes()).await;
        let lines = seen.lock().unwrap().clone();
        assert!(
            !lines.iter().any(|l| l.contains("/admin")),
            "a node received a request the data plane did not route: {lines:?}\nfor {attempt:?} (answers {statuses:?})"
        );
        // Whatever the data plane made of it, a request for /admin that it parsed was refused, not forwarded.
        assert!(statuses.iter().all(|s| [200, 400, 403, 501].contains(s)), "{attempt:?} -> {statuses:?}");
    }
}
