//! `jwt-auth`: finds the consumer by a claim of a JSON Web Token (header, query argument or cookie) and checks
//! the token's signature with that consumer's key, then `exp` and `nbf` with the consumer's leeway.
//!
//! The order of checks and the message of each failure follow APISIX 3.18: a token that does not parse, a missing
//! key claim, an unknown key, then any verification failure (wrong algorithm, bad signature, expired, not yet
//! valid) answered as `failed to verify jwt`, the detail only logged. The consumer's key is parsed once, when the
//! consumer is loaded ([`JwtKey`]).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{COOKIE, HeaderName, HeaderValue};
use http::request;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};
use sluice_model::plugins::Schema;
use sluice_model::plugins::jwt_auth::{self, Algorithm, Claim};
use sluice_model::{Credential, PluginConf};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, auth};

/// jwt-auth's place in the registry (APISIX priority 2510).
pub(super) const FACTORY: Factory =
    Factory { name: jwt_auth::JwtAuth::NAME, priority: 2510, auth: true, prefer_route: false, build };

/// A consumer's verification key, parsed once.
pub struct JwtKey {
    key: DecodingKey,
    validation: Validation,
    leeway: u64,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("JwtKey").field("algorithm", &self.validation.algorithms).finish()
    }
}

/// Parses the key of a consumer's jwt-auth credential; an unusable key rejects the consumer.
pub fn compile(credential: &jwt_auth::Credential) -> Result<JwtKey, String> {
    use jsonwebtoken::Algorithm as A;
    let algorithm = match credential.algorithm {
        Algorithm::HS256 => A::HS256,
        Algorithm::HS384 => A::HS384,
        Algorithm::HS512 => A::HS512,
        Algorithm::RS256 => A::RS256,
        Algorithm::RS384 => A::RS384,
        Algorithm::RS512 => A::RS512,
        Algorithm::ES256 => A::ES256,
        Algorithm::ES384 => A::ES384,
        Algorithm::PS256 => A::PS256,
        Algorithm::PS384 => A::PS384,
        Algorithm::PS512 => A::PS512,
        Algorithm::EdDSA => A::EdDSA,
    };
    let pem = || credential.public_key.as_deref().unwrap_or("").as_bytes();
    let key = match credential.algorithm {
        a if a.is_hmac() => {
            let secret = credential.secret.as_deref().unwrap_or("");
            if credential.base64_secret {
                let raw = jwt_auth::decode_base64(secret).ok_or("jwt-auth secret is not base64")?;
                DecodingKey::from_secret(&raw)
            } else {
                DecodingKey::from_secret(secret.as_bytes())
            }
        }
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem()),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem()),
        _ => DecodingKey::from_rsa_pem(pem()),
    }
    .map_err(|e| format!("jwt-auth public_key: {e}"))?;
    let mut validation = Validation::new(algorithm);
    // Claims are checked here with APISIX's rules; the crate checks the algorithm and the signature.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    Ok(JwtKey { key, validation, leeway: credential.lifetime_grace_period })
}

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::JwtAuth(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    let header =
        HeaderName::from_bytes(c.header.to_ascii_lowercase().as_bytes()).map_err(|e| format!("header: {e}"))?;
    Ok(Arc::new(JwtAuth {
        header,
        query: c.query.clone().into(),
        cookie: c.cookie.clone().into(),
        hide_credentials: c.hide_credentials,
        key_claim: c.key_claim_name.clone().into(),
        claims: c.claims_to_verify.clone(),
        anonymous_consumer: c.anonymous_consumer.as_deref().map(Arc::from),
        challenge: auth::challenge("Bearer", &c.realm),
    }))
}

#[derive(Debug)]
struct JwtAuth {
    header: HeaderName,
    query: Box<str>,
    cookie: Box<str>,
    hide_credentials: bool,
    key_claim: Box<str>,
    claims: Option<Vec<Claim>>,
    anonymous_consumer: Option<Arc<str>>,
    challenge: HeaderValue,
}

/// The `Cookie` header without cookie `name`.
fn without_cookie(headers: &http::HeaderMap, name: &str) -> Option<HeaderValue> {
    let kept: Vec<&str> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.split_once('=').map_or(*c, |(k, _)| k) != name)
        .collect();
    (!kept.is_empty()).then(|| HeaderValue::from_str(&kept.join("; ")).ok()).flatten()
}

