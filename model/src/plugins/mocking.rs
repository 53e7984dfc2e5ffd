//! `mocking`: answers with a canned response instead of proxying.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fault_injection::Scalar;
use super::{FieldError, Schema, check};

/// `mocking`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mocking {
    /// Seconds to wait before answering.
    #[serde(default)]
    pub delay: u64,
    /// The status.
    #[serde(default = "default_status")]
    pub response_status: u16,
    /// The `Content-Type`.
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// The body; `$var` references are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_example: Option<String>,
    /// A JSON schema an example body is generated from, when there is no `response_example`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_schema: Option<serde_json::Map<String, Value>>,
    /// Adds `x-mock-by: sluice/<version>`.
    #[serde(default = "yes")]
    pub with_mock_header: bool,
    /// Headers added; `$var` references in values are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<BTreeMap<String, Scalar>>,
}

fn default_status() -> u16 {
    200
}

fn default_content_type() -> String {
    "application/json;charset=utf8".into()
}

fn yes() -> bool {
    true
}

/// How deep a `response_schema` may nest (JSON levels below its top).
const MAX_SCHEMA_NESTING: usize = 16;

/// The nesting depth of a JSON value: 0 for a scalar.
fn nesting(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

/// The media types mocking can send.
const TYPES: [&str; 5] = ["application/xml", "application/json", "text/plain", "text/html", "text/xml"];

impl Schema for Mocking {
    const NAME: &'static str = "mocking";

    fn check(&self) -> Result<(), FieldError> {
        if self.response_example.is_none() && self.response_schema.is_none() {
            return Err(FieldError::new("", "set response_example or response_schema"));
        }
        check::status("response_status", self.response_status)?;
        // Each array level of a schema makes up to three values of the next, per request: the nesting is bounded
        // so a schema cannot ask for exponentially many (not in APISIX's schema).
        if let Some(schema) = &self.response_schema
            && schema.values().map(nesting).max().unwrap_or(0) > MAX_SCHEMA_NESTING
        {
            return Err(FieldError::new("response_schema", format!("nests deeper than {MAX_SCHEMA_NESTING} levels")));
        }
        let media = self.content_type.rsplit_once(';').map_or(self.content_type.as_str(), |(m, _)| m);
        if !TYPES.contains(&media) {
            return Err(FieldError::new("content_type", format!("unsupported content type (use one of {TYPES:?})")));
        }
        check::header_value("content_type", &self.content_type)?;
        for (name, value) in self.response_headers.iter().flatten() {
            check::header_name(&format!("response_headers.{name}"), name)?;
            check::header_value(&format!("response_headers.{name}"), &value.text())?;
        }
        Ok(())
    }
}
