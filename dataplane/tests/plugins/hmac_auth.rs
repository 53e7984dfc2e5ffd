//! hmac-auth, after APISIX's t/plugin/hmac-auth*.t: the 3.11+ `Signature` scheme.

use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::Method;
use serde_json::json;
use sha2::Digest;

use super::{Stack, upstream_saw};

fn sign(key_id: &str, secret: &str, lines: &[String], headers: &str) -> String {
    let mut text = format!("{key_id}\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    let mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap().chain_update(text.as_bytes()).finalize();
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.into_bytes());
    format!(r#"Signature keyId="{key_id}",algorithm="hmac-sha256",headers="{headers}",signature="{signature}""#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_like_apisix() {
    let mut s = Stack::start().await;
    s.consumer("jack", json!({"hmac-auth": {"key_id": "my-access-key", "secret_key": "my-secret-key"}})).await;
    s.route("r", json!({"uri": "/hello", "plugins": {"hmac-auth": {}}})).await;
    let date = httpdate::fmt_http_date(SystemTime::now());
    let good =
        sign("my-access-key", "my-secret-key", &["GET /hello".into(), format!("date: {date}")], "@request-target date");

    let r = s.get("/hello").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body, r#"{"message":"client request can't be validated: missing Authorization header"}"#);
    assert_eq!(r.headers["www-authenticate"], r#"hmac realm="hmac""#);
    let r = s.get_with("/hello", &[("authorization", "Basic x")]).await;
    assert_eq!(
        r.body,
        r#"{"message":"client request can't be validated: Authorization header does not start with 'Signature'"}"#
    );
    let r = s.get_with("/hello", &[("authorization", &good)]).await;
    assert_eq!(r.body, r#"{"message":"client request can't be validated"}"#, "no Date header");
    let seen = upstream_saw(&s.get_with("/hello", &[("authorization", &good), ("date", &date)]).await);
    assert_eq!(seen["headers"]["x-consumer-username"], "jack");
    let forged =
        sign("my-access-key", "wrong", &["GET /hello".into(), format!("date: {date}")], "@request-target date");
    assert_eq!(s.get_with("/hello", &[("authorization", &forged), ("date", &date)]).await.status, 401);
    let old = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(3600));
    let stale =
        sign("my-access-key", "my-secret-key", &["GET /hello".into(), format!("date: {old}")], "@request-target date");
    assert_eq!(s.get_with("/hello", &[("authorization", &stale), ("date", &old)]).await.status, 401, "clock skew");
    let unsigned_date = sign("my-access-key", "my-secret-key", &["GET /hello".into()], "@request-target");
    assert_eq!(
        s.get_with("/hello", &[("authorization", &unsigned_date), ("date", &date)]).await.status,
        401,
        "date must be signed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_the_body_digest() {
    let mut s = Stack::start().await;
    s.consumer("jack", json!({"hmac-auth": {"key_id": "ak", "secret_key": "sk"}})).await;
    s.route(
        "r",
        json!({"uri": "/post", "plugins": {"hmac-auth": {"validate_request_body": true, "hide_credentials": true}}}),
    )
    .await;
    let date = httpdate::fmt_http_date(SystemTime::now());
    let auth = sign("ak", "sk", &[format!("date: {date}")], "date");
    let body = "{\"a\":1}";
    let digest = format!("SHA-256={}", base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body)));
    let post = |digest: String| {
        let (auth, date) = (auth.clone(), date.clone());
        let addr = s.addr();
        async move {
            let headers = [("authorization", auth.as_str()), ("date", date.as_str()), ("digest", digest.as_str())];
            sluice_testkit::request(addr, Method::POST, "x", "/post", &headers, Bytes::from(body)).await.unwrap()
        }
    };
    let r = post(digest.clone()).await;
    let seen = upstream_saw(&r);
    assert_eq!(seen["body"], body, "the buffered body reaches the node");
    assert!(seen["headers"].get("authorization").is_none());
    assert_eq!(post("SHA-256=wrong".into()).await.status, 401);
}
