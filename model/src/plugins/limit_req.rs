//! `limit-req`: a leaky bucket per key: `rate` requests per second, `burst` more delayed (or let through at once
//! with `nodelay`), the rest refused, as nginx's `limit_req` and APISIX's plugin count.

use serde::{Deserialize, Serialize};

use super::limit::{self, KeyType, Policy, Scope};
use super::{FieldError, Schema};

/// `limit-req`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitReq {
    /// Requests per second the bucket drains.
    pub rate: f64,
    /// Requests beyond the rate that are delayed rather than refused.
    pub burst: f64,
    /// How `key` is read (`var` or `var_combination`).
    #[serde(default)]
    pub key_type: KeyType,
    /// What requests are counted by.
    pub key: String,
    /// The status of a refused request.
    #[serde(default = "limit::default_rejected_code")]
    pub rejected_code: u16,
    /// The `error_msg` of a refused request's JSON body; none: an empty body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_msg: Option<String>,
    /// Requests within the burst pass at once instead of being delayed to the rate.
    #[serde(default)]
    pub nodelay: bool,
    /// Let requests pass when the counters cannot be reached (Redis policies).
    #[serde(default)]
    pub allow_degradation: bool,
    /// Where the counters live.
    #[serde(default)]
    pub policy: Policy,
    /// Whom the limit is for (sluice's field, left out when it is APISIX's per-node default).
    #[serde(default, skip_serializing_if = "Scope::is_node")]
    pub scope: Scope,
}

impl Schema for LimitReq {
    const NAME: &'static str = "limit-req";

    fn check(&self) -> Result<(), FieldError> {
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 1e9) {
            return Err(FieldError::new("rate", "must be a number of requests per second above 0"));
        }
        if !(self.burst.is_finite() && self.burst >= 0.0 && self.burst <= 1e6) {
            return Err(FieldError::new("burst", "must be a number of requests from 0 to 1000000"));
        }
        if self.key_type == KeyType::Constant {
            return Err(FieldError::new("key_type", "must be var or var_combination"));
        }
        limit::check_common(self.key_type, &self.key, self.rejected_code, self.rejected_msg.as_deref())?;
        limit::check_policy(self.policy)
    }
}
