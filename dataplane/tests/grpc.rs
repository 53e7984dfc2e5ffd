//! gRPC through the data plane with real peers (tonic servers: the standard health service and the testkit's echo
//! service; tonic clients): unary, server-streaming and bidirectional calls over h2c and through `scheme: grpc`
//! and `grpcs` upstreams, statuses carried in trailers both ways, many concurrent calls multiplexed on one
//! connection to the node, and the data plane's own errors (no route, no node, the read timeout) answered as gRPC
//! statuses.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use futures::StreamExt;
use serde_json::json;
use sluice_testkit::{Etcd, eventually};
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::{Channel, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus as Wire};
use tonic_health::server::HealthReporter;

/// A gRPC health server on loopback (over TLS with `tls`), counting the connections it accepts.
async fn node(tls: Option<Identity>) -> (SocketAddr, HealthReporter, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let incoming = futures::stream::unfold((listener, accepted.clone()), |(listener, count)| async move {
        let next = listener.accept().await.map(|(stream, _)| stream);
        count.fetch_add(1, Ordering::Relaxed);
        Some((next, (listener, count)))
    });
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status("shop.Orders", ServingStatus::Serving).await;
    let mut builder = Server::builder();
    if let Some(identity) = tls {
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity)).unwrap();
    }
    tokio::spawn(builder.add_service(service).serve_with_incoming(incoming));
    (addr, reporter, accepted)
}

async fn client(dp: SocketAddr) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{dp}")).unwrap().connect().await.unwrap();
    HealthClient::new(channel)
}

async fn check(client: &mut HealthClient<Channel>, service: &str) -> Result<i32, tonic::Status> {
    let req = HealthCheckRequest { service: service.to_string() };
    client.check(req).await.map(|r| r.into_inner().status)
}

/// Waits until a check of `shop.Orders` through `client` gives what `want` accepts.
async fn until(client: &HealthClient<Channel>, want: fn(&Result<i32, tonic::Status>) -> bool) -> bool {
    eventually(SETTLE, || {
        let mut c = client.clone();
        async move { want(&check(&mut c, "shop.Orders").await) }
    })
    .await
}

