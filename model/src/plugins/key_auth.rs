//! `key-auth`: authenticates a request by an API key in a header or the query string.

use serde::{Deserialize, Serialize};

use super::{FieldError, Schema, check};

/// `key-auth` on a route, service, plugin config or global rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAuth {
    /// The request header that carries the key.
    #[serde(default = "default_name")]
    pub header: String,
    /// The query argument that carries the key when the header is absent.
    #[serde(default = "default_name")]
    pub query: String,
    /// Removes the key from the request before it is proxied.
    #[serde(default)]
    pub hide_credentials: bool,
    /// The consumer a request without a valid key runs as, instead of being refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_consumer: Option<String>,
    /// The realm named in `WWW-Authenticate`.
    #[serde(default = "default_realm")]
    pub realm: String,
}

fn default_name() -> String {
    "apikey".into()
}

fn default_realm() -> String {
    "key".into()
}

impl Default for KeyAuth {
    fn default() -> Self {
        KeyAuth {
            header: default_name(),
            query: default_name(),
            hide_credentials: false,
            anonymous_consumer: None,
            realm: default_realm(),
        }
    }
}

impl Schema for KeyAuth {
    const NAME: &'static str = "key-auth";

    fn check(&self) -> Result<(), FieldError> {
        check::header_name("header", &self.header)?;
        check::realm("realm", &self.realm)?;
        check::anonymous_consumer(self.anonymous_consumer.as_deref())
    }
}

/// A consumer's `key-auth` credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// The key.
    pub key: String,
}

impl Schema for Credential {
    const NAME: &'static str = "key-auth";

    fn check(&self) -> Result<(), FieldError> {
        check::min_len("key", &self.key, 1)
    }
}
