//! `limit-conn`: at most `conn` requests in flight per key, `burst` more delayed by `default_conn_delay`, the rest
//! refused.

use serde::{Deserialize, Serialize};

use super::limit::{self, KeyType, Policy, Scope};
use super::{FieldError, Schema, check};

/// `limit-conn`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConn {
    /// Requests in flight admitted at once.
    pub conn: u64,
    /// Requests beyond `conn` that are delayed rather than refused.
    pub burst: u64,
    /// The delay of a request beyond `conn`, in seconds.
    pub default_conn_delay: f64,
    /// Always delay by `default_conn_delay`; otherwise the delay follows the requests' latency, as APISIX's does.
    #[serde(default)]
    pub only_use_default_delay: bool,
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

impl Schema for LimitConn {
    const NAME: &'static str = "limit-conn";

    fn check(&self) -> Result<(), FieldError> {
        check::range("conn", self.conn, 1, u64::from(u32::MAX))?;
        check::range("burst", self.burst, 0, u64::from(u32::MAX))?;
        if !(self.default_conn_delay.is_finite() && self.default_conn_delay > 0.0 && self.default_conn_delay <= 60.0) {
            return Err(FieldError::new("default_conn_delay", "must be a number of seconds above 0, at most 60"));
        }
        if self.key_type == KeyType::Constant {
            return Err(FieldError::new("key_type", "must be var or var_combination"));
        }
        limit::check_common(self.key_type, &self.key, self.rejected_code, self.rejected_msg.as_deref())?;
        limit::check_policy(self.policy)
    }
}
