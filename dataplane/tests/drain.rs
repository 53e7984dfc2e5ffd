//! Shutdown: readiness fails first while the listeners still accept (the drain delay), then they close; and two
//! data plane processes can share a proxy port (SO_REUSEPORT) for a local handover.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use sluice_testkit::{EchoServer, Etcd, eventually, get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_during_the_drain_delay_while_requests_are_still_served() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let echo = EchoServer::start("echo").await.unwrap();
    put(&mut client, "/sluice/routes/r", json!({"uri": "/r", "upstream": {"nodes": {echo.addr().to_string(): 1}}}))
        .await;
    let opts = sluice_dataplane::Options { drain_delay: Duration::from_secs(3), ..loopback(&etcd.endpoint(), false) };
    let dp = sluice_dataplane::start(opts).await.unwrap();
    let (addr, admin) = (dp.http_addr(), dp.admin_addr());
    assert!(wait_served(addr, "x", "/r", Some("echo")).await);

    let stopping = tokio::spawn(dp.shutdown());
    let not_ready =
        eventually(SETTLE, || async { get(admin, "localhost", "/readyz").await.is_ok_and(|r| r.status == 503) });
    assert!(not_ready.await, "readiness fails as soon as shutdown starts");
    let reply = get(addr, "x", "/r").await.unwrap();
    assert_eq!(reply.backend().as_deref(), Some("echo"), "new connections are still served while draining");
    assert_eq!(
        reply.headers.get("connection").map(|v| v.to_str().unwrap()),
        Some("close"),
        "HTTP/1.1 clients are asked to go elsewhere"
    );
    stopping.await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed once shutdown is done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_data_planes_share_a_proxy_port() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let echo = EchoServer::start("echo").await.unwrap();
    put(&mut client, "/sluice/routes/r", json!({"uri": "/r", "upstream": {"nodes": {echo.addr().to_string(): 1}}}))
        .await;
    let port = sluice_testkit::free_port();
    let on_port = || sluice_dataplane::Options {
        http_addr: format!("127.0.0.1:{port}").parse().unwrap(),
        ..loopback(&etcd.endpoint(), false)
    };
    let old = sluice_dataplane::start(on_port()).await.unwrap();
    let new = sluice_dataplane::start(on_port()).await.expect("a second data plane binds the same port");
    assert_eq!(old.http_addr(), new.http_addr());
    assert!(wait_served(new.http_addr(), "x", "/r", Some("echo")).await);
    // The old one leaves; the port stays served by the new one.
    old.shutdown().await;
    let served = eventually(SETTLE, || async { get(new.http_addr(), "x", "/r").await.is_ok_and(|r| r.status == 200) });
    assert!(served.await);
}
