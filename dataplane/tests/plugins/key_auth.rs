//! key-auth, after APISIX's t/plugin/key-auth.t, key-auth-realm.t and key-auth-anonymous-consumer.t.

use serde_json::json;

use super::{Stack, upstream_saw};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_like_apisix_and_tells_the_node_who_called() {
    let mut s = Stack::start().await;
    s.put(
        "consumers/jack",
        json!({"username": "jack", "labels": {"custom_id": "c-42"},
        "plugins": {"key-auth": {"key": "auth-one"}}}),
    )
    .await;
    s.route("r", json!({"uri": "/hello", "plugins": {"key-auth": {}}})).await;

    let r = s.get("/hello").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body, r#"{"message":"Missing API key in request"}"#);
    assert_eq!(r.headers["www-authenticate"], r#"apikey realm="key""#);
    assert_eq!(r.headers["content-type"], "application/json");

    let r = s.get_with("/hello", &[("apikey", "wrong")]).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (401, r#"{"message":"Invalid API key in request"}"#));

    // The identity headers are the gateway's, whatever the client claimed.
    let r = s
        .get_with(
            "/hello",
            &[
                ("apikey", "auth-one"),
                ("x-consumer-username", "admin"),
                ("x-credential-identifier", "x"),
                // Hop-by-hop names cannot take away what the gateway adds.
                ("connection", "x-consumer-username, x-consumer-custom-id"),
            ],
        )
        .await;
    let seen = upstream_saw(&r);
    assert_eq!(seen["headers"]["x-consumer-username"], "jack");
    assert_eq!(seen["headers"]["x-consumer-custom-id"], "c-42");
    assert!(seen["headers"].get("x-credential-identifier").is_none());
    assert_eq!(seen["headers"]["apikey"], "auth-one", "kept without hide_credentials");

    // The query argument, when the header is absent.
    let r = s.get("/hello?apikey=auth-one&x=1").await;
    assert_eq!(upstream_saw(&r)["path"], "/hello?apikey=auth-one&x=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hides_credentials_and_reads_configured_names() {
    let mut s = Stack::start().await;
    s.put("consumers/jack", json!({"username": "jack", "plugins": {"key-auth": {"key": "k1"}}})).await;
    s.route(
        "h",
        json!({"uri": "/h", "plugins": {"key-auth": {"header": "X-Key", "query": "token",
        "hide_credentials": true, "realm": "shop"}}}),
    )
    .await;
    let seen = upstream_saw(&s.get_with("/h", &[("x-key", "k1")]).await);
    assert!(seen["headers"].get("x-key").is_none());
    let seen = upstream_saw(&s.get("/h?a=1&token=k1&b=2").await);
    assert_eq!(seen["path"], "/h?a=1&b=2");
    let r = s.get_with("/h", &[("apikey", "k1")]).await;
    assert_eq!(r.status, 401, "the default header name is not read when another is configured");
    assert_eq!(r.headers["www-authenticate"], r#"apikey realm="shop""#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_the_anonymous_consumer() {
    let mut s = Stack::start().await;
    s.put("consumers/jack", json!({"username": "jack", "plugins": {"key-auth": {"key": "k1"}}})).await;
    s.put("consumers/anonymous", json!({"username": "anonymous"})).await;
    s.route("a", json!({"uri": "/a", "plugins": {"key-auth": {"anonymous_consumer": "anonymous"}}})).await;
    s.route("b", json!({"uri": "/b", "plugins": {"key-auth": {"anonymous_consumer": "nobody"}}})).await;
    assert_eq!(upstream_saw(&s.get("/a").await)["headers"]["x-consumer-username"], "anonymous");
    assert_eq!(upstream_saw(&s.get_with("/a", &[("apikey", "k1")]).await)["headers"]["x-consumer-username"], "jack");
    let r = s.get("/b").await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (401, r#"{"message":"Invalid user authorization"}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_consumer_changes() {
    let mut s = Stack::start().await;
    s.route("r", json!({"uri": "/r", "plugins": {"key-auth": {}}})).await;
    assert_eq!(s.get_with("/r", &[("apikey", "k1")]).await.status, 401);
    s.consumer("jack", json!({"key-auth": {"key": "k1"}})).await;
    assert_eq!(s.get_with("/r", &[("apikey", "k1")]).await.status, 200);
    s.consumer("jack", json!({"key-auth": {"key": "k2"}})).await;
    assert_eq!(s.get_with("/r", &[("apikey", "k1")]).await.status, 401, "the old key no longer works");
    assert_eq!(s.get_with("/r", &[("apikey", "k2")]).await.status, 200);
    s.delete("consumers/jack").await;
    s.sync().await;
    assert_eq!(s.get_with("/r", &[("apikey", "k2")]).await.status, 401);
}