fn route(uri: &str, scheme: &str, node: SocketAddr) -> serde_json::Value {
    json!({"uri": uri, "upstream": {"scheme": scheme, "nodes": {node.to_string(): 1}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_stream_and_multiplex_through_the_data_plane() {
    let etcd = Etcd::start().await.unwrap();
    let mut etcd_client = etcd.client().await.unwrap();
    let (addr, reporter, accepted) = node(None).await;
    put(&mut etcd_client, "/sluice/routes/health", route("/grpc.health.v1.Health/*", "grpc", addr)).await;
    let dp = ready_dataplane(&etcd.endpoint()).await;
    // The client speaks HTTP/2 without TLS (prior knowledge) to the plain listener.
    let mut client = client(dp.http_addr()).await;
    assert!(until(&client, Result::is_ok).await, "the gRPC route was never served");
    assert_eq!(check(&mut client, "shop.Orders").await.unwrap(), Wire::Serving as i32);
    // The node's own error status comes through in its trailers.
    let missing = check(&mut client, "shop.Unknown").await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    // Server streaming: the first status, then a change pushed by the node.
    let mut watch = client.watch(HealthCheckRequest { service: "shop.Orders".into() }).await.unwrap().into_inner();
    let first = tokio::time::timeout(SETTLE, watch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.status, Wire::Serving as i32);
    reporter.set_service_status("shop.Orders", ServingStatus::NotServing).await;
    let second = tokio::time::timeout(SETTLE, watch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(second.status, Wire::NotServing as i32);
    drop(watch);

    // Many concurrent calls share one connection to the node.
    let before = accepted.load(Ordering::Relaxed);
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let mut c = client.clone();
            tokio::spawn(async move { check(&mut c, "shop.Orders").await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), Wire::NotServing as i32);
    }
    assert_eq!(accepted.load(Ordering::Relaxed), before, "no new connection to the node: {before} before");
    assert_eq!(before, 1, "one connection to the node carried every call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcs_nodes_and_gateway_errors_as_grpc_statuses() {
    let etcd = Etcd::start().await.unwrap();
    let mut etcd_client = etcd.client().await.unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let identity = Identity::from_pem(cert.cert.pem(), cert.signing_key.serialize_pem());
    let (tls_node, _reporter, _) = node(Some(identity)).await;
    put(&mut etcd_client, "/sluice/routes/health", route("/grpc.health.v1.Health/*", "grpcs", tls_node)).await;
    let dp = ready_dataplane(&etcd.endpoint()).await;
    let mut client = client(dp.http_addr()).await;
    assert!(until(&client, Result::is_ok).await, "the grpcs node was never reached");
    assert_eq!(check(&mut client, "shop.Orders").await.unwrap(), Wire::Serving as i32);

    // No node listening: UNAVAILABLE with the reason, not an HTTP error.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    put(&mut etcd_client, "/sluice/routes/health", route("/grpc.health.v1.Health/*", "grpc", closed)).await;
    let unavailable = until(&client, |r| r.as_ref().is_err_and(|s| s.code() == Code::Unavailable)).await;
    assert!(unavailable, "a node that cannot be reached is UNAVAILABLE");
    let status = check(&mut client, "shop.Orders").await.unwrap_err();
    assert!(status.message().contains("502"), "{status:?}");
    // No route: UNIMPLEMENTED.
    delete(&mut etcd_client, "/sluice/routes/health").await;
    let unimplemented = until(&client, |r| r.as_ref().is_err_and(|s| s.code() == Code::Unimplemented)).await;
    assert!(unimplemented, "a call no route matches is UNIMPLEMENTED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_streams_flow_and_deadlines_are_grpc_statuses() {
    use sluice_testkit::grpc::pb::echo_client::EchoClient;
    use sluice_testkit::grpc::pb::{Delay, Message};

    let etcd = Etcd::start().await.unwrap();
    let mut etcd_client = etcd.client().await.unwrap();
    let node = sluice_testkit::GrpcEchoServer::start("echo-1").await.unwrap();
    let upstream = json!({"scheme": "grpc", "nodes": {node.addr().to_string(): 1}});
    put(&mut etcd_client, "/sluice/routes/echo", json!({"uri": "/sluice.test.Echo/*", "upstream": upstream})).await;
    // The same service with a one-second read timeout, for the deadline.
    let slow = json!({"uri": "/sluice.test.Echo/Slow", "timeout": {"connect": 1, "send": 1, "read": 1},
        "upstream": upstream});
    put(&mut etcd_client, "/sluice/routes/slow", slow).await;
    let collect = json!({"uri": "/sluice.test.Echo/Collect", "timeout": {"connect": 1, "send": 1, "read": 1},
        "upstream": upstream});
    put(&mut etcd_client, "/sluice/routes/collect", collect).await;
    let dp = ready_dataplane(&etcd.endpoint()).await;
    let channel = Channel::from_shared(format!("http://{}", dp.http_addr())).unwrap().connect().await.unwrap();
    let mut client = EchoClient::new(channel);
    let served = eventually(SETTLE, || {
        let mut c = client.clone();
        async move { c.unary(Message { text: "hi".into() }).await.is_ok() }
    })
    .await;
    assert!(served, "the gRPC route was never served");
    assert_eq!(client.unary(Message { text: "one".into() }).await.unwrap().into_inner().text, "echo-1: one");

    // Bidirectional: each message is answered before the next is sent, so nothing waits for the stream's end.
    let (tx, rx) = tokio::sync::mpsc::channel::<Message>(1);
    let outgoing = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut replies = client.chat(outgoing).await.unwrap().into_inner();
    for text in ["first", "second", "third"] {
        tx.send(Message { text: text.into() }).await.unwrap();
        let reply = tokio::time::timeout(SETTLE, replies.next()).await.expect("answered while the stream is open");
        assert_eq!(reply.unwrap().unwrap().text, format!("echo-1: {text}"));
    }
    drop(tx);
    assert!(tokio::time::timeout(SETTLE, replies.next()).await.unwrap().is_none(), "the stream ends with the client's");

    // A client stream that takes longer to send than the read timeout is answered: the timeout starts once it ends.
    let messages = futures::stream::iter(["a", "b", "c", "d", "e"]).then(|text| async move {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        Message { text: text.into() }
    });
    let mut slow_client = client.clone();
    let collected = slow_client.collect(messages).await.expect("a 3 s client stream under a 1 s read timeout");
    assert_eq!(collected.into_inner().text, "echo-1: a b c d e");

    // A node slower than the route's read timeout: DEADLINE_EXCEEDED from the data plane.
    let status = client.slow(Delay { millis: 5_000 }).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("504"), "{status:?}");
    assert_eq!(client.slow(Delay { millis: 10 }).await.unwrap().into_inner().text, "echo-1: after 10 ms");
}
