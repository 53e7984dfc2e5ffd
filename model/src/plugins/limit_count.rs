//! `limit-count`: at most `count` requests per `time_window` seconds for each key (a fixed window that starts with
//! the key's first request, as APISIX's local policy counts).

use serde::{Deserialize, Serialize};

use super::limit::{self, KeyType, Policy, Scope};
use super::{FieldError, Schema, check};

/// `limit-count`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitCount {
    /// Requests admitted per window and key (at most 2³² − 1).
    pub count: u64,
    /// The window, in seconds.
    pub time_window: u64,
    /// Routes whose limit-count has the same group share its counters (their configurations must be equal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// How `key` is read.
    #[serde(default)]
    pub key_type: KeyType,
    /// What requests are counted by.
    #[serde(default = "limit::default_key")]
    pub key: String,
    /// The status of a refused request.
    #[serde(default = "limit::default_rejected_code")]
    pub rejected_code: u16,
    /// The `error_msg` of a refused request's JSON body; none: an empty body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_msg: Option<String>,
    /// Where the counters live.
    #[serde(default)]
    pub policy: Policy,
    /// Let requests pass when the counters cannot be reached (Redis policies).
    #[serde(default)]
    pub allow_degradation: bool,
    /// Send `X-RateLimit-Limit`, `-Remaining` and `-Reset`.
    #[serde(default = "yes")]
    pub show_limit_quota_header: bool,
    /// Whom the limit is for (sluice's field, left out when it is APISIX's per-node default).
    #[serde(default, skip_serializing_if = "Scope::is_node")]
    pub scope: Scope,
}

fn yes() -> bool {
    true
}

impl Schema for LimitCount {
    const NAME: &'static str = "limit-count";

    fn check(&self) -> Result<(), FieldError> {
        check::range("count", self.count, 1, u64::from(u32::MAX))?;
        // A window longer than a year is a typo; the counters' 10 ms clock wraps after 497 days, beyond any window.
        check::range("time_window", self.time_window, 1, 31_536_000)?;
        if let Some(group) = &self.group {
            check::min_len("group", group, 1)?;
        }
        limit::check_common(self.key_type, &self.key, self.rejected_code, self.rejected_msg.as_deref())?;
        limit::check_policy(self.policy)
    }
}
