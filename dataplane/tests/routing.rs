//! APISIX routing semantics through real etcd and real sockets: the black-box cases, services, parameters,
//! unresolved references and bad input rejected alone.

mod common;

use common::*;
use serde_json::json;
use sluice_testkit::{EchoServer, Etcd, get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_apisix_routing_over_real_sockets() {
    let etcd = Etcd::start().await.unwrap();
    let mut c = etcd.client().await.unwrap();
    let (a, b) = (EchoServer::start("a").await.unwrap(), EchoServer::start("b").await.unwrap());
    let dp = ready_dataplane(&etcd.endpoint()).await;
    let (addr, admin) = (dp.http_addr(), dp.admin_addr());
    put(&mut c, "/sluice/upstreams/a", json!({"nodes": {a.addr().to_string(): 1}})).await;
    put(&mut c, "/sluice/upstreams/b", json!({"nodes": {b.addr().to_string(): 1}})).await;

    // APISIX black box: `host: foo.com` + `uri: /hello` answers 404 without that Host, 200 with it.
    put(&mut c, "/sluice/routes/hello", json!({"uri": "/hello", "host": "foo.com", "upstream_id": "a"})).await;
    assert!(wait_served(addr, "foo.com", "/hello", Some("a")).await);
    assert_eq!(get(addr, "bar.com", "/hello").await.unwrap().status, 404);
    assert_eq!(get(addr, "foo.com", "/hello/").await.unwrap().status, 404, "/hello/ does not match /hello");

    // Parameters, and a service lending its upstream and hosts.
    put(&mut c, "/sluice/services/s", json!({"upstream_id": "b", "hosts": ["svc.com"]})).await;
    put(&mut c, "/sluice/routes/user", json!({"uri": "/user/:id", "service_id": "s"})).await;
    assert!(wait_served(addr, "svc.com", "/user/7", Some("b")).await);
    assert_eq!(get(addr, "svc.com", "/user/7/more").await.unwrap().status, 404);
    assert_eq!(get(addr, "other.com", "/user/7").await.unwrap().status, 404, "the service's hosts apply");

    // An unresolved reference answers 503 for that route until it resolves.
    put(&mut c, "/sluice/routes/later", json!({"uri": "/later", "service_id": "missing"})).await;
    assert!(
        sluice_testkit::eventually(SETTLE, || async { get(addr, "x", "/later").await.is_ok_and(|r| r.status == 503) })
            .await
    );
    let reply = get(addr, "x", "/later").await.unwrap();
    assert_eq!(reply.json()["error_msg"], "503 Service Unavailable: service missing not found");
    put(&mut c, "/sluice/services/missing", json!({"upstream_id": "a"})).await;
    assert!(wait_served(addr, "x", "/later", Some("a")).await);

    // Bad input rejects that route alone: an unparsable expression, an invalid regex, a conflicting definition.
    // Each answers 503 in its place (fail closed) while the rest keeps serving.
    let before = metric(admin, r#"sluice_config_rejected_total{kind="route"}"#).await.unwrap_or(0.0);
    put(&mut c, "/sluice/routes/expr", json!({"uri": "/expr", "vars": [["arg_a", "=~", "1"]], "upstream_id": "a"}))
        .await;
    put(&mut c, "/sluice/routes/regex", json!({"uri": "/regex", "vars": [["uri", "~~", "("]], "upstream_id": "a"}))
        .await;
    put(
        &mut c,
        "/sluice/routes/conflict",
        json!({"uri": "/conflict", "upstream_id": "a", "upstream": {"nodes": {a.addr().to_string(): 1}}}),
    )
    .await;
    put(&mut c, "/sluice/routes/after", json!({"uri": "/after", "upstream_id": "b"})).await;
    assert!(wait_served(addr, "x", "/after", Some("b")).await);
    for path in ["/expr", "/regex", "/conflict"] {
        let reply = get(addr, "x", path).await.unwrap();
        assert_eq!(reply.status, 503, "{path} is not served");
        let id = path.trim_start_matches('/');
        assert_eq!(reply.json()["error_msg"], format!("503 Service Unavailable: route {id} was rejected"));
    }
    assert_eq!(metric(admin, r#"sluice_config_rejected_total{kind="route"}"#).await, Some(before + 3.0));
    assert_eq!(get(addr, "foo.com", "/hello").await.unwrap().backend().as_deref(), Some("a"), "the rest serves");
}
