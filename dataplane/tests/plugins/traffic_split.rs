//! traffic-split: match rules and weights (after APISIX's t/plugin/traffic-split*.t), and sluice's stable
//! assignment, which two data plane processes on one etcd must agree on.

use std::collections::HashMap;

use http::Method;
use serde_json::json;
use sluice_testkit::{EchoServer, request};

use super::{Stack, common};

/// `GET path` on `addr` with `headers`: the backend that answered and the tag header it received.
async fn backend_and_tag(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> (String, String) {
    let r = request(addr, Method::GET, "x", path, headers, bytes::Bytes::new()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let tag = r.json()["headers"]["x-gray"].as_str().unwrap_or("").to_string();
    (r.backend().unwrap_or_default(), tag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_match_and_weights_take_turns() {
    let mut s = Stack::start().await;
    let canary = EchoServer::start("canary").await.unwrap();
    s.put("upstreams/canary", json!({"nodes": {canary.addr().to_string(): 1}})).await;
    // APISIX's example: requests with ?name=jack go to the canary; the others stay on the route's upstream.
    s.route(
        "matched",
        json!({"uri": "/matched", "plugins": {"traffic-split": {"rules": [{
            "match": [{"vars": [["arg_name", "==", "jack"]]}],
            "weighted_upstreams": [{"upstream_id": "canary"}]}]}}}),
    )
    .await;
    assert_eq!(s.get("/matched?name=jack").await.backend().as_deref(), Some("canary"));
    assert_eq!(s.get("/matched?name=rose").await.backend().as_deref(), Some("echo"));
    assert_eq!(s.get("/matched").await.backend().as_deref(), Some("echo"));

    // Without a key, the weights take turns: 3 to the canary (an upstream written inline), 1 to the route's.
    let inline = json!({"nodes": {canary.addr().to_string(): 1}, "timeout": {"connect": 2, "send": 2, "read": 2}});
    s.route(
        "weighted",
        json!({"uri": "/weighted", "plugins": {"traffic-split": {"rules": [{"weighted_upstreams": [
            {"upstream": inline, "weight": 3}, {"weight": 1}]}]}}}),
    )
    .await;
    let mut seen: HashMap<String, u32> = HashMap::new();
    for _ in 0..8 {
        *seen.entry(s.get("/weighted").await.backend().unwrap_or_default()).or_default() += 1;
    }
    assert_eq!((seen["canary"], seen["echo"]), (6, 2), "{seen:?}");

    // Fail closed: a share naming an upstream that does not exist makes the route answer 503, whatever it picks.
    s.route(
        "missing",
        json!({"uri": "/missing", "plugins": {"traffic-split": {"rules": [{"weighted_upstreams": [
            {"upstream_id": "nowhere", "weight": 1}, {"weight": 1}]}]}}}),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(s.get("/missing").await.status, 503);
    }
    s.put("upstreams/nowhere", json!({"nodes": {canary.addr().to_string(): 1}})).await;
    s.sync().await;
    assert_eq!(s.get("/missing").await.status, 200, "the route serves once the upstream exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stable_assignment_is_shared_by_data_planes_and_follows_the_weights() {
    let etcd = sluice_testkit::Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let (stable, canary) = (EchoServer::start("stable").await.unwrap(), EchoServer::start("canary").await.unwrap());
    common::put(&mut client, "/sluice/upstreams/canary", json!({"nodes": {canary.addr().to_string(): 1}})).await;
    let split = json!({"hash_on": "header", "key": "x-user", "tag_header": "x-gray", "rules": [{"weighted_upstreams": [
        {"upstream_id": "canary", "weight": 20, "tag": "canary"}, {"weight": 80}]}]});
    let route = json!({"uri": "/app", "upstream": {"nodes": {stable.addr().to_string(): 1}},
        "plugins": {"traffic-split": split}});
    common::put(&mut client, "/sluice/routes/app", route).await;
    let (a, b) = (common::ready_dataplane(&etcd.endpoint()).await, common::ready_dataplane(&etcd.endpoint()).await);
    for dp in [&a, &b] {
        assert!(common::wait_served(dp.http_addr(), "x", "/app", Some("stable")).await);
    }

    let mut in_canary = 0;
    for user in 0..1000 {
        let user = format!("user-{user}");
        let headers = [("x-user", user.as_str())];
        let first = backend_and_tag(a.http_addr(), "/app", &headers).await;
        let again = backend_and_tag(a.http_addr(), "/app", &headers).await;
        let other = backend_and_tag(b.http_addr(), "/app", &headers).await;
        assert_eq!(first, again, "{user} stays where it was");
        assert_eq!(first, other, "{user} is assigned alike by both data planes");
        match first.0.as_str() {
            "canary" => {
                assert_eq!(first.1, "canary", "the canary's requests carry its tag");
                in_canary += 1;
            }
            _ => assert_eq!(first.1, "", "the stable share has no tag"),
        }
    }
    assert!((150..=250).contains(&in_canary), "{in_canary} of 1000 users in a 20% canary (±5% of the total)");
}
