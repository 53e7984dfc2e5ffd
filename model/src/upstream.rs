//! The upstream object: a set of nodes and how traffic is spread over them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validate::{self, InvalidId, InvalidLabel};

/// An upstream as stored under `<prefix>/upstreams/<id>` or inline in a route.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Upstream {
    /// The id; absent for an upstream written inline in a route.
    #[serde(default, deserialize_with = "crate::id::opt", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    /// The load-balancing algorithm.
    #[serde(rename = "type", default)]
    pub lb: LoadBalancer,
    /// The nodes, as APISIX's `"host:port": weight` map or as a list of node objects.
    #[serde(default)]
    pub nodes: Nodes,
    /// For `chash`: where the hash key comes from (`vars`, `header`, `cookie`, `consumer`, `vars_combinations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<String>,
    /// For `chash`: the name of the value hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// How many other nodes to try after a failure; absent means the node count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Seconds within which retries may still be started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_timeout: Option<f64>,
    /// Timeouts for talking to the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    /// The protocol spoken to the nodes.
    #[serde(default)]
    pub scheme: Scheme,
    /// Which `Host` header the nodes receive.
    #[serde(default)]
    pub pass_host: PassHost,
    /// The `Host` header sent when `pass_host` is `rewrite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_host: Option<String>,
    /// Health-check settings (APISIX shape), honoured once health checks exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Value>,
    /// Client TLS settings for `https` nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Value>,
    /// Connection pool settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_pool: Option<Value>,
    /// Labels; the controller uses them to record ownership.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Creation time (seconds since the epoch) as the Admin API records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<i64>,
    /// Last update time (seconds since the epoch) as the Admin API records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<i64>,
    /// Prefer the nodes in the data plane's own zone (`--zone`), spilling over to other zones when those are
    /// down (sluice; default on, and without effect on a data plane without a zone or nodes without zones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_aware: Option<bool>,
    /// Fields this version does not know; any makes the object invalid rather than silently ignored.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// Load-balancing algorithms named as APISIX names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancer {
    /// Smooth weighted round robin.
    #[default]
    Roundrobin,
    /// Consistent hashing on a request value.
    Chash,
    /// Fewest requests in flight.
    LeastConn,
    /// Exponentially weighted moving average of latency.
    Ewma,
}

/// Protocols for talking to nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTP over TLS.
    Https,
    /// gRPC over plain HTTP/2.
    Grpc,
    /// gRPC over TLS.
    Grpcs,
    /// Raw TCP (stream routes).
    Tcp,
    /// Raw TLS (stream routes).
    Tls,
    /// UDP (stream routes).
    Udp,
}

impl Scheme {
    /// The port a node without one listens on.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Https | Scheme::Grpcs | Scheme::Tls => 443,
            _ => 80,
        }
    }
}

/// How the `Host` header sent upstream is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PassHost {
    /// The client's `Host` is passed unchanged.
    #[default]
    Pass,
    /// The chosen node's `host[:port]` is sent.
    Node,
    /// `upstream_host` is sent.
    Rewrite,
}

/// Timeouts in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Timeout {
    /// Time allowed to open a connection.
    pub connect: f64,
    /// Time allowed between two writes of the request.
    pub send: f64,
    /// Time allowed between two reads of the response.
    pub read: f64,
}

impl Timeout {
    fn is_valid(&self) -> bool {
        [self.connect, self.send, self.read].into_iter().all(validate::seconds)
    }
}

/// The two ways APISIX writes nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Nodes {
    /// `{"host:port": weight}`.
    Map(BTreeMap<String, u32>),
    /// `[{"host": ..., "port": ..., "weight": ...}]`.
    List(Vec<Node>),
}

impl Default for Nodes {
    fn default() -> Self {
        Nodes::List(Vec::new())
    }
}

impl Nodes {
    /// Whether there are no nodes at all.
    pub fn is_empty(&self) -> bool {
        match self {
            Nodes::Map(m) => m.is_empty(),
            Nodes::List(l) => l.is_empty(),
        }
    }

