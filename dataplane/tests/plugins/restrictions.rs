//! ip-restriction, ua-restriction, referer-restriction, uri-blocker and consumer-restriction, after APISIX's
//! t/plugin/<name>.t cases.

use base64::Engine;
use http::Method;
use serde_json::json;

use super::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_restriction_allows_and_refuses_by_address() {
    let mut s = Stack::start().await;
    s.route("allow", json!({"uri": "/allow", "plugins": {"ip-restriction": {"whitelist": ["127.0.0.0/24", "::1"]}}}))
        .await;
    s.route(
        "deny",
        json!({"uri": "/deny", "plugins": {"ip-restriction": {"blacklist": ["127.0.0.1"],
        "message": "Do you want to do something bad?", "response_code": 404}}}),
    )
    .await;
    s.route("other", json!({"uri": "/other", "plugins": {"ip-restriction": {"whitelist": ["10.0.0.0/8"]}}})).await;
    assert_eq!(s.get("/allow").await.status, 200);
    let r = s.get("/deny").await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (404, r#"{"message":"Do you want to do something bad?"}"#));
    let r = s.get("/other").await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (403, r#"{"message":"Your IP address is not allowed"}"#));
    // Behind a trusted proxy, real-ip decides which address is checked.
    s.route(
        "behind",
        json!({"uri": "/behind", "plugins": {
        "real-ip": {"source": "http_x_forwarded_for", "trusted_addresses": ["127.0.0.0/8"]},
        "ip-restriction": {"whitelist": ["10.0.0.0/8"]}}}),
    )
    .await;
    assert_eq!(s.get_with("/behind", &[("x-forwarded-for", "10.1.2.3")]).await.status, 200);
    assert_eq!(s.get_with("/behind", &[("x-forwarded-for", "10.1.2.3, 8.8.8.8")]).await.status, 403);
    let seen = super::upstream_saw(&s.get_with("/behind", &[("x-forwarded-for", "10.1.2.3")]).await);
    assert_eq!(seen["headers"]["x-real-ip"], "10.1.2.3", "the node is told the real client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ua_and_referer_restrictions() {
    let mut s = Stack::start().await;
    s.route("ua", json!({"uri": "/ua", "plugins": {"ua-restriction": {"denylist": ["my-bot1", "(Baiduspider)/(\\d+)\\.(\\d+)"]}}}))
        .await;
    s.route(
        "ua-allow",
        json!({"uri": "/ua-allow", "plugins": {"ua-restriction": {"allowlist": ["^curl"], "bypass_missing": true}}}),
    )
    .await;
    assert_eq!(s.get_with("/ua", &[("user-agent", "my-bot1")]).await.body, r#"{"message":"Not allowed"}"#);
    assert_eq!(s.get_with("/ua", &[("user-agent", "Baiduspider/3.0")]).await.status, 403);
    assert_eq!(s.get_with("/ua", &[("user-agent", "Mozilla/5.0")]).await.status, 200);
    assert_eq!(s.get("/ua").await.status, 403, "a missing User-Agent is refused without bypass_missing");
    assert_eq!(s.get("/ua-allow").await.status, 200);
    assert_eq!(s.get_with("/ua-allow", &[("user-agent", "curl/8")]).await.status, 200);
    assert_eq!(s.get_with("/ua-allow", &[("user-agent", "wget")]).await.status, 403);

    s.route("ref", json!({"uri": "/ref", "plugins": {"referer-restriction": {"whitelist": ["*.xx.com", "yy.com"]}}}))
        .await;
    let r = s.get_with("/ref", &[("referer", "http://www.yy.com/x")]).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (403, r#"{"message":"Your referer host is not allowed"}"#));
    assert_eq!(s.get_with("/ref", &[("referer", "https://yy.com/x")]).await.status, 200);
    assert_eq!(s.get_with("/ref", &[("referer", "http://a.b.xx.com")]).await.status, 200);
    assert_eq!(s.get_with("/ref", &[("referer", "http://xx.com")]).await.status, 403, "*.xx.com needs a label");
    assert_eq!(s.get_with("/ref", &[("referer", "www.yy.com")]).await.status, 403, "not a URL: missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_blocker_refuses_matching_paths_and_queries() {
    let mut s = Stack::start().await;
    s.route(
        "b",
        json!({"uri": "/*", "plugins": {"uri-blocker": {"block_rules": ["root.exe", "select.+(from|limit)"],
        "rejected_msg": "access is not allowed", "case_insensitive": true}}}),
    )
    .await;
    let r = s.get("/x/ROOT.EXE").await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (403, r#"{"error_msg":"access is not allowed"}"#));
    assert_eq!(s.get("/hello?name=;select%20from%20sys").await.status, 403);
    assert_eq!(s.get("/hello?name=ok").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_restriction_by_consumer_and_method() {
    let mut s = Stack::start().await;
    let basic = |u: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:pw")));
    for user in ["jack1", "jack2"] {
        s.consumer(user, json!({"basic-auth": {"username": user, "password": "pw"}})).await;
    }
    s.route("w", json!({"uri": "/w", "plugins": {"basic-auth": {}, "consumer-restriction": {"whitelist": ["jack1"]}}}))
        .await;
    s.route(
        "m",
        json!({"uri": "/m", "plugins": {"basic-auth": {}, "consumer-restriction": {
        "allowed_by_methods": [{"user": "jack1", "methods": ["POST"]}]}}}),
    )
    .await;
    s.route("none", json!({"uri": "/none", "plugins": {"consumer-restriction": {"whitelist": ["jack1"]}}})).await;
    assert_eq!(s.get_with("/w", &[("authorization", &basic("jack1"))]).await.status, 200);
    let r = s.get_with("/w", &[("authorization", &basic("jack2"))]).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (403, r#"{"message":"The consumer_name is forbidden."}"#));
    assert_eq!(s.get_with("/m", &[("authorization", &basic("jack1"))]).await.status, 403);
    assert_eq!(s.send(Method::POST, "/m", &[("authorization", &basic("jack1"))]).await.status, 200);
    assert_eq!(s.get_with("/m", &[("authorization", &basic("jack2"))]).await.status, 200, "unlisted users pass");
    let r = s.get("/none").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body, r#"{"message":"The request is rejected, please check the consumer_name for this request"}"#);
}
