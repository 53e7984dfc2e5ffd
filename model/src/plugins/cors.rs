//! `cors`: Cross-Origin Resource Sharing headers, and answers to preflight (`OPTIONS`) requests.

use serde::{Deserialize, Serialize};

use super::{FieldError, Schema, check};

/// `cors`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Allowed origins: `*`, `**` (echo any), `null`, or a comma-separated list of `scheme://host[:port]`.
    #[serde(default = "star")]
    pub allow_origins: String,
    /// Allowed methods (`**` for all); sent as written.
    #[serde(default = "star")]
    pub allow_methods: String,
    /// Allowed request headers (`**` echoes the preflight's `Access-Control-Request-Headers`).
    #[serde(default = "star")]
    pub allow_headers: String,
    /// Response headers the browser may read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_headers: Option<String>,
    /// Seconds the browser may cache a preflight answer.
    #[serde(default = "default_max_age")]
    pub max_age: i64,
    /// Sends `Access-Control-Allow-Credentials: true` (no `*` allowed with it).
    #[serde(default)]
    pub allow_credential: bool,
    /// Regexes an origin may match instead of `allow_origins` (which they replace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_origins_by_regex: Option<Vec<String>>,
    /// Origins allowed to see timing information (`Timing-Allow-Origin`), like `allow_origins`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing_allow_origins: Option<String>,
    /// Regexes for `Timing-Allow-Origin`, preferred over `timing_allow_origins`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing_allow_origins_by_regex: Option<Vec<String>>,
}

fn star() -> String {
    "*".into()
}

fn default_max_age() -> i64 {
    5
}

impl Default for Cors {
    fn default() -> Self {
        Cors {
            allow_origins: star(),
            allow_methods: star(),
            allow_headers: star(),
            expose_headers: None,
            max_age: default_max_age(),
            allow_credential: false,
            allow_origins_by_regex: None,
            timing_allow_origins: None,
            timing_allow_origins_by_regex: None,
        }
    }
}

/// APISIX's origin rule: `*`, `**`, `null`, or `scheme://host` items separated by commas.
fn origins(field: &str, value: &str) -> Result<(), FieldError> {
    if matches!(value, "*" | "**" | "null") {
        return Ok(());
    }
    let item_ok = |item: &str| {
        item.split_once("://").is_some_and(|(scheme, rest)| {
            !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && !rest.is_empty()
        })
    };
    if value.is_empty() || !value.split(',').all(item_ok) {
        return Err(FieldError::new(
            field,
            "must be '*', '**', 'null' or a comma-separated list of scheme://host[:port]",
        ));
    }
    Ok(())
}

fn regexes(field: &str, list: &Option<Vec<String>>) -> Result<(), FieldError> {
    let Some(list) = list else { return Ok(()) };
    check::min_items(field, list, 1)?;
    for (i, re) in list.iter().enumerate() {
        if re.is_empty() || re.len() > 4096 || list[..i].contains(re) {
            return Err(FieldError::new(format!("{field}[{i}]"), "must be unique and 1 to 4096 characters"));
        }
        check::regex(&format!("{field}[{i}]"), re)?;
    }
    Ok(())
}

impl Schema for Cors {
    const NAME: &'static str = "cors";

    fn check(&self) -> Result<(), FieldError> {
        origins("allow_origins", &self.allow_origins)?;
        if let Some(t) = &self.timing_allow_origins {
            origins("timing_allow_origins", t)?;
        }
        regexes("allow_origins_by_regex", &self.allow_origins_by_regex)?;
        regexes("timing_allow_origins_by_regex", &self.timing_allow_origins_by_regex)?;
        if self.allow_credential {
            let stars = [
                ("allow_origins", Some(&self.allow_origins)),
                ("allow_methods", Some(&self.allow_methods)),
                ("allow_headers", Some(&self.allow_headers)),
                ("expose_headers", self.expose_headers.as_ref()),
                ("timing_allow_origins", self.timing_allow_origins.as_ref()),
            ];
            if let Some((field, _)) = stars.iter().find(|(_, v)| v.is_some_and(|v| v == "*")) {
                return Err(FieldError::new(
                    *field,
                    "you can not set '*' for other option when 'allow_credential' is true",
                ));
            }
        }
        for (field, value) in [("allow_methods", &self.allow_methods), ("allow_headers", &self.allow_headers)] {
            check::header_value(field, value)?;
        }
        Ok(())
    }
}
