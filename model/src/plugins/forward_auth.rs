//! `forward-auth`: asks an external service whether a request may pass, before it is proxied.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{FieldError, Schema, check};

/// `forward-auth`'s configuration, in APISIX's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuth {
    /// The authorisation service (`http://`).
    pub uri: String,
    /// Verify an `https://` service's certificate (against the system's authorities and `--upstream-ca-file`).
    #[serde(default = "yes")]
    pub ssl_verify: bool,
    /// `GET`, or `POST` with the client's request body (refused until the data plane can wait on a service in the
    /// body phase).
    #[serde(default)]
    pub request_method: AuthMethod,
    /// Client request headers sent on to the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers: Vec<String>,
    /// Headers of the service's answer added to the request sent to the node, when it allows the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream_headers: Vec<String>,
    /// Headers of the service's answer sent to the client, when it refuses the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_headers: Vec<String>,
    /// How long the service may take, in milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Keep connections to the service open between requests.
    #[serde(default = "yes")]
    pub keepalive: bool,
    /// How long an idle connection to the service is kept, in milliseconds.
    #[serde(default = "default_keepalive_timeout")]
    pub keepalive_timeout: u64,
    /// Idle connections kept to the service.
    #[serde(default = "default_keepalive_pool")]
    pub keepalive_pool: u64,
    /// When the service cannot be reached or does not answer in time, let the request pass (fail open).
    #[serde(default)]
    pub allow_degradation: bool,
    /// The status answered when the service cannot be reached or does not answer in time (fail closed).
    #[serde(default = "default_status_on_error")]
    pub status_on_error: u16,
    /// More headers for the service, values with `$variables`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_headers: BTreeMap<String, String>,
}

/// How the service is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AuthMethod {
    /// Without a body.
    #[default]
    #[serde(rename = "GET")]
    Get,
    /// With the client's request body.
    #[serde(rename = "POST")]
    Post,
}

fn yes() -> bool {
    true
}
fn default_timeout() -> u64 {
    3000
}
fn default_keepalive_timeout() -> u64 {
    60_000
}
fn default_keepalive_pool() -> u64 {
    5
}
fn default_status_on_error() -> u16 {
    403
}

fn names(field: &str, list: &[String]) -> Result<(), FieldError> {
    for (i, name) in list.iter().enumerate() {
        check::header_name(&format!("{field}[{i}]"), name)?;
    }
    Ok(())
}

impl Schema for ForwardAuth {
    const NAME: &'static str = "forward-auth";

    fn check(&self) -> Result<(), FieldError> {
        let fine = |c: char| c.is_ascii_graphic();
        match self.uri.strip_prefix("http://").or_else(|| self.uri.strip_prefix("https://")) {
            Some(rest) if !rest.is_empty() && !rest.starts_with('/') && rest.chars().all(fine) => {}
            _ => return Err(FieldError::new("uri", "must be an http:// or https:// URL")),
        }
        if self.request_method == AuthMethod::Post {
            return Err(FieldError::new(
                "request_method",
                "POST (the request body sent to the service) is not supported yet",
            ));
        }
        names("request_headers", &self.request_headers)?;
        names("upstream_headers", &self.upstream_headers)?;
        names("client_headers", &self.client_headers)?;
        check::range("timeout", self.timeout, 1, 60_000)?;
        check::range("keepalive_timeout", self.keepalive_timeout, 1000, 86_400_000)?;
        check::range("keepalive_pool", self.keepalive_pool, 1, 10_000)?;
        check::range("status_on_error", self.status_on_error, 200, 599)?;
        for name in self.extra_headers.keys() {
            check::header_name(&format!("extra_headers.{name}"), name)?;
        }
        Ok(())
    }
}
