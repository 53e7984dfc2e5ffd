//! `ua-restriction`: allows or refuses requests by their `User-Agent`.

use serde::{Deserialize, Serialize};

use super::{FieldError, Schema, check};

/// `ua-restriction`'s configuration: exactly one of the lists of regexes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UaRestriction {
    /// Only user agents matching one of these pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowlist: Option<Vec<String>>,
    /// User agents matching one of these are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denylist: Option<Vec<String>>,
    /// The `message` of the refusal (403).
    #[serde(default = "default_message")]
    pub message: String,
    /// Lets requests without a `User-Agent` pass.
    #[serde(default)]
    pub bypass_missing: bool,
}

fn default_message() -> String {
    "Not allowed".into()
}

/// Exactly one of two lists, each with at least one item; returns the field name and the list.
pub(crate) fn one_list<'a>(
    a: (&'static str, &'a Option<Vec<String>>),
    b: (&'static str, &'a Option<Vec<String>>),
) -> Result<(&'static str, &'a [String]), FieldError> {
    let (field, list) = match (a.1, b.1) {
        (Some(l), None) => (a.0, l),
        (None, Some(l)) => (b.0, l),
        _ => return Err(FieldError::new("", format!("set exactly one of {} and {}", a.0, b.0))),
    };
    check::min_items(field, list, 1)?;
    Ok((field, list))
}

/// A refusal message: 1 to 1024 characters.
pub(crate) fn message(value: &str) -> Result<(), FieldError> {
    check::min_len("message", value, 1)?;
    if value.len() > 1024 {
        return Err(FieldError::new("message", "must have at most 1024 characters"));
    }
    Ok(())
}

impl Schema for UaRestriction {
    const NAME: &'static str = "ua-restriction";

    fn check(&self) -> Result<(), FieldError> {
        let (field, list) = one_list(("allowlist", &self.allowlist), ("denylist", &self.denylist))?;
        for (i, re) in list.iter().enumerate() {
            check::min_len(&format!("{field}[{i}]"), re, 1)?;
            check::regex(&format!("{field}[{i}]"), re)?;
        }
        message(&self.message)
    }
}
