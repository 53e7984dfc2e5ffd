//! `uri-blocker`: refuses requests whose path and query match a regex.

use serde::{Deserialize, Serialize};

use super::{FieldError, Schema, check};

/// `uri-blocker`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UriBlocker {
    /// Regexes, any of which blocks (searched anywhere in the path and query).
    pub block_rules: Vec<String>,
    /// The status of the refusal.
    #[serde(default = "default_code")]
    pub rejected_code: u16,
    /// The `error_msg` of the refusal; without one the body is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_msg: Option<String>,
    /// Matches ignoring case.
    #[serde(default)]
    pub case_insensitive: bool,
}

fn default_code() -> u16 {
    403
}

impl Schema for UriBlocker {
    const NAME: &'static str = "uri-blocker";

    fn check(&self) -> Result<(), FieldError> {
        for (i, rule) in self.block_rules.iter().enumerate() {
            let field = format!("block_rules[{i}]");
            if rule.is_empty() || rule.len() > 4096 || self.block_rules[..i].contains(rule) {
                return Err(FieldError::new(field, "must be unique and 1 to 4096 characters"));
            }
            check::regex(&field, rule)?;
        }
        check::status("rejected_code", self.rejected_code)?;
        if let Some(m) = &self.rejected_msg {
            check::min_len("rejected_msg", m, 1)?;
        }
        Ok(())
    }
}
