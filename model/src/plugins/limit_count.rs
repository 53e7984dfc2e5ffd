//! `limit-count`: at most `count` requests per `time_window` seconds for each key (a fixed window that starts with
//! the key's first request, as APISIX's local policy counts).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::limit::{self, KeyType, Policy, Scope};
use super::redis::{RedisFields, RedisTarget};
use super::{FieldError, Schema, check};

/// `limit-count`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Where a Redis policy counts (APISIX's flat `redis_*` fields).
    #[serde(flatten)]
    pub redis: RedisFields,
    /// Fields no policy knows, refused by the check (`deny_unknown_fields` cannot be combined with the flattened
    /// Redis fields).
    #[serde(flatten, skip_serializing)]
    pub unknown: BTreeMap<String, serde::de::IgnoredAny>,
}

impl LimitCount {
    /// Where the counters live when they are not local.
    pub fn redis_target(&self) -> Option<RedisTarget> {
        self.redis.target(self.policy).ok().flatten()
    }
}

fn yes() -> bool {
    true
}

impl Schema for LimitCount {
    const NAME: &'static str = "limit-count";

    fn check(&self) -> Result<(), FieldError> {
        if let Some(field) = self.unknown.keys().next() {
            return Err(FieldError::new(field.as_str(), "unknown field"));
        }
        check::range("count", self.count, 1, u64::from(u32::MAX))?;
        // A window longer than a year is a typo; the counters' 10 ms clock wraps after 497 days, beyond any window.
        check::range("time_window", self.time_window, 1, 31_536_000)?;
        if let Some(group) = &self.group {
            check::min_len("group", group, 1)?;
        }
        limit::check_common(self.key_type, &self.key, self.rejected_code, self.rejected_msg.as_deref())?;
        if self.policy != Policy::Local && self.scope == Scope::Cluster {
            return Err(FieldError::new("scope", "a Redis policy counts for the whole cluster already"));
        }
        self.redis.target(self.policy).map(drop)
    }
}
