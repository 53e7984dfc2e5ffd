//! Field rules shared by every object kind.

use std::collections::BTreeMap;

/// An object id that APISIX would not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("id {id:?} must be 1 to 64 characters of letters, digits, '-', '_' or '.'")]
pub struct InvalidId {
    /// The offending id.
    pub id: String,
}

/// A label key or value that APISIX would not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label {key:?}={value:?} must have a key and a value of 1 to 256 characters with no white space")]
pub struct InvalidLabel {
    /// The label key.
    pub key: String,
    /// The label value.
    pub value: String,
}

pub(crate) fn id(id: Option<&str>) -> Result<(), InvalidId> {
    match id {
        None => Ok(()),
        Some(s)
            if !s.is_empty()
                && s.len() <= 64
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            Ok(())
        }
        Some(s) => Err(InvalidId { id: s.to_string() }),
    }
}

pub(crate) fn labels(labels: &BTreeMap<String, String>) -> Result<(), InvalidLabel> {
    let ok = |s: &str| !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_whitespace);
    match labels.iter().find(|(k, v)| !ok(k) || !ok(v)) {
        None => Ok(()),
        Some((k, v)) => Err(InvalidLabel { key: k.clone(), value: v.clone() }),
    }
}

/// A timeout in seconds must be a positive finite number.
pub(crate) fn seconds(value: f64) -> bool {
    value.is_finite() && value > 0.0
}
