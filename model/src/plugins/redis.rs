//! Where a Redis-backed limit keeps its counters: APISIX's flat `redis_*`, `redis_cluster_*` fields (and sluice's
//! `redis_sentinels`, `redis_master_name` for `policy: redis-sentinel`), gathered into one typed [`RedisTarget`]
//! that the data plane connects to. Plugins that count in Redis embed [`RedisFields`]' fields by name, since
//! APISIX keeps them at the top level of the plugin's configuration.

use serde::{Deserialize, Serialize};

use super::limit::Policy;
use super::{FieldError, check};

/// How the data plane reaches the Redis deployment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RedisKind {
    /// One server.
    Single {
        /// Its host name or address.
        host: String,
        /// Its port.
        port: u16,
    },
    /// A Redis cluster, discovered from these seed nodes (`host:port`).
    Cluster {
        /// The seed nodes.
        nodes: Vec<String>,
    },
    /// The master that these Sentinels (`host:port`) name `master`.
    Sentinel {
        /// The Sentinels.
        sentinels: Vec<String>,
        /// The monitored master's name.
        master: String,
        /// Credentials for the Sentinels themselves (none: the same as the master's).
        sentinel_username: Option<String>,
        /// The Sentinels' password.
        sentinel_password: Option<String>,
    },
}

/// A Redis deployment and how to talk to it: the identity of a connection, shared by every limit naming the same.
/// Its `Debug` leaves the passwords out.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedisTarget {
    /// Which servers.
    pub kind: RedisKind,
    /// The ACL user (none: `default`).
    pub username: Option<String>,
    /// The password (none or empty: no `AUTH`).
    pub password: Option<String>,
    /// The database number (a single server or a Sentinel's master; a cluster has only 0).
    pub database: u32,
    /// How long one round trip may take before Redis counts as unreachable, in milliseconds.
    pub timeout_ms: u64,
    /// TLS to the servers: none for plain TCP, else whether their certificates are verified.
    pub tls: Option<bool>,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("target", &self.label())
            .field("username", &self.username)
            .field("database", &self.database)
            .field("timeout_ms", &self.timeout_ms)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl RedisTarget {
    /// A short name for logs and metric labels: the server, the seed nodes or the Sentinel master; never a
    /// credential.
    pub fn label(&self) -> String {
        match &self.kind {
            RedisKind::Single { host, port } => format!("{host}:{port}"),
            RedisKind::Cluster { nodes } => format!("cluster {}", nodes.join(",")),
            RedisKind::Sentinel { master, .. } => format!("sentinel {master}"),
        }
    }
}

/// APISIX's Redis fields of a limiting plugin, as they are stored (flat, at the plugin's top level). Its `Debug`
/// leaves the passwords out.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RedisFields {
    /// `policy: redis`: the server's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_host: Option<String>,
    /// The server's port (6379).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_port: Option<u16>,
    /// The ACL user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_username: Option<String>,
    /// The password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_password: Option<String>,
    /// The database (0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_database: Option<u32>,
    /// Milliseconds one round trip may take (1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_timeout: Option<u64>,
    /// TLS to the server.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redis_ssl: bool,
    /// Verify the server's certificate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redis_ssl_verify: bool,
    /// `policy: redis-cluster`: the seed nodes, `host:port` each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redis_cluster_nodes: Vec<String>,
    /// The cluster's name (APISIX requires it; it names the cluster in logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_cluster_name: Option<String>,
    /// TLS to the cluster's nodes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redis_cluster_ssl: bool,
    /// Verify the cluster nodes' certificates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redis_cluster_ssl_verify: bool,
    /// `policy: redis-sentinel`: the Sentinels, `host:port` each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redis_sentinels: Vec<String>,
    /// The master's name the Sentinels monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_master_name: Option<String>,
    /// The Sentinels' ACL user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_sentinel_username: Option<String>,
    /// The Sentinels' password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_sentinel_password: Option<String>,
}

impl std::fmt::Debug for RedisFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |p: &Option<String>| p.as_ref().map(|_| "<hidden>");
        f.debug_struct("RedisFields")
            .field("redis_host", &self.redis_host)
            .field("redis_port", &self.redis_port)
            .field("redis_username", &self.redis_username)
            .field("redis_password", &hidden(&self.redis_password))
            .field("redis_database", &self.redis_database)
            .field("redis_cluster_nodes", &self.redis_cluster_nodes)
            .field("redis_sentinels", &self.redis_sentinels)
            .field("redis_master_name", &self.redis_master_name)
            .field("redis_sentinel_password", &hidden(&self.redis_sentinel_password))
            .finish_non_exhaustive()
    }
}

/// The default port of a Redis server.
pub const DEFAULT_PORT: u16 = 6379;
/// The default time a round trip may take, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 1000;

