//! `real-ip`: takes the client's address from a header or variable set by a trusted proxy.

use serde::{Deserialize, Serialize};

use super::{FieldError, Schema, check};

/// `real-ip`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealIp {
    /// The variable holding the address (`http_x_forwarded_for`, `http_x_real_ip`, `arg_*`, ...).
    pub source: String,
    /// Only requests from these addresses may set the client address; any may when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_addresses: Option<Vec<String>>,
    /// With trusted addresses: the rightmost X-Forwarded-For hop that is not trusted.
    #[serde(default)]
    pub recursive: bool,
}

impl Schema for RealIp {
    const NAME: &'static str = "real-ip";

    fn check(&self) -> Result<(), FieldError> {
        check::min_len("source", &self.source, 1)?;
        if let Some(list) = &self.trusted_addresses {
            check::min_items("trusted_addresses", list, 1)?;
            for (i, a) in list.iter().enumerate() {
                check::cidr(&format!("trusted_addresses[{i}]"), a)?;
            }
        }
        Ok(())
    }
}
