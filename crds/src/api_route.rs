//! ApiRoute: HTTP routing rules with what Ingress cannot express.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Plugin, ResourceStatus, Timeout};

/// The desired routing of an ApiRoute: a list of named rules.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "ApiRoute",
    plural = "apiroutes",
    shortname = "ar",
    category = "sluice",
    namespaced,
    status = "ResourceStatus",
    printcolumn = r#"{"name":"Hosts","type":"string","jsonPath":".spec.http[*].match.hosts"}"#,
    printcolumn = r#"{"name":"Paths","type":"string","jsonPath":".spec.http[*].match.paths"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApiRouteSpec {
    /// The IngressClass whose controller serves this route; empty means the default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    /// The rules, each with a unique name.
    #[schemars(length(min = 1, max = 100))]
    #[x_kube(validation = Rule::new("self.all(a, self.filter(b, b.name == a.name).size() == 1)").message("rule names must be unique"))]
    pub http: Vec<HttpRule>,
}

/// One routing rule: what to match and where to send it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.backends) && self.backends.size() > 0) || (has(self.upstreams) && self.upstreams.size() > 0)").message("a rule needs backends or upstreams"))]
pub struct HttpRule {
    /// A name unique within the ApiRoute; part of the etcd route id.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// What requests this rule takes.
    #[serde(rename = "match")]
    pub matches: RouteMatch,
    /// Among rules matching the same path, higher goes first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// Services to send traffic to, weighted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<Backend>,
    /// Upstream resources with external nodes to send traffic to, weighted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<UpstreamReference>,
    /// Plugins for this rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<Plugin>,
    /// A PluginConfig in the same namespace whose plugins also apply (this rule's own config wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_config_name: Option<String>,
    /// Timeouts towards the backends, overriding the Upstream's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    /// Whether WebSocket upgrades are proxied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<bool>,
    /// Send each request to one backend, chosen by weight (and kept per client with a key), instead of spreading
    /// it over all backends' pods: canaries and blue-green. Backends only, not `upstreams`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
}

/// How a rule's traffic is split between its backends.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Split {
    /// Where the key that keeps one client on one backend comes from; none: the weights take turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_from: Option<SplitKeyFrom>,
    /// The header, query argument or cookie name (not for `Consumer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub key: Option<String>,
    /// The request header that tells the backend its `tag` (default `X-Traffic-Split-Tag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), pattern(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"))]
    pub tag_header: Option<String>,
}

/// Where a split's key comes from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum SplitKeyFrom {
    Header,
    Query,
    Cookie,
    Consumer,
}

/// Request conditions; all given ones must hold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// Paths: exact (`/a`), prefix (`/a/*`) or with parameters (`/users/:id`).
    // Bounded so that the API server's cost estimate of the rule below stays inside its budget.
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 4096)))]
    #[x_kube(validation = Rule::new("self.all(p, p.startsWith('/'))").message("paths must start with '/'"))]
    pub paths: Vec<String>,
    /// Allowed methods; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Method>,
    /// Hosts; a leading `*.` matches exactly one label. Empty means any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")))]
    pub hosts: Vec<String>,
    /// Conditions on headers, query arguments, cookies or the path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exprs: Vec<Expr>,
    /// Client addresses or CIDR blocks; empty means any client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_addrs: Vec<String>,
}

/// HTTP methods.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs, clippy::upper_case_acronyms)]
pub enum Method {
    GET,
    POST,
    PUT,
    DELETE,
    PATCH,
    HEAD,
    OPTIONS,
    CONNECT,
    TRACE,
}

impl Method {
    /// The method as APISIX writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::PATCH => "PATCH",
            Method::HEAD => "HEAD",
            Method::OPTIONS => "OPTIONS",
            Method::CONNECT => "CONNECT",
            Method::TRACE => "TRACE",
        }
    }
}

/// One condition on the request.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.op == 'In' || self.op == 'NotIn') ? (has(self.set) && self.set.size() > 0) : has(self.value)").message("In and NotIn need a non-empty set; other operators need a value"))]
pub struct Expr {
    /// What is tested.
    pub subject: Subject,
    /// How it is tested.
    pub op: Operator,
    /// The operand of single-value operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The operand of `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<String>,
}

/// The tested part of the request.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.scope == 'Path' || has(self.name)").message("Header, Query and Cookie subjects need a name"))]
pub struct Subject {
    /// Where the value comes from.
    pub scope: Scope,
    /// The header, argument or cookie name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub name: Option<String>,
}

/// Where a tested value comes from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum Scope {
    Header,
    Query,
    Cookie,
    Path,
}

/// Comparison operators, mapped to APISIX's expression operators.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum Operator {
    Equal,
    NotEqual,
    GreaterThan,
    LessThan,
    In,
    NotIn,
    RegexMatch,
    RegexNotMatch,
    RegexMatchCaseInsensitive,
    RegexNotMatchCaseInsensitive,
}

/// A Service to send traffic to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// The Service, in the ApiRoute's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub service_name: String,
    /// The Service port, by number or name.
    pub service_port: IntOrString,
    /// Relative share of the rule's traffic (default 100); 0 takes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub weight: Option<i64>,
    /// `Endpoint` (default) sends to pod addresses; `Service` sends to the Service's cluster IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_granularity: Option<ResolveGranularity>,
    /// Only endpoints whose pods carry the labels of this subset of the Service's Upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// With `split`: the value of the split's tag header on requests sent to this backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub tag: Option<String>,
}

/// How a Service backend becomes nodes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum ResolveGranularity {
    Endpoint,
    Service,
}

/// An Upstream resource (with external nodes) to send traffic to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamReference {
    /// The Upstream, in the ApiRoute's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Relative share of the rule's traffic (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub weight: Option<i64>,
}
