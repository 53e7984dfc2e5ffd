//! WebSocket through the data plane with real peers (tokio-tungstenite on both ends): a route with
//! `enable_websocket` tunnels the upgraded connection, text and binary frames both ways (a large one too); a route
//! without it does not upgrade; an open WebSocket survives its route being changed and deleted; an idle one is
//! closed after the route's read timeout.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use sluice_testkit::{EchoServer, Etcd};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A WebSocket server that echoes every text and binary message, prefixed for text with its name.
async fn ws_echo(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    let reply = match msg {
                        Message::Text(t) => Message::text(format!("{name}: {t}")),
                        Message::Binary(b) => Message::Binary(b),
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if ws.send(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(http: SocketAddr, path: &str) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{http}{path}").into_client_request().unwrap();
    req.headers_mut().insert("host", "ws.example.test".parse().unwrap());
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

async fn round_trip(ws: &mut Client, text: &str) -> String {
    ws.send(Message::text(text)).await.unwrap();
    let next = tokio::time::timeout(SETTLE, ws.next()).await.expect("an answer in time");
    match next {
        Some(Ok(Message::Text(t))) => t.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_routes_tunnel_and_outlive_changes() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let (ws, echo) = (ws_echo("ws-1").await, EchoServer::start("echo").await.unwrap());
    let node = |addr: SocketAddr| json!({"nodes": {addr.to_string(): 1}});
    put(&mut client, "/sluice/routes/ws", json!({"uri": "/ws", "enable_websocket": true, "upstream": node(ws)})).await;
    put(&mut client, "/sluice/routes/plain", json!({"uri": "/plain", "upstream": node(ws)})).await;
    // Through a service: the route leaves `enable_websocket` unset and the service's applies, as in APISIX.
    put(&mut client, "/sluice/services/s", json!({"enable_websocket": true, "upstream": node(ws)})).await;
    put(&mut client, "/sluice/routes/via-service", json!({"uri": "/svc", "service_id": "s"})).await;
    put(&mut client, "/sluice/routes/marker", json!({"uri": "/marker", "upstream": node(echo.addr())})).await;
    let dp = ready_dataplane(&etcd.endpoint()).await;
    let http = dp.http_addr();
    assert!(wait_served(http, "ws.example.test", "/marker", Some("echo")).await);

    let mut open = connect(http, "/ws").await.expect("the WebSocket route upgrades");
    assert_eq!(round_trip(&mut open, "hello").await, "ws-1: hello");
    // A large binary message crosses in both directions intact.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    open.send(Message::binary(big.clone())).await.unwrap();
    match tokio::time::timeout(SETTLE, open.next()).await.unwrap() {
        Some(Ok(Message::Binary(b))) => assert!(b == big, "binary message changed in transit"),
        other => panic!("expected the binary message back, got {other:?}"),
    }
    let mut via_service = connect(http, "/svc").await.expect("the service's enable_websocket applies");
    assert_eq!(round_trip(&mut via_service, "svc").await, "ws-1: svc");
    // Without enable_websocket the Upgrade field is not passed on: the node sees a plain GET and refuses it.
    assert!(connect(http, "/plain").await.is_err(), "a route without enable_websocket does not upgrade");

    // The open WebSocket outlives its route: changed to another node, then deleted.
    let other = ws_echo("ws-2").await;
    put(&mut client, "/sluice/routes/ws", json!({"uri": "/ws", "enable_websocket": true, "upstream": node(other)}))
        .await;
    let switched = sluice_testkit::eventually(SETTLE, || async {
        match connect(http, "/ws").await {
            Ok(mut fresh) => round_trip(&mut fresh, "which").await == "ws-2: which",
            Err(_) => false,
        }
    })
    .await;
    assert!(switched, "new WebSockets go to the new node");
    assert_eq!(round_trip(&mut open, "still here").await, "ws-1: still here", "the open one stays on its node");
    delete(&mut client, "/sluice/routes/ws").await;
    assert!(sluice_testkit::eventually(SETTLE, || async { connect(http, "/ws").await.is_err() }).await);
    assert_eq!(round_trip(&mut open, "after delete").await, "ws-1: after delete");
    open.close(None).await.unwrap();
    drop(dp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websockets_close_after_the_read_timeout() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let ws = ws_echo("ws").await;
    let route = json!({"uri": "/ws", "enable_websocket": true, "timeout": {"connect": 2, "send": 2, "read": 1},
        "upstream": {"nodes": {ws.to_string(): 1}}});
    put(&mut client, "/sluice/routes/ws", route).await;
    let dp = ready_dataplane(&etcd.endpoint()).await;
    let http = dp.http_addr();
    let ready = sluice_testkit::eventually(SETTLE, || async { connect(http, "/ws").await.is_ok() }).await;
    assert!(ready, "the WebSocket route is served");
    let mut open = connect(http, "/ws").await.unwrap();
    // Traffic keeps it open past the timeout...
    let mut last = tokio::time::Instant::now();
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(round_trip(&mut open, &format!("ping {i}")).await, format!("ws: ping {i}"));
        last = tokio::time::Instant::now();
    }
    // ...and silence closes it: the stream ends well before the test's own deadline.
    let ended = tokio::time::timeout(SETTLE, async {
        loop {
            match open.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "an idle WebSocket is closed");
    let quiet = last.elapsed();
    assert!(quiet >= Duration::from_millis(900), "not before the read timeout: closed after {quiet:?} of silence");
    drop(dp);
}
