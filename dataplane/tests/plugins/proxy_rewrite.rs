//! proxy-rewrite, after APISIX's t/plugin/proxy-rewrite.t, proxy-rewrite2.t and proxy-rewrite3.t.

use serde_json::json;

use super::{Stack, upstream_saw};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_what_the_node_receives() {
    let mut s = Stack::start().await;
    s.route(
        "re",
        json!({"uri": "/test/*", "plugins": {"proxy-rewrite": {
        "regex_uri": ["^/test/(.*)/(.*)/(.*)", "/$1_$2_$3"],
        "headers": {"set": {"x-capture": "$1"}}}}}),
    )
    .await;
    s.route(
        "uri",
        json!({"uri": "/old/*", "plugins": {"proxy-rewrite": {
        "uri": "/new$uri", "method": "POST", "host": "rewritten.example.com:8080",
        "headers": {"add": {"x-added": ["one", "two"]}, "set": {"x-user": "$arg_user", "x-drop": ""},
            "remove": ["x-secret"]}}}}),
    )
    .await;
    s.route("legacy", json!({"uri": "/legacy", "plugins": {"proxy-rewrite": {"headers": {"X-Api-Version": "v2"}}}}))
        .await;

    // The documented case: /test/plugin/proxy/rewrite goes upstream as /plugin_proxy_rewrite.
    let seen = upstream_saw(&s.get("/test/plugin/proxy/rewrite").await);
    assert_eq!(seen["path"], "/plugin_proxy_rewrite");
    assert_eq!(seen["headers"]["x-capture"], "plugin");
    // A path the regex does not match goes as it came.
    assert_eq!(upstream_saw(&s.get("/test/not-three").await)["path"], "/test/not-three");

    let r = s.get_with("/old/a?user=ann", &[("x-secret", "s"), ("x-drop", "d"), ("x-added", "zero")]).await;
    let seen = upstream_saw(&r);
    assert_eq!(seen["path"], "/new/old/a?user=ann", "the query is kept");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["headers"]["host"], "rewritten.example.com:8080");
    assert_eq!(seen["headers"]["x-user"], "ann");
    assert!(seen["headers"].get("x-secret").is_none());
    assert!(seen["headers"].get("x-drop").is_none(), "set to nothing removes the header");
    assert_eq!(seen["headers"]["x-added"], "zero, one, two", "the echo joins repeated fields");

    let seen = upstream_saw(&s.get_with("/legacy", &[("x-api-version", "v1")]).await);
    assert_eq!(seen["headers"]["x-api-version"], "v2");
}