impl JwtAuth {
    /// The token, from the header (without a `Bearer ` prefix), the query or the cookie; hidden at once when
    /// configured, whatever its validity, as APISIX does.
    fn token(&self, req: &mut request::Parts) -> Option<String> {
        if let Some(value) = req.headers.get(&self.header) {
            let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
            if self.hide_credentials {
                req.headers.remove(&self.header);
            }
            let token = text.strip_prefix("Bearer ").or_else(|| text.strip_prefix("bearer ")).unwrap_or(&text);
            return Some(token.to_string());
        }
        if let Some(value) = auth::query_arg(req.uri.query(), &self.query) {
            let token = value.into_owned();
            if self.hide_credentials {
                req.uri = auth::without_query_arg(&req.uri, &self.query);
            }
            return Some(token);
        }
        let cookie = req
            .headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == &*self.cookie)
            .map(|(_, v)| v.to_string())?;
        if self.hide_credentials {
            match without_cookie(&req.headers, &self.cookie) {
                Some(rest) => req.headers.insert(COOKIE, rest),
                None => req.headers.remove(COOKIE),
            };
        }
        Some(cookie)
    }

    /// The consumer the token names and proves, or the message for the client.
    fn verify(&self, ctx: &Ctx, token: &str) -> Result<Arc<super::Consumer>, &'static str> {
        let payload: Map<String, Value> =
            jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|_| "JWT token invalid")?;
        let key = match payload.get(&*self.key_claim) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err("missing user key in JWT token"),
        };
        let consumer = ctx.consumers.find(FACTORY.name, &key).cloned().ok_or("Invalid user key in JWT token")?;
        let Some(verifier) = consumer.jwt.as_ref() else { return Err("failed to verify jwt") };
        if let Err(e) = jsonwebtoken::decode::<Map<String, Value>>(token, &verifier.key, &verifier.validation) {
            tracing::debug!(consumer = %consumer.username, error = %e, "failed to verify jwt");
            return Err("failed to verify jwt");
        }
        if let Err(why) = self.check_claims(&payload, verifier.leeway) {
            tracing::debug!(consumer = %consumer.username, why, "failed to verify jwt");
            return Err("failed to verify jwt");
        }
        Ok(consumer)
    }

    /// APISIX's claim rules: listed claims are required; otherwise `nbf` and `exp` are checked when present;
    /// `exp` must be after now less the leeway, `nbf` before now plus the leeway (both strictly).
    fn check_claims(&self, payload: &Map<String, Value>, leeway: u64) -> Result<(), &'static str> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as f64;
        let leeway = leeway as f64;
        let (list, required): (&[Claim], bool) = match self.claims.as_deref() {
            Some(list) if !list.is_empty() => (list, true),
            _ => (&[Claim::Nbf, Claim::Exp], false),
        };
        for claim in list {
            let name = match claim {
                Claim::Exp => "exp",
                Claim::Nbf => "nbf",
            };
            let value = match payload.get(name) {
                None if required => return Err("a required claim is missing"),
                None => continue,
                Some(v) => v.as_f64().ok_or("a time claim is not a number")?,
            };
            let valid = match claim {
                Claim::Exp => value > now - leeway,
                Claim::Nbf => value < now + leeway,
            };
            if !valid {
                return Err("the token has expired or is not valid yet");
            }
        }
        Ok(())
    }
}

impl Plugin for JwtAuth {
    fn phases(&self) -> Phases {
        Phases::REWRITE
    }

    fn rewrite(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        let found = match self.token(req) {
            None => Err("Missing JWT token in request"),
            Some(token) => self.verify(ctx, &token),
        };
        match (found, &self.anonymous_consumer) {
            (Ok(consumer), _) => {
                auth::attach(ctx, req, consumer);
                Flow::Continue
            }
            (Err(text), None) => Flow::Respond(auth::unauthorized(text, &self.challenge)),
            (Err(_), Some(name)) => auth::anonymous(ctx, req, name, &self.challenge),
        }
    }
}

/// The parsed keys of a consumer's credentials, for the plugins that need more than a string compare.
pub fn keys(credentials: &[Credential]) -> Result<Option<Arc<JwtKey>>, String> {
    credentials
        .iter()
        .find_map(|c| match c {
            Credential::JwtAuth(j) => Some(compile(j).map(Arc::new)),
            _ => None,
        })
        .transpose()
}
