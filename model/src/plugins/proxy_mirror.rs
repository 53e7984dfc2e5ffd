//! `proxy-mirror`: copies of requests sent to another host, whose answers are ignored.

use serde::{Deserialize, Serialize};

use super::{FieldError, Schema, check};

/// `proxy-mirror`'s configuration: APISIX's fields, and sluice's bound on the copies waiting to be sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyMirror {
    /// Where copies go: `http://host[:port]` or `https://host[:port]` (certificate verified), without a path.
    pub host: String,
    /// The path copies are sent to instead of the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How `path` is used: it replaces the request's path, or is put before it.
    #[serde(default)]
    pub path_concat_mode: PathConcatMode,
    /// The share of requests copied (0.00001 to 1).
    #[serde(default = "one")]
    pub sample_ratio: f64,
    /// Copies that may wait to be sent; more are dropped and counted (sluice).
    #[serde(default = "default_queue_size")]
    pub queue_size: u32,
    /// How long one copy may take, in milliseconds (sluice).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

/// How `path` is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathConcatMode {
    /// `path` replaces the request's path.
    #[default]
    Replace,
    /// `path` is put before the request's path.
    Prefix,
}

fn one() -> f64 {
    1.0
}
fn default_queue_size() -> u32 {
    1024
}
fn default_timeout() -> u64 {
    5000
}

impl Schema for ProxyMirror {
    const NAME: &'static str = "proxy-mirror";

    fn check(&self) -> Result<(), FieldError> {
        let Some(authority) = self.host.strip_prefix("http://").or_else(|| self.host.strip_prefix("https://")) else {
            return Err(FieldError::new("host", "must be http(s)://host or http(s)://host:port"));
        };
        if authority.is_empty() || !authority.chars().all(|c| c.is_ascii_alphanumeric() || "-._:[]".contains(c)) {
            return Err(FieldError::new("host", "must be http(s)://host or http(s)://host:port, without a path"));
        }
        if let Some(path) = &self.path
            && (!path.starts_with('/') || !path.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(FieldError::new("path", "must start with / and have no spaces"));
        }
        if !(self.sample_ratio >= 0.00001 && self.sample_ratio <= 1.0) {
            return Err(FieldError::new("sample_ratio", "must be from 0.00001 to 1"));
        }
        check::range("queue_size", self.queue_size, 1, 1_000_000)?;
        check::range("timeout", self.timeout, 1, 60_000)
    }
}