impl RedisFields {
    /// Where `policy` counts: none for the local policy; an error when the policy's required fields are missing or
    /// malformed. Fields of other policies are ignored, as APISIX does.
    pub fn target(&self, policy: Policy) -> Result<Option<RedisTarget>, FieldError> {
        let tls = |on: bool, verify: bool| on.then_some(verify);
        let timeout_ms = self.redis_timeout.unwrap_or(DEFAULT_TIMEOUT_MS);
        check::range("redis_timeout", timeout_ms, 1, 60_000)?;
        let (kind, tls) = match policy {
            Policy::Local => return Ok(None),
            Policy::Redis => {
                let host = self.redis_host.as_deref().ok_or_else(|| required("redis_host", policy))?;
                check::min_len("redis_host", host, 2)?;
                let port = self.redis_port.unwrap_or(DEFAULT_PORT);
                check::range("redis_port", port, 1, u16::MAX)?;
                (RedisKind::Single { host: host.into(), port }, tls(self.redis_ssl, self.redis_ssl_verify))
            }
            Policy::RedisCluster => {
                check::min_items("redis_cluster_nodes", &self.redis_cluster_nodes, 1)?;
                nodes("redis_cluster_nodes", &self.redis_cluster_nodes)?;
                let name = self.redis_cluster_name.as_deref().ok_or_else(|| required("redis_cluster_name", policy))?;
                check::min_len("redis_cluster_name", name, 1)?;
                let nodes = self.redis_cluster_nodes.clone();
                (RedisKind::Cluster { nodes }, tls(self.redis_cluster_ssl, self.redis_cluster_ssl_verify))
            }
            Policy::RedisSentinel => {
                check::min_items("redis_sentinels", &self.redis_sentinels, 1)?;
                nodes("redis_sentinels", &self.redis_sentinels)?;
                let master = self.redis_master_name.as_deref().ok_or_else(|| required("redis_master_name", policy))?;
                check::min_len("redis_master_name", master, 1)?;
                let kind = RedisKind::Sentinel {
                    sentinels: self.redis_sentinels.clone(),
                    master: master.into(),
                    sentinel_username: self.redis_sentinel_username.clone(),
                    sentinel_password: self.redis_sentinel_password.clone(),
                };
                (kind, tls(self.redis_ssl, self.redis_ssl_verify))
            }
        };
        if let Some(user) = &self.redis_username {
            check::min_len("redis_username", user, 1)?;
        }
        let database = self.redis_database.unwrap_or(0);
        if policy == Policy::RedisCluster && database != 0 {
            return Err(FieldError::new("redis_database", "a Redis cluster has only database 0"));
        }
        Ok(Some(RedisTarget {
            kind,
            username: self.redis_username.clone(),
            password: self.redis_password.clone().filter(|p| !p.is_empty()),
            database,
            timeout_ms,
            tls,
        }))
    }
}

fn required(field: &str, policy: Policy) -> FieldError {
    FieldError::new(field, format!("is required by policy {}", policy.name()))
}

/// Every entry `host:port` with a port.
fn nodes(field: &str, nodes: &[String]) -> Result<(), FieldError> {
    for (i, node) in nodes.iter().enumerate() {
        let port = node.rsplit_once(':').filter(|(host, _)| !host.is_empty()).and_then(|(_, p)| p.parse::<u16>().ok());
        if port.is_none_or(|p| p == 0) {
            return Err(FieldError::new(format!("{field}[{i}]"), format!("`{node}` is not host:port")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_each_policys_fields() {
        let fields: RedisFields =
            serde_json::from_value(serde_json::json!({"redis_host": "redis.infra", "redis_password": ""})).unwrap();
        assert_eq!(fields.target(Policy::Local).unwrap(), None);
        let single = fields.target(Policy::Redis).unwrap().unwrap();
        assert_eq!(single.kind, RedisKind::Single { host: "redis.infra".into(), port: 6379 });
        assert_eq!((single.password.as_deref(), single.timeout_ms, single.tls), (None, 1000, None));
        assert_eq!(single.label(), "redis.infra:6379");
        let err = fields.target(Policy::RedisCluster).unwrap_err();
        assert_eq!(err.field, "redis_cluster_nodes");
        let cluster: RedisFields = serde_json::from_value(serde_json::json!({
            "redis_cluster_nodes": ["10.0.0.1:7000", "[::1]:7001"], "redis_cluster_name": "c", "redis_cluster_ssl": true
        }))
        .unwrap();
        let target = cluster.target(Policy::RedisCluster).unwrap().unwrap();
        assert_eq!(target.tls, Some(false));
        let bad: RedisFields =
            serde_json::from_value(serde_json::json!({"redis_sentinels": ["nohost"], "redis_master_name": "m"}))
                .unwrap();
        assert_eq!(bad.target(Policy::RedisSentinel).unwrap_err().field, "redis_sentinels[0]");
        let sentinel: RedisFields =
            serde_json::from_value(serde_json::json!({"redis_sentinels": ["s1:26379"], "redis_master_name": "m"}))
                .unwrap();
        assert_eq!(sentinel.target(Policy::RedisSentinel).unwrap().unwrap().label(), "sentinel m");
        assert_eq!(serde_json::to_value(RedisFields::default()).unwrap(), serde_json::json!({}));
        let secret: RedisFields =
            serde_json::from_value(serde_json::json!({"redis_host": "rr", "redis_password": "s3cret"})).unwrap();
        let shown = format!("{secret:?} {:?}", secret.target(Policy::Redis).unwrap());
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
