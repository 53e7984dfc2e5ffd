//! `referer-restriction`: allows or refuses requests by the host of their `Referer`.

use serde::{Deserialize, Serialize};

use super::ua_restriction::{message, one_list};
use super::{FieldError, Schema};

/// `referer-restriction`'s configuration: exactly one of the host lists (`*.x.com` is a suffix).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefererRestriction {
    /// Only referers from these hosts pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whitelist: Option<Vec<String>>,
    /// Referers from these hosts are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blacklist: Option<Vec<String>>,
    /// The `message` of the refusal (403).
    #[serde(default = "default_message")]
    pub message: String,
    /// Lets requests without a (readable) `Referer` pass.
    #[serde(default)]
    pub bypass_missing: bool,
}

fn default_message() -> String {
    "Your referer host is not allowed".into()
}

impl Schema for RefererRestriction {
    const NAME: &'static str = "referer-restriction";

    fn check(&self) -> Result<(), FieldError> {
        let (field, list) = one_list(("whitelist", &self.whitelist), ("blacklist", &self.blacklist))?;
        for (i, host) in list.iter().enumerate() {
            let rest = host.strip_prefix('*').unwrap_or(host);
            let ok = host == "*"
                || (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b)));
            if !ok {
                return Err(FieldError::new(format!("{field}[{i}]"), format!("{host:?} is not a host or *.suffix")));
            }
        }
        message(&self.message)
    }
}
