//! The runtime: precedence of one plugin on consumer, route, plugin config and service; global rules; `_meta`;
//! the enabled set; and failing closed.

use serde_json::json;
use sluice_dataplane::plugins::Enabled;

use super::{Stack, upstream_saw};

fn tag(value: &str) -> serde_json::Value {
    json!({"proxy-rewrite": {"headers": {"set": {"x-from": value}}}})
}

/// cors with a distinct `max_age`: it works in the response phase, so a consumer's copy shows too (a consumer's
/// copy of a rewrite-phase plugin the route has never runs, as in APISIX).
fn cors(max_age: i64) -> serde_json::Value {
    json!({"max_age": max_age})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_beats_route_beats_plugin_config_beats_service() {
    let mut s = Stack::start().await;
    let layer = |tag_value: &str, age: i64| {
        let mut p = tag(tag_value);
        p["cors"] = cors(age);
        p
    };
    s.put("services/s", json!({"upstream_id": "u", "plugins": layer("service", 4)})).await;
    s.put("plugin_configs/pc", json!({"plugins": layer("plugin_config", 3)})).await;
    let mut consumer_plugins = json!({"cors": cors(1), "key-auth": {"key": "k1"}});
    s.consumer("jack", consumer_plugins.clone()).await;
    let mut route_plugins = layer("route", 2);
    route_plugins["key-auth"] = json!({});
    s.route("r", json!({"uri": "/r", "service_id": "s", "plugin_config_id": "pc", "plugins": route_plugins})).await;
    let seen = |r: &sluice_testkit::Reply| {
        let from = upstream_saw(r)["headers"]["x-from"].as_str().unwrap_or("").to_string();
        (from, r.headers["access-control-max-age"].to_str().unwrap().to_string())
    };
    let key = [("apikey", "k1")];
    assert_eq!(seen(&s.get_with("/r", &key).await), ("route".into(), "1".into()), "the consumer's cors wins");
    consumer_plugins.as_object_mut().unwrap().remove("cors");
    s.consumer("jack", consumer_plugins).await;
    assert_eq!(seen(&s.get_with("/r", &key).await), ("route".into(), "2".into()));
    let plugins = json!({"key-auth": {}});
    s.route("r", json!({"uri": "/r", "service_id": "s", "plugin_config_id": "pc", "plugins": plugins})).await;
    assert_eq!(seen(&s.get_with("/r", &key).await), ("plugin_config".into(), "3".into()));
    s.route("r", json!({"uri": "/r", "service_id": "s", "plugins": {"key-auth": {}}})).await;
    assert_eq!(seen(&s.get_with("/r", &key).await), ("service".into(), "4".into()));
    // A service's authentication applies to its routes.
    s.put("services/s", json!({"upstream_id": "u", "plugins": {"key-auth": {}}})).await;
    s.route("r", json!({"uri": "/r", "service_id": "s"})).await;
    assert_eq!(s.get("/r").await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_rules_run_on_every_request_even_without_a_route() {
    let mut s = Stack::start().await;
    s.route("plain", json!({"uri": "/plain"})).await;
    s.put("global_rules/1", json!({"plugins": tag("global")})).await;
    s.sync().await;
    assert_eq!(upstream_saw(&s.get("/plain").await)["headers"]["x-from"], "global");
    // A route's own copy runs after the global one (both run).
    s.route("own", json!({"uri": "/own", "plugins": tag("route")})).await;
    assert_eq!(upstream_saw(&s.get("/own").await)["headers"]["x-from"], "route");

    s.consumer("jack", json!({"key-auth": {"key": "k1"}})).await;
    s.put("global_rules/2", json!({"plugins": {"key-auth": {}}})).await;
    s.sync_expecting(401).await;
    assert_eq!(s.get("/plain").await.status, 401);
    assert_eq!(s.get("/no-such-route").await.status, 401, "global rules run before the 404");
    assert_eq!(s.get_with("/no-such-route", &[("apikey", "k1")]).await.status, 404);
    assert_eq!(s.get_with("/plain", &[("apikey", "k1")]).await.status, 200);
    s.delete("global_rules/2").await;
    s.sync().await;
    assert_eq!(s.get("/plain").await.status, 200);

    // A global rule that cannot be honoured, with no good version, keeps everything out (fail closed).
    s.put("global_rules/3", json!({"plugins": {"nope": {}}})).await;
    s.sync_expecting(503).await;
    let r = s.get("/plain").await;
    assert_eq!(r.json()["error_msg"], "503 Service Unavailable: global_rule 3 was rejected");
    s.delete("global_rules/3").await;
    s.sync().await;
    assert_eq!(s.get("/plain").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honours_meta_disable_priority_and_filter() {
    let mut s = Stack::start().await;
    s.consumer("jack", json!({"key-auth": {"key": "k1"}})).await;
    s.route("off", json!({"uri": "/off", "plugins": {"key-auth": {"_meta": {"disable": true}}}})).await;
    assert_eq!(s.get("/off").await.status, 200);
    // A disabled plugin on the route still replaces the service's.
    s.put("services/s", json!({"upstream_id": "u", "plugins": {"key-auth": {}}})).await;
    s.route("svc", json!({"uri": "/svc", "service_id": "s", "plugins": {"key-auth": {"_meta": {"disable": true}}}}))
        .await;
    assert_eq!(s.get("/svc").await.status, 200);

    s.route(
        "filter",
        json!({"uri": "/filter", "plugins": {
        "key-auth": {"_meta": {"filter": [["arg_version", "==", "v2"]]}}}}),
    )
    .await;
    assert_eq!(s.get("/filter?version=v1").await.status, 200);
    assert_eq!(s.get("/filter?version=v2").await.status, 401);

    // By default proxy-rewrite (1008) runs after key-auth (2500): the rewritten header is not what key-auth
    // reads. With a priority above key-auth's it runs first, and supplies the key.
    let rewrite = |priority: Option<i32>| {
        let mut p = json!({"headers": {"set": {"apikey": "k1"}}});
        if let Some(priority) = priority {
            p["_meta"] = json!({"priority": priority});
        }
        json!({"proxy-rewrite": p, "key-auth": {}})
    };
    s.route("order", json!({"uri": "/order", "plugins": rewrite(None)})).await;
    assert_eq!(s.get("/order").await.status, 401);
    s.route("order", json!({"uri": "/order", "plugins": rewrite(Some(3000))})).await;
    assert_eq!(s.get("/order").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_that_cannot_be_honoured_answer_503_and_never_fall_through() {
    let mut s = Stack::with(Enabled::only(["key-auth", "proxy-rewrite"]).unwrap()).await;
    s.route("catch-all", json!({"uri": "/*"})).await;
    s.route("good", json!({"uri": "/good", "plugins": {"key-auth": {}}})).await;
    for (id, route) in [
        ("unknown", json!({"uri": "/unknown", "upstream_id": "u", "plugins": {"no-such-plugin": {}}})),
        ("invalid", json!({"uri": "/invalid", "upstream_id": "u", "plugins": {"key-auth": {"header": 5}}})),
        ("disabled", json!({"uri": "/disabled", "upstream_id": "u", "plugins": {"cors": {}}})),
        ("missing", json!({"uri": "/missing", "upstream_id": "u", "plugin_config_id": "none"})),
    ] {
        s.put(&format!("routes/{id}"), route).await;
    }
    s.sync().await;
    for (path, reason) in [
        ("/unknown", "route unknown was rejected"),
        ("/invalid", "route invalid was rejected"),
        ("/disabled", "route disabled was rejected"),
        ("/missing", "plugin_config none not found"),
    ] {
        let r = s.get(path).await;
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        assert_eq!(r.json()["error_msg"], format!("503 Service Unavailable: {reason}"), "{path}");
    }
    assert_eq!(s.get("/good").await.status, 401, "other routes keep their plugins");
    assert_eq!(s.get("/elsewhere").await.status, 200, "the catch-all still serves what is its own");
    assert_eq!(s.metric(r#"sluice_config_rejected_total{kind="route"}"#).await, Some(3.0));

    // A good route that gets a bad version keeps serving the good one.
    s.put("routes/good", json!({"uri": "/good", "upstream_id": "u", "plugins": {"key-auth": {"header": []}}})).await;
    s.sync().await;
    assert_eq!(s.get("/good").await.status, 401);
    assert_eq!(s.metric(r#"sluice_config_rejected_total{kind="route"}"#).await, Some(4.0));
}
