//! The PROXY protocol on both proxy listeners, with real sockets: a v1 header before plain HTTP and a v2 header
//! before a real TLS handshake give the node the load balancer's client (`X-Forwarded-For`, `X-Real-IP`) and port
//! (`X-Forwarded-Port`), and `ip-restriction` judges that client; a connection without a header is closed.

mod common;

use std::net::SocketAddr;

use common::*;
use serde_json::json;
use sluice_dataplane::Options;
use sluice_testkit::{EchoServer, Etcd, TlsClient, TlsClientOptions, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `header` and a GET for `path`, and returns the answer's text.
async fn via_balancer(addr: SocketAddr, header: &[u8], path: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(header).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn body_json(answer: &str) -> serde_json::Value {
    answer.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_a_balancer_are_seen_as_themselves() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let echo = EchoServer::start("echo").await.unwrap();
    let nodes = json!({echo.addr().to_string(): 1});
    put(&mut client, "/sluice/routes/all", json!({"uri": "/*", "upstream": {"nodes": nodes}})).await;
    let only = json!({"ip-restriction": {"whitelist": ["203.0.113.0/24"]}});
    put(&mut client, "/sluice/routes/office", json!({"uri": "/office", "plugins": only, "upstream": {"nodes": nodes}}))
        .await;
    let cert = rcgen::generate_simple_self_signed(vec!["secure.example.test".to_string()]).unwrap();
    let ssl =
        json!({"cert": cert.cert.pem(), "key": cert.signing_key.serialize_pem(), "snis": ["secure.example.test"]});
    put(&mut client, "/sluice/ssls/secure", ssl).await;
    let opts = Options { proxy_protocol: true, ..loopback(&etcd.endpoint(), true) };
    let dp = sluice_dataplane::start(opts).await.unwrap();
    assert!(eventually(SETTLE, || async { dp.is_ready() }).await);
    let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 80\r\n";
    let served =
        eventually(SETTLE, || async { via_balancer(dp.http_addr(), v1, "/hello").await.contains(" 200 ") }).await;
    assert!(served, "the route was never served");

    // v1 before plain HTTP.
    let answer = via_balancer(dp.http_addr(), v1, "/hello").await;
    let headers = &body_json(&answer)["headers"];
    assert_eq!(headers["x-forwarded-for"], "203.0.113.7", "{answer}");
    assert_eq!(headers["x-real-ip"], "203.0.113.7");
    assert_eq!(headers["x-forwarded-port"], "80");
    // The client the balancer names is the one access rules judge.
    assert!(via_balancer(dp.http_addr(), v1, "/office").await.contains(" 200 "));
    let outsider = b"PROXY TCP4 198.51.100.1 10.0.0.1 40000 80\r\n";
    assert!(via_balancer(dp.http_addr(), outsider, "/office").await.contains(" 403 "));

    // v2 before a TLS handshake: the header is read exactly, and TLS follows on the same connection.
    let src: SocketAddr = "[2001:db8::7]:40001".parse().unwrap();
    let dst: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
    let v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (src, dst),
    )
    .build()
    .unwrap();
    let mut tcp = TcpStream::connect(dp.https_addr().unwrap()).await.unwrap();
    tcp.write_all(&v2).await.unwrap();
    let tls = TlsClient::new(TlsClientOptions::default()).unwrap();
    let mut conn = tls.handshake(tcp, Some("secure.example.test")).await.expect("TLS after the PROXY header");
    let reply = conn.get("secure.example.test", "/over-tls").await.unwrap();
    let headers = &reply.json()["headers"];
    assert_eq!(headers["x-forwarded-for"], "2001:db8::7", "{reply:?}");
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert_eq!(headers["x-forwarded-port"], "443");

    // Without a header the connection is closed unanswered.
    let answer = via_balancer(dp.http_addr(), b"", "/hello").await;
    assert!(answer.is_empty(), "answered without a PROXY header: {answer}");
}