    /// The nodes as a list, with `host:port` keys split; the port is `None` when the key has none.
    pub fn to_list(&self) -> Result<Vec<Node>, InvalidUpstream> {
        match self {
            Nodes::List(list) => Ok(list.clone()),
            Nodes::Map(map) => map
                .iter()
                .map(|(addr, &weight)| {
                    let (host, port) =
                        split_host_port(addr).ok_or_else(|| InvalidUpstream::NodeAddress(addr.clone()))?;
                    Ok(Node { host, port, weight, priority: 0, metadata: None })
                })
                .collect(),
        }
    }
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`; the host comes back without brackets.
fn split_host_port(addr: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = addr.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host.to_string(), None)),
            _ => Some((host.to_string(), Some(after.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match addr.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((host, _)) if host.contains(':') => Some((addr.to_string(), None)),
        Some((host, port)) => Some((host.to_string(), Some(port.parse().ok()?))),
        None => Some((addr.to_string(), None)),
    }
}

/// One backend address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// An IP address or a host name.
    pub host: String,
    /// The port; absent means the scheme's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Relative share of traffic; 0 takes none.
    pub weight: u32,
    /// Tier: lower tiers are used only when every node of a higher tier is down.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// Free-form data attached by whoever wrote the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

impl Node {
    /// The zone the node runs in: `metadata.zone`, which the controller writes from the node's EndpointSlice.
    pub fn zone(&self) -> Option<&str> {
        self.metadata.as_ref()?.get("zone")?.as_str().filter(|z| !z.is_empty())
    }

    /// `metadata` naming `zone`, for a node written by the controller.
    pub fn zone_metadata(zone: &str) -> Value {
        serde_json::json!({ "zone": zone })
    }

    /// `host:port` with brackets around IPv6 hosts, for dialing and for `pass_host: node`.
    pub fn authority(&self, scheme: Scheme) -> String {
        let port = self.port.unwrap_or_else(|| scheme.default_port());
        if self.host.contains(':') { format!("[{}]:{port}", self.host) } else { format!("{}:{port}", self.host) }
    }
}

/// Why an upstream is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidUpstream {
    /// The id breaks APISIX's id rule.
    #[error(transparent)]
    Id(#[from] InvalidId),
    /// A label breaks APISIX's label rule.
    #[error(transparent)]
    Label(#[from] InvalidLabel),
    /// A `host:port` key of the node map cannot be split.
    #[error("node address {0:?} is not host, host:port or [ipv6]:port")]
    NodeAddress(String),
    /// A node has an empty host or port 0.
    #[error("node {0:?} needs a non-empty host and a port from 1 to 65535")]
    Node(String),
    /// `chash` was chosen without a key.
    #[error("type chash needs a key")]
    ChashWithoutKey,
    /// `hash_on` names an unknown source.
    #[error("hash_on {0:?} must be one of vars, header, cookie, consumer, vars_combinations")]
    HashOn(String),
    /// `pass_host: rewrite` without `upstream_host`.
    #[error("pass_host rewrite needs upstream_host")]
    RewriteWithoutHost,
    /// A timeout is zero, negative or not a number.
    #[error("timeout connect, send and read must be positive numbers of seconds")]
    Timeout,
    /// `retry_timeout` is negative or not a number.
    #[error("retry_timeout must be a number of seconds, 0 or more")]
    RetryTimeout,
    /// `checks`, `tls` or `keepalive_pool` is not an object.
    #[error("{0} must be an object")]
    NotAnObject(&'static str),
    /// A field this version does not know.
    #[error("unknown field {0:?}")]
    UnknownField(String),
}

impl Upstream {
    /// Checks every rule an upstream must follow, returning the first broken one.
    pub fn validate(&self) -> Result<(), InvalidUpstream> {
        validate::id(self.id.as_deref())?;
        validate::labels(&self.labels)?;
        if let Some(field) = self.unknown.keys().next() {
            return Err(InvalidUpstream::UnknownField(field.clone()));
        }
        for node in self.nodes.to_list()? {
            if node.host.is_empty() || node.port == Some(0) {
                return Err(InvalidUpstream::Node(node.host));
            }
        }
        let by_consumer = self.hash_on.as_deref() == Some("consumer");
        if self.lb == LoadBalancer::Chash && !by_consumer && self.key.as_deref().unwrap_or("").is_empty() {
            return Err(InvalidUpstream::ChashWithoutKey);
        }
        if let Some(on) = &self.hash_on
            && !["vars", "header", "cookie", "consumer", "vars_combinations"].contains(&on.as_str())
        {
            return Err(InvalidUpstream::HashOn(on.clone()));
        }
        if self.pass_host == PassHost::Rewrite && self.upstream_host.as_deref().unwrap_or("").is_empty() {
            return Err(InvalidUpstream::RewriteWithoutHost);
        }
        if self.timeout.is_some_and(|t| !t.is_valid()) {
            return Err(InvalidUpstream::Timeout);
        }
        if self.retry_timeout.is_some_and(|t| !(t.is_finite() && t >= 0.0)) {
            return Err(InvalidUpstream::RetryTimeout);
        }
        for (name, value) in [("checks", &self.checks), ("tls", &self.tls), ("keepalive_pool", &self.keepalive_pool)] {
            if value.as_ref().is_some_and(|v| !v.is_object()) {
                return Err(InvalidUpstream::NotAnObject(name));
            }
        }
        Ok(())
    }
}

impl fmt::Display for LoadBalancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoadBalancer::Roundrobin => "roundrobin",
            LoadBalancer::Chash => "chash",
            LoadBalancer::LeastConn => "least_conn",
            LoadBalancer::Ewma => "ewma",
        })
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok();
        f.write_str(s.as_ref().and_then(Value::as_str).unwrap_or("?"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Upstream {
        let u: Upstream = serde_json::from_value(v).unwrap();
        u.validate().unwrap();
        let back: Upstream = serde_json::from_value(serde_json::to_value(&u).unwrap()).unwrap();
        assert_eq!(back, u, "serde round trip");
        u
    }

    #[test]
    fn parses_admin_api_examples() {
        // The two node forms of the Admin API documentation.
        let u = parse(json!({"type": "chash", "key": "remote_addr",
            "nodes": {"127.0.0.1:80": 1, "foo.com:80": 2}}));
        assert_eq!(u.lb, LoadBalancer::Chash);
        let nodes = u.nodes.to_list().unwrap();
        assert_eq!(nodes[1].host, "foo.com");
        assert_eq!(nodes[1].weight, 2);
        let u = parse(json!({"id": 1, "type": "roundrobin", "scheme": "http", "pass_host": "node",
            "retries": 2, "retry_timeout": 5,
            "timeout": {"connect": 6, "send": 6, "read": 6},
            "nodes": [{"host": "127.0.0.1", "port": 1980, "weight": 1, "priority": 10}],
            "checks": {"active": {"http_path": "/status", "healthy": {"interval": 2, "successes": 1}}},
            "keepalive_pool": {"size": 320, "idle_timeout": 60, "requests": 1000},
            "labels": {"build": "16", "env": "production"}, "create_time": 1602883670, "update_time": 1602893670}));
        assert_eq!(u.id.as_deref(), Some("1"));
        assert_eq!(u.pass_host, PassHost::Node);
        assert_eq!(u.nodes.to_list().unwrap()[0].priority, 10);
    }

    #[test]
    fn splits_node_addresses() {
        assert_eq!(split_host_port("a:1"), Some(("a".into(), Some(1))));
        assert_eq!(split_host_port("a"), Some(("a".into(), None)));
        assert_eq!(split_host_port("[::1]:8080"), Some(("::1".into(), Some(8080))));
        assert_eq!(split_host_port("::1"), Some(("::1".into(), None)));
        assert_eq!(split_host_port("a:x"), None);
        let node = Node { host: "::1".into(), port: None, weight: 1, priority: 0, metadata: None };
        assert_eq!(node.authority(Scheme::Https), "[::1]:443");
    }

    #[test]
    fn rejects_broken_upstreams() {
        let bad = |v: Value| serde_json::from_value::<Upstream>(v).unwrap().validate().unwrap_err();
        assert_eq!(bad(json!({"type": "chash", "nodes": {}})), InvalidUpstream::ChashWithoutKey);
        assert_eq!(bad(json!({"pass_host": "rewrite"})), InvalidUpstream::RewriteWithoutHost);
        assert_eq!(bad(json!({"nodes": {"a:b": 1}})), InvalidUpstream::NodeAddress("a:b".into()));
        assert_eq!(bad(json!({"nodes": [{"host": "a", "port": 0, "weight": 1}]})), InvalidUpstream::Node("a".into()));
        assert_eq!(bad(json!({"timeout": {"connect": 0, "send": 1, "read": 1}})), InvalidUpstream::Timeout);
        assert_eq!(bad(json!({"discovery_type": "dns"})), InvalidUpstream::UnknownField("discovery_type".into()));
        assert!(matches!(bad(json!({"id": "a b"})), InvalidUpstream::Id(_)));
        assert!(serde_json::from_value::<Upstream>(json!({"type": "magic"})).is_err());
    }
}
