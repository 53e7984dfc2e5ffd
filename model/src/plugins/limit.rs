//! What the three rate limiting plugins (`limit-count`, `limit-req`, `limit-conn`) share: how the key that
//! requests are counted by is formed, who the limit is for (one data plane, or the cluster), and the refusal.

use serde::{Deserialize, Serialize};

use super::{FieldError, check};

/// How `key` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    /// `key` names one variable (`remote_addr`, `http_x_user`, `consumer_name`, `route_id`, ...); a request for
    /// which it is empty is counted by its client address, as APISIX does.
    #[default]
    Var,
    /// `key` is text with `$variables` (`$remote_addr $http_x_user`); counted by the rendered text.
    VarCombination,
    /// `key` is the text itself: every request of the route shares one counter (limit-count only).
    Constant,
}

/// Whom a limit is for (a sluice extension; APISIX counts per data plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Each data plane admits the whole limit (APISIX's `local`).
    #[default]
    Node,
    /// The limit is for the whole cluster: each data plane admits its share, the limit divided by the number of
    /// live data planes (registered in etcd), rounded up; scaling the data plane out keeps the total.
    Cluster,
}

impl Scope {
    /// Whether this is the default, per-node scope.
    pub fn is_node(&self) -> bool {
        *self == Scope::Node
    }
}

/// Where the counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// In the data plane's memory.
    #[default]
    Local,
    /// In a Redis server shared by the data planes.
    Redis,
    /// In a Redis cluster.
    RedisCluster,
    /// In the Redis master that Sentinels name.
    RedisSentinel,
}

impl Policy {
    /// The policy's name as configured.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Local => "local",
            Policy::Redis => "redis",
            Policy::RedisCluster => "redis-cluster",
            Policy::RedisSentinel => "redis-sentinel",
        }
    }
}

pub(super) fn default_key() -> String {
    "remote_addr".into()
}

pub(super) fn default_rejected_code() -> u16 {
    503
}

/// Checks the key and the refusal fields every limiting plugin has.
pub(super) fn check_common(
    key_type: KeyType,
    key: &str,
    rejected_code: u16,
    rejected_msg: Option<&str>,
) -> Result<(), FieldError> {
    if key_type != KeyType::Constant {
        check::min_len("key", key, 1)?;
    }
    if key_type == KeyType::Var && key.starts_with('$') {
        return Err(FieldError::new("key", "names a variable without `$` (use key_type var_combination for text)"));
    }
    check::range("rejected_code", rejected_code, 200, 599)?;
    if let Some(msg) = rejected_msg {
        check::min_len("rejected_msg", msg, 1)?;
    }
    Ok(())
}

/// Refuses a policy this plugin cannot count with yet (only limit-count counts in Redis), so the controller
/// reports it instead of a route answering 503.
pub(super) fn check_policy(policy: Policy) -> Result<(), FieldError> {
    match policy {
        Policy::Local => Ok(()),
        Policy::Redis | Policy::RedisCluster | Policy::RedisSentinel => {
            Err(FieldError::new("policy", "only `local` is supported here yet (limit-count counts in Redis)"))
        }
    }
}
