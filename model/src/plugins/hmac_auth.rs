//! `hmac-auth`: authenticates a request by an HMAC signature over chosen headers (APISIX 3.11+ `Signature`).

use serde::{Deserialize, Serialize};

use super::{FieldError, Schema, check};

/// The signature algorithms hmac-auth knows.
pub const ALGORITHMS: [&str; 3] = ["hmac-sha1", "hmac-sha256", "hmac-sha512"];

/// `hmac-auth` on a route, service, plugin config or global rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacAuth {
    /// The algorithms a client may sign with.
    #[serde(default = "default_algorithms")]
    pub allowed_algorithms: Vec<String>,
    /// Seconds the `Date` header may be off the data plane's clock.
    #[serde(default = "default_skew")]
    pub clock_skew: u64,
    /// Headers every signature must cover.
    #[serde(default = "default_signed")]
    pub signed_headers: Vec<String>,
    /// Checks the `Digest` header against the body (read into memory).
    #[serde(default)]
    pub validate_request_body: bool,
    /// The largest body read for `validate_request_body`.
    #[serde(default = "default_max_body")]
    pub max_req_body_size: u64,
    /// Removes the `Authorization` header before the request is proxied.
    #[serde(default)]
    pub hide_credentials: bool,
    /// The realm named in `WWW-Authenticate`.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// The consumer a request without a valid signature runs as, instead of being refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_consumer: Option<String>,
}

fn default_algorithms() -> Vec<String> {
    ALGORITHMS.iter().map(|a| a.to_string()).collect()
}

fn default_skew() -> u64 {
    300
}

fn default_signed() -> Vec<String> {
    vec!["date".into()]
}

fn default_max_body() -> u64 {
    64 * 1024 * 1024
}

fn default_realm() -> String {
    "hmac".into()
}

impl Schema for HmacAuth {
    const NAME: &'static str = "hmac-auth";

    fn check(&self) -> Result<(), FieldError> {
        check::min_items("allowed_algorithms", &self.allowed_algorithms, 1)?;
        if let Some(a) = self.allowed_algorithms.iter().find(|a| !ALGORITHMS.contains(&a.as_str())) {
            return Err(FieldError::new("allowed_algorithms", format!("{a:?} is not one of {ALGORITHMS:?}")));
        }
        check::range("clock_skew", self.clock_skew, 1, u64::MAX)?;
        for (i, h) in self.signed_headers.iter().enumerate() {
            if h.is_empty() || h.len() > 50 {
                return Err(FieldError::new(format!("signed_headers[{i}]"), "must be 1 to 50 characters"));
            }
        }
        check::range("max_req_body_size", self.max_req_body_size, 1, u64::MAX)?;
        check::realm("realm", &self.realm)?;
        check::anonymous_consumer(self.anonymous_consumer.as_deref())
    }
}

/// A consumer's `hmac-auth` credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// The key id clients name in `keyId`.
    pub key_id: String,
    /// The shared secret.
    pub secret_key: String,
}

impl Schema for Credential {
    const NAME: &'static str = "hmac-auth";

    fn check(&self) -> Result<(), FieldError> {
        for (field, value) in [("key_id", &self.key_id), ("secret_key", &self.secret_key)] {
            if value.is_empty() || value.len() > 256 {
                return Err(FieldError::new(field, "must be 1 to 256 characters"));
            }
        }
        Ok(())
    }
}
