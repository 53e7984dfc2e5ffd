//! Path normalisation at the edge, over real sockets: every spelling of a protected path (encoded letters, encoded
//! slashes, doubled slashes, dot segments) is matched as its plain form, so none reaches a broader route; the node
//! receives the normalised path with the query untouched; a broken escape is answered 400.

mod common;

use std::net::SocketAddr;

use common::*;
use serde_json::json;
use sluice_testkit::{EchoServer, Etcd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `GET target` as written (no client library normalises it) and returns the status and the body.
async fn raw_get(addr: SocketAddr, target: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {target} HTTP/1.1\r\nhost: paths.example.test\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spellings_of_a_path_match_its_plain_form() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let echo = EchoServer::start("echo").await.unwrap();
    let nodes = json!({echo.addr().to_string(): 1});
    // The protected prefix refuses everyone; the catch-all would serve anything that slipped past it.
    let deny = json!({"ip-restriction": {"blacklist": ["0.0.0.0/0", "::/0"]}});
    put(&mut client, "/sluice/routes/admin", json!({"uri": "/admin/*", "plugins": deny, "upstream": {"nodes": nodes}}))
        .await;
    put(&mut client, "/sluice/routes/all", json!({"uri": "/*", "upstream": {"nodes": nodes}})).await;
    let dp = ready_dataplane(&etcd.endpoint()).await;
    let http = dp.http_addr();
    assert!(wait_served(http, "paths.example.test", "/open", Some("echo")).await);

    for target in [
        "/admin/users",
        "/%61dmin/users",
        "/admin%2Fusers",
        "/admin%2fusers",
        "//admin/users",
        "/admin//users",
        "/public/../admin/users",
        "/public/%2E%2E/admin/users",
        "/./admin/users",
        "/../../admin/users",
        "/admin/./users?x=1",
    ] {
        let (status, body) = raw_get(http, target).await;
        assert_eq!(status, 403, "{target} must meet the admin route's restriction, got {status} {body}");
    }
    // The node sees what was matched, with the query as the client sent it.
    let (status, body) = raw_get(http, "/x//y/./z/../w?q=%2F..%2F&a=1").await;
    assert_eq!(status, 200, "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["path"], "/x/y/w?q=%2F..%2F&a=1");
    let (status, body) = raw_get(http, "/x/%7euser/%41%20b").await;
    assert_eq!(status, 200, "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["path"], "/x/~user/A%20b", "unreserved escapes decoded, others kept");
    // A broken escape cannot be read: 400 before any route is tried.
    let (status, body) = raw_get(http, "/admin%zzusers").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid percent-encoding"), "{body}");
}
