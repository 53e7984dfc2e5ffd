//! Upstream: shapes every upstream generated for the Service of the same name (or, with `externalNodes`, stands
//! alone as a set of nodes outside the cluster).

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ResourceStatus, SecretReference, Timeout};

/// How traffic to the nodes is balanced, retried, checked and secured.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Upstream",
    plural = "upstreams",
    shortname = "su",
    category = "sluice",
    namespaced,
    status = "ResourceStatus",
    printcolumn = r#"{"name":"Balancer","type":"string","jsonPath":".spec.loadBalancer.type"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.passHost) || self.passHost != 'rewrite' || has(self.upstreamHost)").message("passHost rewrite needs upstreamHost"))]
pub struct UpstreamSpec {
    /// The balancing algorithm (default round robin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// The protocol spoken to the nodes (default http).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<Scheme>,
    /// How many other nodes to try after a failure (default: the node count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub retries: Option<i64>,
    /// How long retries may go on, as a duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+(\.[0-9]+)?(ms|s|m)$"))]
    pub retry_timeout: Option<String>,
    /// Timeouts towards the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    /// Which Host header the nodes receive (default pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_host: Option<PassHost>,
    /// The Host header sent with `passHost: rewrite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_host: Option<String>,
    /// Active and passive health checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// A `kubernetes.io/tls` Secret whose certificate and key the data plane presents to the nodes (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<SecretReference>,
    /// Named groups of endpoints selected by pod labels, for backends that name a subset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    /// Nodes outside the cluster; an Upstream with external nodes is referenced from ApiRoute `upstreams`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_nodes: Vec<ExternalNode>,
    /// Prefer the endpoints in the data plane's own zone while any is healthy (default true); false balances over
    /// every zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_aware: Option<bool>,
}

/// The balancing algorithm and, for consistent hashing, what is hashed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'chash' || has(self.key)").message("type chash needs a key"))]
pub struct LoadBalancer {
    /// The algorithm.
    #[serde(rename = "type")]
    pub kind: BalancerType,
    /// For `chash`: where the key comes from (default vars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOn>,
    /// For `chash`: the variable, header or cookie name hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Balancing algorithms, named as APISIX names them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum BalancerType {
    Roundrobin,
    Chash,
    LeastConn,
    Ewma,
}

/// Sources of the consistent-hash key.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum HashOn {
    Vars,
    Header,
    Cookie,
    Consumer,
}

/// Protocols towards the nodes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Scheme {
    Http,
    Https,
    Grpc,
    Grpcs,
}

/// Host header policies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum PassHost {
    Pass,
    Node,
    Rewrite,
}

/// Health checks, with APISIX's fields and defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// Probes sent by the data plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveCheck>,
    /// Judgement from real traffic; needs `active` so that ejected nodes can come back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveCheck>,
}

/// Kinds of probe.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum CheckType {
    Http,
    Https,
    Tcp,
}

/// Active probing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveCheck {
    /// The probe kind (default http).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<CheckType>,
    /// Time allowed per probe (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+(\.[0-9]+)?(ms|s|m)$"))]
    pub timeout: Option<String>,
    /// Probes in flight at once (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub concurrency: Option<i64>,
    /// The probed path (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^/"))]
    pub http_path: Option<String>,
    /// The Host header of probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The probed port, when not the traffic port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i64>,
    /// Extra probe headers, as `Name: value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers: Vec<String>,
    /// When a node counts as healthy again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<ActiveHealthy>,
    /// When a node counts as unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<ActiveUnhealthy>,
}

/// Thresholds for marking a node healthy by probes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveHealthy {
    /// Time between probes of healthy nodes (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+(\.[0-9]+)?(ms|s|m)$"))]
    pub interval: Option<String>,
    /// Successes in a row to become healthy (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 254))]
    pub successes: Option<i64>,
    /// Statuses that count as success (default 200, 302).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(range(min = 200, max = 599)))]
    pub http_statuses: Vec<i64>,
}

/// Thresholds for marking a node unhealthy by probes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveUnhealthy {
    /// Time between probes of unhealthy nodes (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+(\.[0-9]+)?(ms|s|m)$"))]
    pub interval: Option<String>,
    /// HTTP failures in a row to become unhealthy (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 254))]
    pub http_failures: Option<i64>,
    /// TCP failures in a row to become unhealthy (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 254))]
    pub tcp_failures: Option<i64>,
    /// Timeouts in a row to become unhealthy (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 254))]
    pub timeouts: Option<i64>,
    /// Statuses that count as failure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(range(min = 200, max = 599)))]
    pub http_statuses: Vec<i64>,
}

/// Passive checking from real traffic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PassiveCheck {
    /// The traffic kind judged (default http).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<CheckType>,
    /// When a node counts as healthy from traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<PassiveHealthy>,
    /// When a node counts as unhealthy from traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<PassiveUnhealthy>,
}

/// Thresholds for healthy from traffic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PassiveHealthy {
    /// Successes in a row (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 254))]
    pub successes: Option<i64>,
    /// Statuses that count as success.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(range(min = 200, max = 599)))]
    pub http_statuses: Vec<i64>,
}

/// Thresholds for unhealthy from traffic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PassiveUnhealthy {
    /// HTTP failures in a row (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 254))]
    pub http_failures: Option<i64>,
    /// TCP failures in a row (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 254))]
    pub tcp_failures: Option<i64>,
    /// Timeouts in a row (default 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 254))]
    pub timeouts: Option<i64>,
    /// Statuses that count as failure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(range(min = 200, max = 599)))]
    pub http_statuses: Vec<i64>,
}

/// Endpoints of pods carrying some labels.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    /// The name backends use.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Pod labels that select the subset's endpoints.
    #[schemars(length(min = 1))]
    pub labels: BTreeMap<String, String>,
}

/// A node outside the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalNode {
    /// A host name or IP address.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The port (default: the scheme's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i64>,
    /// Relative share of traffic (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub weight: Option<i64>,
}
