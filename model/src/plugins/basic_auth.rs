//! `basic-auth`: authenticates a request by HTTP Basic credentials.

use serde::{Deserialize, Serialize};

use super::{FieldError, Schema, check};

/// `basic-auth` on a route, service, plugin config or global rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// Removes the `Authorization` header before the request is proxied.
    #[serde(default)]
    pub hide_credentials: bool,
    /// The consumer a request without valid credentials runs as, instead of being refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_consumer: Option<String>,
    /// The realm named in `WWW-Authenticate`.
    #[serde(default = "default_realm")]
    pub realm: String,
}

fn default_realm() -> String {
    "basic".into()
}

impl Schema for BasicAuth {
    const NAME: &'static str = "basic-auth";

    fn check(&self) -> Result<(), FieldError> {
        check::realm("realm", &self.realm)?;
        check::anonymous_consumer(self.anonymous_consumer.as_deref())
    }
}

/// A consumer's `basic-auth` credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// The user name sent by the client (not the consumer's own name).
    pub username: String,
    /// The password.
    pub password: String,
}

impl Schema for Credential {
    const NAME: &'static str = "basic-auth";
}
