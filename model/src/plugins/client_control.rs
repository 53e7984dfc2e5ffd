//! `client-control`: per-route limits on what a client may send (APISIX: the request body size).

use serde::{Deserialize, Serialize};

use super::{FieldError, Schema};

/// `client-control`'s configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientControl {
    /// The largest request body in bytes for this route, in place of `--max-body-bytes`; 0 lifts the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_size: Option<u64>,
}

impl Schema for ClientControl {
    const NAME: &'static str = "client-control";

    fn check(&self) -> Result<(), FieldError> {
        Ok(())
    }
}
