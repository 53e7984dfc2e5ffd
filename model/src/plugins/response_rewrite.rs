//! `response-rewrite`: changes the status, headers and body of responses.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::fault_injection::Scalar;
use super::header_ops::Form;
use super::{FieldError, Schema, check};

/// `response-rewrite`'s configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseRewrite {
    /// The status sent instead of the node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// The body sent instead of the node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// `body` is base64.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_base64: bool,
    /// Header changes, in the order add, set, remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    /// Request conditions: the plugin applies only when they hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vars: Option<Vec<Value>>,
    /// Regex replacements on the body, in order (instead of `body`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<Filter>>,
    /// With filters, the most of the body that is read; the rest is cut off.
    #[serde(default = "default_max_body")]
    pub max_resp_body_size: u64,
}

fn default_max_body() -> u64 {
    64 * 1024 * 1024
}

/// One regex replacement in the body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// The pattern.
    pub regex: String,
    /// `once` (the first match) or `global` (every match).
    #[serde(default)]
    pub scope: Scope,
    /// The replacement (`$1` for captures).
    pub replace: String,
    /// PCRE options as APISIX writes them; `i` (ignore case) is the one honoured beyond the defaults.
    #[serde(default = "default_options")]
    pub options: String,
}

fn default_options() -> String {
    "jo".into()
}

/// How many matches a filter replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The first.
    #[default]
    Once,
    /// All.
    Global,
}

/// Header changes. The legacy form (a plain map) decodes as `set`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Headers {
    /// `Name: value` lines appended.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    /// Values replacing what the response has (`""` removes the header).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, Scalar>,
    /// Headers removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Headers, D::Error> {
        let (add, set, remove) = Form::<Vec<String>, Scalar>::deserialize(d)?.parts();
        Ok(Headers { add, set, remove })
    }
}

/// Splits an `add` line into its name and value (`Name: value`, spaces around the colon allowed).
pub fn split_line(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once(':')?;
    let (name, value) = (name.trim(), value.trim());
    (!name.is_empty() && !name.contains(char::is_whitespace) && !value.is_empty()).then_some((name, value))
}

impl Schema for ResponseRewrite {
    const NAME: &'static str = "response-rewrite";

    fn check(&self) -> Result<(), FieldError> {
        if let Some(code) = self.status_code {
            check::range("status_code", code, 200, 598)?;
        }
        if self.body.is_some() && self.filters.is_some() {
            return Err(FieldError::new("filters", "cannot be used together with body"));
        }
        if self.body_base64 {
            let body = self.body.as_deref().unwrap_or("");
            if body.is_empty() || super::jwt_auth::decode_base64(body).is_none() {
                return Err(FieldError::new("body", "invalid base64 content"));
            }
        }
        if let Some(h) = &self.headers {
            for (i, line) in h.add.iter().enumerate() {
                let field = format!("headers.add[{i}]");
                let (name, value) =
                    split_line(line).ok_or_else(|| FieldError::new(&field, "must be \"Name: value\""))?;
                check::header_name(&field, name)?;
                check::header_value(&field, value)?;
            }
            for (name, value) in &h.set {
                check::header_name(&format!("headers.set.{name}"), name)?;
                check::header_value(&format!("headers.set.{name}"), &value.text())?;
            }
            h.remove.iter().try_for_each(|n| check::header_name("headers.remove", n))?;
        }
        if let Some(filters) = &self.filters {
            check::min_items("filters", filters, 1)?;
            for (i, f) in filters.iter().enumerate() {
                check::min_len(&format!("filters[{i}].regex"), &f.regex, 1)?;
                check::regex(&format!("filters[{i}].regex"), &f.regex)?;
                if let Some(c) = f.options.chars().find(|c| !"jois".contains(*c)) {
                    return Err(FieldError::new(format!("filters[{i}].options"), format!("unknown flag {c:?}")));
                }
            }
        }
        if self.max_resp_body_size == 0 {
            return Err(FieldError::new("max_resp_body_size", "must be at least 1"));
        }
        Ok(())
    }
}
