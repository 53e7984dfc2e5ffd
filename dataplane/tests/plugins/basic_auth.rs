//! basic-auth, after APISIX's t/plugin/basic-auth.t and basic-auth-realm.t.

use base64::Engine;
use serde_json::json;

use super::{Stack, upstream_saw};

fn basic(user_password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_password))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_like_apisix() {
    let mut s = Stack::start().await;
    s.consumer("foo", json!({"basic-auth": {"username": "foo", "password": "bar"}})).await;
    s.route("r", json!({"uri": "/hello", "plugins": {"basic-auth": {}}})).await;

    let r = s.get("/hello").await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (401, r#"{"message":"Missing authorization in request"}"#));
    assert_eq!(r.headers["www-authenticate"], r#"Basic realm="basic""#);
    let r = s.get_with("/hello", &[("authorization", "Basic aca_a")]).await;
    assert_eq!(r.body, r#"{"message":"Invalid authorization in request"}"#);
    let r = s.get_with("/hello", &[("authorization", &basic("foo:wrong"))]).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (401, r#"{"message":"Invalid user authorization"}"#));
    let r = s.get_with("/hello", &[("authorization", &basic("nobody:bar"))]).await;
    assert_eq!(r.body, r#"{"message":"Invalid user authorization"}"#);

    let seen = upstream_saw(&s.get_with("/hello", &[("authorization", &basic("foo:bar"))]).await);
    assert_eq!(seen["headers"]["x-consumer-username"], "foo");
    assert!(seen["headers"].get("authorization").is_some(), "kept without hide_credentials");
    // APISIX reads the password up to a second colon.
    assert_eq!(s.get_with("/hello", &[("authorization", &basic("foo:bar:baz"))]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hides_credentials_and_names_its_realm() {
    let mut s = Stack::start().await;
    s.consumer("foo", json!({"basic-auth": {"username": "foo", "password": "bar"}})).await;
    s.route("r", json!({"uri": "/h", "plugins": {"basic-auth": {"hide_credentials": true, "realm": "test"}}})).await;
    let seen = upstream_saw(&s.get_with("/h", &[("authorization", &basic("foo:bar"))]).await);
    assert!(seen["headers"].get("authorization").is_none());
    assert_eq!(s.get("/h").await.headers["www-authenticate"], r#"Basic realm="test""#);
}
