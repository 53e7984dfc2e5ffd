//! response-rewrite, redirect, request-id, fault-injection and mocking, after APISIX's t/plugin/<name>.t cases.

use std::time::{Duration, Instant};

use http::Method;
use serde_json::json;

use super::{Stack, upstream_saw};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_rewrite_changes_status_headers_and_body() {
    let mut s = Stack::start().await;
    s.route(
        "body",
        json!({"uri": "/body", "plugins": {"response-rewrite": {"body": "new body\n", "status_code": 403,
        "headers": {"X-Server-id": 3, "X-Server-status": "on", "Content-Type": ""}}}}),
    )
    .await;
    s.route("b64", json!({"uri": "/b64", "plugins": {"response-rewrite": {"body": "SGVsbG8K", "body_base64": true}}}))
        .await;
    s.route(
        "filters",
        json!({"uri": "/filters", "plugins": {"response-rewrite": {"filters": [
        {"regex": "echo", "replace": "ECHO", "scope": "global"}, {"regex": "\"backend\"", "replace": "\"b\""}]}}}),
    )
    .await;
    s.route(
        "vars",
        json!({"uri": "/vars", "plugins": {"response-rewrite": {"body": "only for v2",
        "vars": [["arg_v", "==", "2"]], "headers": {"add": ["Cache-Control: no-cache"], "remove": ["x-backend"]}}}}),
    )
    .await;
    let r = s.get("/body").await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (403, "new body\n"));
    assert_eq!(r.headers["x-server-id"], "3");
    assert!(r.headers.get("content-type").is_none());
    assert_eq!(s.get("/b64").await.body, "Hello\n");
    let r = s.get("/filters").await;
    assert!(r.body.starts_with(r#"{"b":"ECHO""#), "{}", r.body);
    assert!(
        r.headers.get("content-length").is_none() || r.headers["content-length"] == r.body.len().to_string().as_str()
    );
    let r = s.get("/vars?v=2").await;
    assert_eq!(r.body, "only for v2");
    assert_eq!(r.headers["cache-control"], "no-cache");
    assert!(r.headers.get("x-backend").is_none());
    let r = s.get("/vars?v=1").await;
    assert_eq!(upstream_saw(&r)["path"], "/vars?v=1", "the conditions do not hold: the response is the node's");
    // A request answered before response-rewrite's rewrite phase (key-auth's 401) is not rewritten.
    s.route(
        "guarded",
        json!({"uri": "/guarded", "plugins": {"key-auth": {}, "response-rewrite": {"status_code": 200,
        "body": "ok", "vars": [["arg_v", "==", "2"]]}}}),
    )
    .await;
    let r = s.get("/guarded?v=2").await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (401, r#"{"message":"Missing API key in request"}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_answers_with_a_location() {
    let mut s = Stack::start().await;
    s.route(
        "uri",
        json!({"uri": "/hello", "plugins": {"redirect": {"uri": "$uri/test/a${arg_name}c", "ret_code": 302}}}),
    )
    .await;
    s.route(
        "re",
        json!({"uri": "/test/*", "plugins": {"redirect": {"regex_uri": ["^/test/(.*)", "http://test.com/${1}"],
        "ret_code": 301, "append_query_string": true}}}),
    )
    .await;
    s.route("https", json!({"uri": "/secure", "plugins": {"redirect": {"http_to_https": true}}})).await;
    let r = s.get("/hello?name=json").await;
    assert_eq!((r.status.as_u16(), r.headers["location"].to_str().unwrap()), (302, "/hello/test/ajsonc"));
    assert!(r.body.contains("302 Found"), "{}", r.body);
    let r = s.get("/test/1?o=apache").await;
    assert_eq!((r.status.as_u16(), r.headers["location"].to_str().unwrap()), (301, "http://test.com/1?o=apache"));
    let r = sluice_testkit::get(s.addr(), "foo.com", "/secure?a=1").await.unwrap();
    assert_eq!((r.status.as_u16(), r.headers["location"].to_str().unwrap()), (301, "https://foo.com/secure?a=1"));
    let r = s.send(Method::POST, "/secure", &[]).await;
    assert_eq!(r.status, 308, "a POST is redirected without changing its method");
    // The connection's scheme decides, not the client's claim (tests/https.rs has the request over TLS).
    assert_eq!(s.get_with("/secure", &[("x-forwarded-proto", "https")]).await.status, 301);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_goes_to_the_node_and_back() {
    let mut s = Stack::start().await;
    s.route("id", json!({"uri": "/id", "plugins": {"request-id": {}}})).await;
    s.route(
        "range",
        json!({"uri": "/range", "plugins": {"request-id": {"header_name": "X-Trace",
        "algorithm": "range_id", "range_id": {"length": 8, "char_set": "abcdef"}, "include_in_response": false}}}),
    )
    .await;
    let r = s.get("/id").await;
    let sent = r.headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(sent.len(), 36, "a UUID: {sent}");
    assert_eq!(upstream_saw(&r)["headers"]["x-request-id"], sent.as_str());
    let r = s.get_with("/id", &[("x-request-id", "mine")]).await;
    assert_eq!(r.headers["x-request-id"], "mine", "the client's id is kept");
    let r = s.get("/range").await;
    assert!(r.headers.get("x-trace").is_none());
    let id = upstream_saw(&r)["headers"]["x-trace"].as_str().unwrap().to_string();
    assert!(id.len() == 8 && id.bytes().all(|b| b"abcdef".contains(&b)), "{id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_aborts_and_delays() {
    let mut s = Stack::start().await;
    s.route(
        "abort",
        json!({"uri": "/abort", "plugins": {"fault-injection": {"abort": {"http_status": 403,
        "body": "client addr: $remote_addr\n", "headers": {"h1": "v1", "h2": 2, "h3": "$uri"},
        "vars": [[["arg_name", "==", "jack"], ["arg_age", "!", "<", 18]], [["http_apikey", "==", "api-key"]]]}}}}),
    )
    .await;
    s.route(
        "never",
        json!({"uri": "/never", "plugins": {"fault-injection": {"abort": {"http_status": 500, "percentage": 0}}}}),
    )
    .await;
    s.route("delay", json!({"uri": "/delay", "plugins": {"fault-injection": {"delay": {"duration": 0.3}}}})).await;
    let r = s.get("/abort?name=jack&age=20").await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (403, "client addr: 127.0.0.1\n"));
    assert_eq!((r.headers["h1"].to_str().unwrap(), r.headers["h2"].to_str().unwrap()), ("v1", "2"));
    assert_eq!(r.headers["h3"], "/abort");
    assert_eq!(s.get_with("/abort", &[("apikey", "api-key")]).await.status, 403);
    assert_eq!(s.get("/abort?name=jack&age=12").await.status, 200);
    assert_eq!(s.get("/never").await.status, 200);
    let started = Instant::now();
    assert_eq!(s.get("/delay").await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mocking_answers_without_the_node() {
    let mut s = Stack::start().await;
    s.route(
        "m",
        json!({"uri": "/m", "plugins": {"mocking": {"response_example": "{\"a\":1,\"route\":\"$route_id\"}",
        "response_status": 201, "response_headers": {"x-extra": "yes"}}}}),
    )
    .await;
    s.route("schema", json!({"uri": "/schema", "plugins": {"mocking": {"content_type": "application/json",
        "with_mock_header": false, "response_schema": {"type": "object", "properties": {
            "name": {"type": "string", "example": "ann"}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}}}}}}))
    .await;
    let hits = s.echo.hits();
    let r = s.get("/m").await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (201, r#"{"a":1,"route":"m"}"#));
    assert_eq!(r.headers["content-type"], "application/json;charset=utf8");
    assert!(r.headers["x-mock-by"].to_str().unwrap().starts_with("sluice/"));
    assert_eq!(r.headers["x-extra"], "yes");
    let r = s.get("/schema").await;
    let v = r.json();
    assert_eq!(v["name"], "ann");
    assert!(v["age"].is_i64() && v["tags"].is_array());
    assert!(r.headers.get("x-mock-by").is_none());
    assert_eq!(s.echo.hits(), hits, "the node never sees a mocked request");
}
