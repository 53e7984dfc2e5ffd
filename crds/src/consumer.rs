//! Consumer: an API caller, its credentials and its own plugins.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Plugin, ResourceStatus, SecretReference};

/// A Consumer's credentials and plugins.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Consumer",
    plural = "consumers",
    shortname = "sc",
    category = "sluice",
    namespaced,
    status = "ResourceStatus",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.authParameter) || (has(self.plugins) && self.plugins.size() > 0)").message("a Consumer needs credentials or plugins"))]
pub struct ConsumerSpec {
    /// Credentials, at most one of each kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_parameter: Option<AuthParameter>,
    /// Plugins applied to this consumer's requests; they win over the route's for the same plugin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<Plugin>,
}

/// The credential kinds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.keyAuth) || has(self.basicAuth) || has(self.jwtAuth)").message("authParameter needs keyAuth, basicAuth or jwtAuth"))]
pub struct AuthParameter {
    /// An API key (plugin `key-auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_auth: Option<KeyAuth>,
    /// A user name and password (plugin `basic-auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// A JWT signing key (plugin `jwt-auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_auth: Option<JwtAuth>,
}

/// A key-auth credential, written or from a Secret with the key `key`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.value) != has(self.secretRef)").message("set exactly one of value and secretRef"))]
pub struct KeyAuth {
    /// The key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<KeyAuthValue>,
    /// A Secret holding `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
}

/// The key-auth value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct KeyAuthValue {
    /// The API key callers send.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A basic-auth credential, written or from a Secret with the keys `username` and `password`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.value) != has(self.secretRef)").message("set exactly one of value and secretRef"))]
pub struct BasicAuth {
    /// The user name and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<BasicAuthValue>,
    /// A Secret holding `username` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
}

/// The basic-auth value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct BasicAuthValue {
    /// The user name.
    #[schemars(length(min = 1))]
    pub username: String,
    /// The password.
    #[schemars(length(min = 1))]
    pub password: String,
}

/// A jwt-auth credential, written or from a Secret with the keys of [`JwtAuthValue`].
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.value) != has(self.secretRef)").message("set exactly one of value and secretRef"))]
pub struct JwtAuth {
    /// The signing parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<JwtAuthValue>,
    /// A Secret holding `key` and `secret` (or `public_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
}

/// The jwt-auth value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtAuthValue {
    /// The key identifying the consumer in the token.
    #[schemars(length(min = 1))]
    pub key: String,
    /// The HMAC secret (HS256/HS512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The public key (RS256/ES256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The signing algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^(HS256|HS512|RS256|ES256)$"))]
    pub algorithm: Option<String>,
    /// Token lifetime in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub exp: Option<i64>,
}
