//! `jwt-auth`: authenticates a request by a signed JSON Web Token in a header, query argument or cookie.

use serde::{Deserialize, Serialize};

use super::{FieldError, Schema, check};

/// `jwt-auth` on a route, service, plugin config or global rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuth {
    /// The header carrying the token (a `Bearer ` prefix is stripped).
    #[serde(default = "default_header")]
    pub header: String,
    /// The query argument carrying the token when the header is absent.
    #[serde(default = "default_jwt")]
    pub query: String,
    /// The cookie carrying the token when neither is present.
    #[serde(default = "default_jwt")]
    pub cookie: String,
    /// Removes the token from the request before it is proxied.
    #[serde(default)]
    pub hide_credentials: bool,
    /// The claim naming the consumer's `key`.
    #[serde(default = "default_key_claim")]
    pub key_claim_name: String,
    /// Keeps the payload for later plugins.
    #[serde(default)]
    pub store_in_ctx: bool,
    /// The realm named in `WWW-Authenticate`.
    #[serde(default = "default_jwt")]
    pub realm: String,
    /// The consumer a request without a valid token runs as, instead of being refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_consumer: Option<String>,
    /// Claims that must be present and valid (`exp`, `nbf`); by default each is checked when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims_to_verify: Option<Vec<Claim>>,
}

/// A time claim jwt-auth can check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Claim {
    /// Expiry.
    Exp,
    /// Not before.
    Nbf,
}

fn default_header() -> String {
    "authorization".into()
}

fn default_jwt() -> String {
    "jwt".into()
}

fn default_key_claim() -> String {
    "key".into()
}

impl Schema for JwtAuth {
    const NAME: &'static str = "jwt-auth";

    fn check(&self) -> Result<(), FieldError> {
        check::header_name("header", &self.header)?;
        check::min_len("key_claim_name", &self.key_claim_name, 1)?;
        check::realm("realm", &self.realm)?;
        if let Some(claims) = &self.claims_to_verify
            && claims.iter().enumerate().any(|(i, c)| claims[..i].contains(c))
        {
            return Err(FieldError::new("claims_to_verify", "items must be unique"));
        }
        check::anonymous_consumer(self.anonymous_consumer.as_deref())
    }
}

/// Signing algorithms jwt-auth verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Algorithm {
    /// HMAC with SHA-256 (the default).
    #[default]
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSA PKCS#1 v1.5 with SHA-256.
    RS256,
    /// RSA PKCS#1 v1.5 with SHA-384.
    RS384,
    /// RSA PKCS#1 v1.5 with SHA-512.
    RS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// RSA-PSS with SHA-256.
    PS256,
    /// RSA-PSS with SHA-384.
    PS384,
    /// RSA-PSS with SHA-512.
    PS512,
    /// Ed25519.
    EdDSA,
}

impl Algorithm {
    /// Whether the key is a shared secret (HMAC) rather than a public key.
    pub fn is_hmac(self) -> bool {
        matches!(self, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    }
}

/// A consumer's `jwt-auth` credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// The value of the token's key claim that identifies this consumer.
    pub key: String,
    /// The HMAC secret (HS algorithms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The PEM public key (RS, ES, PS and EdDSA algorithms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The algorithm tokens must be signed with.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Legacy token lifetime for signing, which APISIX no longer does; accepted and unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// The secret is base64-encoded.
    #[serde(default)]
    pub base64_secret: bool,
    /// Seconds of leeway for `exp` and `nbf`.
    #[serde(default)]
    pub lifetime_grace_period: u64,
}

impl Schema for Credential {
    const NAME: &'static str = "jwt-auth";

    fn check(&self) -> Result<(), FieldError> {
        check::min_len("key", &self.key, 1)?;
        if self.exp == Some(0) {
            return Err(FieldError::new("exp", "must be at least 1"));
        }
        if self.algorithm.is_hmac() {
            let secret = self.secret.as_deref().unwrap_or("");
            if secret.is_empty() {
                return Err(FieldError::new("secret", "is required when using HS based algorithms"));
            }
            if self.base64_secret && decode_base64(secret).is_none() {
                return Err(FieldError::new("secret", "base64_secret required but the secret is not in base64 format"));
            }
        } else if self.public_key.as_deref().is_none_or(str::is_empty) {
            return Err(FieldError::new("public_key", "is required when using RS, ES, PS or EdDSA algorithms"));
        }
        Ok(())
    }
}

/// Decodes standard base64 (padding optional); `None` when it is not base64.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(text.trim()).ok()
}
