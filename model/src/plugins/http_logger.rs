//! `http-logger`: sends log entries of the route's requests to an HTTP endpoint, in batches, off the request path.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{FieldError, Schema, check};

/// How a batch is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Concat {
    /// A JSON array (a single object when `batch_max_size` is 1).
    #[default]
    Json,
    /// One JSON object per line.
    NewLine,
}

/// `http-logger`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLogger {
    /// Where entries are POSTed (`http://` or `https://host[:port]/path`).
    pub uri: String,
    /// Verify an `https://` sink's certificate (APISIX's default: no).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ssl_verify: bool,
    /// Sent as the `Authorization` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_header: Option<String>,
    /// Seconds allowed to connect, send and receive.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// A custom entry: names to `$variable`s (or literal values); replaces the default entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<BTreeMap<String, Value>>,
    /// Fields added to the default entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format_extra: Option<BTreeMap<String, Value>>,
    /// How a batch is encoded.
    #[serde(default)]
    pub concat_method: Concat,
    /// A name for logs and metrics.
    #[serde(default = "default_name")]
    pub name: String,
    /// A batch is sent once it has this many entries.
    #[serde(default = "default_batch")]
    pub batch_max_size: usize,
    /// ... or once no entry came for this many seconds.
    #[serde(default = "default_inactive")]
    pub inactive_timeout: u64,
    /// ... or once its oldest entry is this many seconds old.
    #[serde(default = "default_buffer")]
    pub buffer_duration: u64,
    /// Attempts after a failed send.
    #[serde(default)]
    pub max_retry_count: u32,
    /// Seconds between attempts.
    #[serde(default = "default_retry_delay")]
    pub retry_delay: u64,
    /// Entries waiting at most; more are dropped (and counted) rather than slowing requests.
    #[serde(default = "default_pending")]
    pub max_pending_entries: usize,
}

fn default_timeout() -> u64 {
    3
}

fn default_name() -> String {
    "http logger".into()
}

fn default_batch() -> usize {
    1000
}

fn default_inactive() -> u64 {
    5
}

fn default_buffer() -> u64 {
    60
}

fn default_retry_delay() -> u64 {
    1
}

fn default_pending() -> usize {
    8192
}

/// A log format: each value a `$variable` or a literal, nested up to five levels.
pub(crate) fn log_format(field: &str, format: &BTreeMap<String, Value>, depth: usize) -> Result<(), FieldError> {
    if depth > 5 {
        return Err(FieldError::new(field, "nests deeper than 5 levels"));
    }
    for (k, v) in format {
        if let Value::Object(inner) = v {
            let inner: BTreeMap<String, Value> = inner.clone().into_iter().collect();
            log_format(&format!("{field}.{k}"), &inner, depth + 1)?;
        }
    }
    Ok(())
}

impl Schema for HttpLogger {
    const NAME: &'static str = "http-logger";

    fn check(&self) -> Result<(), FieldError> {
        if !(self.uri.starts_with("http://") || self.uri.starts_with("https://")) {
            return Err(FieldError::new("uri", "must be an http:// or https:// URL"));
        }
        check::range("timeout", self.timeout, 1, 3600)?;
        check::range("batch_max_size", self.batch_max_size, 1, 1_000_000)?;
        check::range("inactive_timeout", self.inactive_timeout, 1, u64::MAX)?;
        check::range("buffer_duration", self.buffer_duration, 1, u64::MAX)?;
        check::range("max_pending_entries", self.max_pending_entries, 1, 10_000_000)?;
        if let Some(a) = &self.auth_header {
            check::header_value("auth_header", a)?;
        }
        for (field, format) in [("log_format", &self.log_format), ("log_format_extra", &self.log_format_extra)] {
            if let Some(f) = format {
                log_format(field, f, 1)?;
            }
        }
        Ok(())
    }
}
