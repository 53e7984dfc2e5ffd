//! `fault-injection`: answers or delays a share of requests, to test how clients cope.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{FieldError, Schema, check};

/// `fault-injection`'s configuration: an abort, a delay, or both.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultInjection {
    /// Answer instead of proxying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<Abort>,
    /// Wait before going on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
}

/// The answer of an abort.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abort {
    /// Its status (200 or more).
    pub http_status: u16,
    /// Its body; `$var` references are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Its headers; `$var` references in values are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, Scalar>>,
    /// The share of requests aborted, in percent (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<u8>,
    /// Expression lists, any of which must hold for the abort to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vars: Option<Vec<Vec<Value>>>,
}

/// The wait of a delay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delay {
    /// Seconds.
    pub duration: f64,
    /// The share of requests delayed, in percent (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<u8>,
    /// Expression lists, any of which must hold for the delay to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vars: Option<Vec<Vec<Value>>>,
}

/// A header value written as a string or a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// Text, with `$var` references.
    Text(String),
    /// A number, sent as written.
    Number(serde_json::Number),
}

impl Scalar {
    /// The value as text.
    pub fn text(&self) -> String {
        match self {
            Scalar::Text(s) => s.clone(),
            Scalar::Number(n) => n.to_string(),
        }
    }
}

fn vars(field: &str, vars: &Option<Vec<Vec<Value>>>) -> Result<(), FieldError> {
    if vars.as_ref().is_some_and(|v| v.len() > 20) {
        return Err(FieldError::new(field, "must have at most 20 items"));
    }
    Ok(())
}

impl Schema for FaultInjection {
    const NAME: &'static str = "fault-injection";

    fn check(&self) -> Result<(), FieldError> {
        if self.abort.is_none() && self.delay.is_none() {
            return Err(FieldError::new("", "set abort, delay or both"));
        }
        if let Some(a) = &self.abort {
            check::range("abort.http_status", a.http_status, 200, 599)?;
            if let Some(p) = a.percentage {
                check::range("abort.percentage", p, 0, 100)?;
            }
            for (name, value) in a.headers.iter().flatten() {
                check::header_name(&format!("abort.headers.{name}"), name)?;
                check::header_value(&format!("abort.headers.{name}"), &value.text())?;
            }
            vars("abort.vars", &a.vars)?;
        }
        if let Some(d) = &self.delay {
            if !(d.duration.is_finite() && d.duration >= 0.0) {
                return Err(FieldError::new("delay.duration", "must be a number of seconds, 0 or more"));
            }
            if let Some(p) = d.percentage {
                check::range("delay.percentage", p, 0, 100)?;
            }
            vars("delay.vars", &d.vars)?;
        }
        Ok(())
    }
}
