//! `ip-restriction`: allows or refuses clients by address.

use serde::{Deserialize, Serialize};

use super::{FieldError, Schema, check};

/// `ip-restriction`'s configuration: exactly one of the lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpRestriction {
    /// Only these addresses and blocks may pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whitelist: Option<Vec<String>>,
    /// These addresses and blocks are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blacklist: Option<Vec<String>>,
    /// The `message` of the refusal.
    #[serde(default = "default_message")]
    pub message: String,
    /// The status of the refusal: 403 or 404.
    #[serde(default = "default_code")]
    pub response_code: u16,
}

fn default_message() -> String {
    "Your IP address is not allowed".into()
}

fn default_code() -> u16 {
    403
}

impl Schema for IpRestriction {
    const NAME: &'static str = "ip-restriction";

    fn check(&self) -> Result<(), FieldError> {
        let (field, list) = match (&self.whitelist, &self.blacklist) {
            (Some(w), None) => ("whitelist", w),
            (None, Some(b)) => ("blacklist", b),
            _ => return Err(FieldError::new("", "set exactly one of whitelist and blacklist")),
        };
        check::min_items(field, list, 1)?;
        for (i, entry) in list.iter().enumerate() {
            check::cidr(&format!("{field}[{i}]"), entry)?;
        }
        check::min_len("message", &self.message, 1)?;
        if self.message.len() > 1024 {
            return Err(FieldError::new("message", "must have at most 1024 characters"));
        }
        check::range("response_code", self.response_code, 403, 404)
    }
}
