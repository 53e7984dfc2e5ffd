//! jwt-auth, after APISIX's t/plugin/jwt-auth.t, jwt-auth3.t and jwt-auth-more-algo.t.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use super::{Stack, upstream_saw};

const RSA_PRIVATE: &str = include_str!("keys/rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("keys/rsa-public.pem");
const EC_PRIVATE: &str = include_str!("keys/ec-private.pem");
const EC_PUBLIC: &str = include_str!("keys/ec-public.pem");

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn hs256(claims: Value, secret: &str) -> String {
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_like_apisix() {
    let mut s = Stack::start().await;
    s.consumer("jack", json!({"jwt-auth": {"key": "user-key", "secret": "my-secret-key"}})).await;
    s.route("r", json!({"uri": "/hello", "plugins": {"jwt-auth": {}}})).await;
    let bearer = |t: &str| format!("Bearer {t}");

    let r = s.get("/hello").await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (401, r#"{"message":"Missing JWT token in request"}"#));
    assert_eq!(r.headers["www-authenticate"], r#"Bearer realm="jwt""#);
    let r = s.get_with("/hello", &[("authorization", "Bearer not.a.token")]).await;
    assert_eq!(r.body, r#"{"message":"JWT token invalid"}"#);
    let no_key = hs256(json!({"exp": now() + 60}), "my-secret-key");
    assert_eq!(
        s.get_with("/hello", &[("authorization", &bearer(&no_key))]).await.body,
        r#"{"message":"missing user key in JWT token"}"#
    );
    let unknown = hs256(json!({"key": "other", "exp": now() + 60}), "my-secret-key");
    assert_eq!(
        s.get_with("/hello", &[("authorization", &bearer(&unknown))]).await.body,
        r#"{"message":"Invalid user key in JWT token"}"#
    );
    let forged = hs256(json!({"key": "user-key", "exp": now() + 60}), "wrong");
    let r = s.get_with("/hello", &[("authorization", &bearer(&forged))]).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (401, r#"{"message":"failed to verify jwt"}"#));
    let expired = hs256(json!({"key": "user-key", "exp": now() - 10}), "my-secret-key");
    assert_eq!(
        s.get_with("/hello", &[("authorization", &bearer(&expired))]).await.body,
        r#"{"message":"failed to verify jwt"}"#
    );
    let early = hs256(json!({"key": "user-key", "nbf": now() + 300}), "my-secret-key");
    assert_eq!(s.get_with("/hello", &[("authorization", &bearer(&early))]).await.status, 401);

    let good = hs256(json!({"key": "user-key", "exp": now() + 60}), "my-secret-key");
    let seen = upstream_saw(&s.get_with("/hello", &[("authorization", &bearer(&good))]).await);
    assert_eq!(seen["headers"]["x-consumer-username"], "jack");
    // Without `Bearer `, in the query, in the cookie; a token without exp is valid (claims checked when present).
    assert_eq!(s.get_with("/hello", &[("authorization", &good)]).await.status, 200);
    assert_eq!(s.get(&format!("/hello?jwt={good}")).await.status, 200);
    assert_eq!(s.get_with("/hello", &[("cookie", &format!("a=b; jwt={good}"))]).await.status, 200);
    let forever = hs256(json!({"key": "user-key"}), "my-secret-key");
    assert_eq!(s.get_with("/hello", &[("authorization", &bearer(&forever))]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifies_public_key_algorithms_and_claim_rules() {
    let mut s = Stack::start().await;
    s.consumer("rsa", json!({"jwt-auth": {"key": "rsa-key", "algorithm": "RS256", "public_key": RSA_PUBLIC}})).await;
    s.consumer("ec", json!({"jwt-auth": {"key": "ec-key", "algorithm": "ES256", "public_key": EC_PUBLIC}})).await;
    s.consumer("grace", json!({"jwt-auth": {"key": "g", "secret": "s", "lifetime_grace_period": 120}})).await;
    s.route("r", json!({"uri": "/r", "plugins": {"jwt-auth": {"hide_credentials": true}}})).await;
    s.route("strict", json!({"uri": "/strict", "plugins": {"jwt-auth": {"claims_to_verify": ["exp"]}}})).await;

    let claims = json!({"key": "rsa-key", "exp": now() + 60});
    let rs =
        encode(&Header::new(Algorithm::RS256), &claims, &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap())
            .unwrap();
    let seen = upstream_saw(&s.get_with("/r", &[("authorization", &format!("Bearer {rs}"))]).await);
    assert_eq!(seen["headers"]["x-consumer-username"], "rsa");
    assert!(seen["headers"].get("authorization").is_none(), "hidden");
    let claims = json!({"key": "ec-key", "exp": now() + 60});
    let es = encode(&Header::new(Algorithm::ES256), &claims, &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap())
        .unwrap();
    assert_eq!(s.get_with("/r", &[("authorization", &es)]).await.status, 200);
    // An HS token for an RS consumer (algorithm confusion) is refused.
    let confused = hs256(json!({"key": "rsa-key", "exp": now() + 60}), RSA_PUBLIC);
    assert_eq!(s.get_with("/r", &[("authorization", &confused)]).await.body, r#"{"message":"failed to verify jwt"}"#);
    // Leeway, and claims that must be present.
    let late = hs256(json!({"key": "g", "exp": now() - 60}), "s");
    assert_eq!(s.get_with("/r", &[("authorization", &late)]).await.status, 200, "within the grace period");
    let no_exp = hs256(json!({"key": "g"}), "s");
    assert_eq!(s.get_with("/strict", &[("authorization", &no_exp)]).await.status, 401);
}
