//! The upstream address policy: nodes at the data plane's etcd endpoint, its admin listener or the metadata
//! service are never dialled with default flags; `upstream_allow` lets them through, `upstream_deny` adds blocks.

mod common;

use common::*;
use serde_json::{Value, json};
use sluice_testkit::{EchoServer, Etcd, eventually, get};

/// Puts upstream `id` with `nodes` and a route `/<id>*` to it, and waits until the route is served.
async fn route(client: &mut etcd_client::Client, addr: std::net::SocketAddr, id: &str, nodes: Value) {
    put(client, &format!("/sluice/upstreams/{id}"), json!({"nodes": nodes, "retries": 0})).await;
    put(client, &format!("/sluice/routes/{id}"), json!({"uri": format!("/{id}*"), "upstream_id": id})).await;
    let routed =
        eventually(SETTLE, || async { get(addr, "x", &format!("/{id}")).await.is_ok_and(|r| r.status != 404) }).await;
    assert!(routed, "route {id} never took effect");
}

async fn refused(admin: std::net::SocketAddr, upstream: &str) -> f64 {
    metric(admin, &format!(r#"sluice_upstream_refused_total{{upstream="{upstream}"}}"#)).await.unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_etcd_the_admin_listener_and_metadata_by_default() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let dp = ready_dataplane(&etcd.endpoint()).await;
    let (addr, admin) = (dp.http_addr(), dp.admin_addr());
    let etcd_node = etcd.endpoint().trim_start_matches("http://").to_string();

    // etcd answers `GET /version` and the admin listener `GET /metrics` over plain HTTP: a 200 would mean
    // the gateway dialled them.
    route(&mut client, addr, "etcd", json!({ etcd_node.as_str(): 1 })).await;
    route(&mut client, addr, "admin", json!({ admin.to_string(): 1 })).await;
    route(&mut client, addr, "admin-by-name", json!({ format!("localhost:{}", admin.port()): 1 })).await;
    route(&mut client, addr, "metadata", json!({"169.254.169.254:80": 1, "[fd00:ec2::254]:80": 1})).await;
    for (id, path) in [
        ("etcd", "/etcd/version"),
        ("admin", "/admin/metrics"),
        ("admin-by-name", "/admin-by-name"),
        ("metadata", "/metadata"),
    ] {
        let before = refused(admin, id).await;
        let reply = get(addr, "x", path).await.unwrap();
        assert_eq!(reply.status, 502, "{id}: {}", reply.body);
        assert_eq!(reply.json()["error_msg"], "502 Bad Gateway");
        assert!(refused(admin, id).await > before, "{id}: the refusal is counted");
    }

    // A node next to them is proxied to as usual.
    let echo = EchoServer::start("echo").await.unwrap();
    route(&mut client, addr, "echo", json!({ echo.addr().to_string(): 1 })).await;
    assert_eq!(get(addr, "x", "/echo").await.unwrap().backend().as_deref(), Some("echo"));

    // Plugins' services are held to the same policy: forward-auth to the admin listener's `/healthz` (which
    // answers 200, and so would admit the request) is never called.
    let auth = json!({"forward-auth": {"uri": format!("http://{admin}/healthz"), "timeout": 1000}});
    let r = json!({"uri": "/guarded", "plugins": auth, "upstream": {"nodes": { echo.addr().to_string(): 1 }}});
    put(&mut client, "/sluice/routes/guarded", r).await;
    let answered =
        eventually(SETTLE, || async { get(addr, "x", "/guarded").await.is_ok_and(|r| r.status != 404) }).await;
    assert!(answered);
    let reply = get(addr, "x", "/guarded").await.unwrap();
    assert_ne!(reply.status, 200, "forward-auth reached the admin listener: {}", reply.body);
    assert_eq!(reply.backend(), None);
    dp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_wins_and_the_deny_list_adds() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let echo = EchoServer::start("echo").await.unwrap();
    let etcd_node = etcd.endpoint().trim_start_matches("http://").to_string();

    let opts = sluice_dataplane::Options {
        upstream_allow: vec![etcd_node.split(':').next().unwrap().to_string()],
        ..loopback(&etcd.endpoint(), false)
    };
    let dp = sluice_dataplane::start(opts).await.unwrap();
    assert!(eventually(SETTLE, || async { dp.is_ready() }).await);
    let nodes = json!({ etcd_node.as_str(): 1 });
    put(&mut client, "/sluice/routes/etcd", json!({"uri": "/version", "upstream": {"nodes": nodes}})).await;
    let served =
        eventually(SETTLE, || async { get(dp.http_addr(), "x", "/version").await.is_ok_and(|r| r.status == 200) });
    assert!(served.await, "the allow-list names etcd's address");
    let reply = get(dp.http_addr(), "x", "/version").await.unwrap();
    assert!(reply.body.contains("etcdserver"), "{}", reply.body);
    dp.shutdown().await;

    // The chart's defaults add loopback: in a pod, loopback is the data plane itself.
    let opts = sluice_dataplane::Options {
        upstream_deny: vec!["127.0.0.0/8".into(), "::1".into()],
        ..loopback(&etcd.endpoint(), false)
    };
    let dp = sluice_dataplane::start(opts).await.unwrap();
    assert!(eventually(SETTLE, || async { dp.is_ready() }).await);
    route(&mut client, dp.http_addr(), "echo", json!({ echo.addr().to_string(): 1 })).await;
    assert_eq!(get(dp.http_addr(), "x", "/echo").await.unwrap().status, 502);
    assert!(refused(dp.admin_addr(), "echo").await >= 1.0);
    dp.shutdown().await;

    let bad =
        sluice_dataplane::Options { upstream_deny: vec!["10.0.0.0/40".into()], ..loopback(&etcd.endpoint(), false) };
    assert!(matches!(sluice_dataplane::start(bad).await, Err(sluice_dataplane::StartError::Policy(_))));
}
