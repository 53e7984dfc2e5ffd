//! Upstreams as the proxy uses them: the supported subset checked once, nodes resolved to authorities and
//! `Host` values, and the balancer, kept across config changes while the definition is unchanged.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use http::uri::Authority;
use sluice_model::{DecodeError, LoadBalancer, PassHost, Scheme, Timeout, Upstream};

use super::balancer::{self, Balancer, NodeSpec};
use super::health::{Checks, Observed, PassiveState, ProbeKind};
use super::pool::{NodePool, Pool, Pools, Protocol};
use super::tls::{TlsClient, TlsSettings, server_name};
use crate::error::Rejected;
use crate::metrics::{Metrics, UpstreamMetrics};
use crate::router::template::{Scope, Template, verbatim};
use crate::router::{RequestInfo, Variable};

/// Timeout used for connect, send and read when neither the route nor the upstream sets one (APISIX's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest timeout honoured; larger values are clamped to it.
const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

/// The parts of an upstream that shape its runtime; a runtime is reused while these stay equal.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    /// `(host, port, weight, priority, zone)` of every node.
    nodes: Vec<(String, u16, u32, i32, Option<String>)>,
    /// Whether nodes in the data plane's own zone are preferred.
    zone_aware: bool,
    lb: LoadBalancer,
    hash_on: Option<String>,
    key: Option<String>,
    pass_host: PassHost,
    upstream_host: Option<String>,
    timeout: Option<Timeout>,
    retries: Option<u32>,
    retry_timeout: Option<f64>,
    checks: Option<Checks>,
    pool: Pool,
    /// TLS settings; `Some` exactly when the scheme is `https` or `grpcs`.
    tls: Option<TlsSettings>,
    /// HTTP/1.1, or HTTP/2 for `grpc` and `grpcs`.
    protocol: Protocol,
}

impl UpstreamSpec {
    /// Checks that an upstream uses only supported features and extracts what the proxy needs.
    pub fn from_model(up: &Upstream) -> Result<UpstreamSpec, Rejected> {
        let unsupported = |what: String| Err(Rejected::Unsupported(what));
        let settings = || {
            TlsSettings::parse(up.tls.as_ref()).map_err(|e| match e.strip_prefix("tls.client_cert_id") {
                Some(_) => Rejected::Unsupported(e),
                None => Rejected::Invalid(e),
            })
        };
        let (tls, protocol) = match up.scheme {
            Scheme::Http => (None, Protocol::Http1),
            Scheme::Https => (Some(settings()?), Protocol::Http1),
            Scheme::Grpc => (None, Protocol::Http2),
            Scheme::Grpcs => (Some(TlsSettings { h2: true, ..settings()? }), Protocol::Http2),
            other => return unsupported(format!("upstream scheme {other}")),
        };
        let checks = up.checks.as_ref().map(Checks::parse).transpose().map_err(Rejected::Invalid)?;
        let by_consumer = up.hash_on.as_deref() == Some("consumer");
        if up.lb == LoadBalancer::Chash && !by_consumer && up.key.as_deref().unwrap_or("").is_empty() {
            // Decoding validates this too; kept so a spec built from an unvalidated model is never keyless.
            return Err(Rejected::Decode(DecodeError::Upstream(sluice_model::InvalidUpstream::ChashWithoutKey)));
        }
        let list = up.nodes.to_list().map_err(|e| Rejected::Decode(DecodeError::Upstream(e)))?;
        let nodes = list
            .iter()
            .map(|n| {
                let port = n.port.unwrap_or(up.scheme.default_port());
                (n.host.clone(), port, n.weight, n.priority, n.zone().map(str::to_string))
            })
            .collect();
        let spec = UpstreamSpec {
            nodes,
            zone_aware: up.zone_aware.unwrap_or(true),
            lb: up.lb,
            hash_on: up.hash_on.clone(),
            key: up.key.clone(),
            pass_host: up.pass_host,
            upstream_host: up.upstream_host.clone(),
            timeout: up.timeout,
            retries: up.retries,
            retry_timeout: up.retry_timeout,
            checks,
            pool: up.keepalive_pool.as_ref().map(keepalive_pool).transpose()?.unwrap_or_default(),
            tls,
            protocol,
        };
        // Check the hash key now, so a bad one rejects the upstream instead of failing on the request path.
        HashKey::compile(&spec)?;
        Ok(spec)
    }
}

/// `keepalive_pool` in APISIX's shape: `size` (default 320), `idle_timeout` seconds (default 60), `requests`
/// (default 1000).
fn keepalive_pool(value: &serde_json::Value) -> Result<Pool, Rejected> {
    let invalid = |what: &str| Rejected::Invalid(format!("keepalive_pool: {what}"));
    let object = value.as_object().ok_or_else(|| invalid("must be an object"))?;
    let mut pool = Pool::default();
    for (key, v) in object {
        match key.as_str() {
            "size" => {
                let size =
                    v.as_u64().filter(|s| *s >= 1).ok_or_else(|| invalid("size must be an integer of at least 1"))?;
                pool.size = usize::try_from(size).unwrap_or(usize::MAX);
            }
            "idle_timeout" => {
                let secs = v.as_f64().filter(|s| s.is_finite() && *s >= 0.0);
                let secs = secs.ok_or_else(|| invalid("idle_timeout must be a number of seconds, 0 or more"))?;
                pool.idle_timeout =
                    Duration::try_from_secs_f64(secs).map_err(|_| invalid("idle_timeout is too large"))?;
            }
            "requests" => {
                pool.requests = v
                    .as_u64()
                    .filter(|r| *r >= 1)
                    .ok_or_else(|| invalid("requests must be an integer of at least 1"))?;
            }
            other => return Err(invalid(&format!("unknown field {other:?}"))),
        }
    }
    Ok(pool)
}

/// Where a hashed choice takes its key from: a `chash` upstream's `hash_on` and `key`, and traffic-split's.
#[derive(Debug, Clone)]
pub(crate) enum HashKey {
    /// One request variable (`hash_on` `vars`, `header`, `cookie`).
    Var(Variable),
    /// `vars_combinations`: text with `$var` references, such as `$host$uri`.
    Template(Template),
    /// `hash_on: consumer`: the authenticated consumer's name.
    Consumer,
}

impl HashKey {
    /// The key of a `chash` upstream, `None` for other algorithms.
    fn compile(spec: &UpstreamSpec) -> Result<Option<HashKey>, Rejected> {
        if spec.lb != LoadBalancer::Chash {
            return Ok(None);
        }
        HashKey::parse(spec.hash_on.as_deref(), spec.key.as_deref().unwrap_or("")).map(Some)
    }

    /// The key that `hash_on` (default `vars`) and `key` name.
    pub(crate) fn parse(hash_on: Option<&str>, key: &str) -> Result<HashKey, Rejected> {
        let var = |name: String| {
            Variable::parse(&name).ok_or_else(|| Rejected::Unsupported(format!("hash key variable {name:?}")))
        };
        let compiled = match hash_on.unwrap_or("vars") {
            "vars" => HashKey::Var(var(key.to_string())?),
            // APISIX reads these through nginx's `http_*` and `cookie_*` variables.
            "header" => HashKey::Var(var(format!("http_{}", key.to_ascii_lowercase().replace('-', "_")))?),
            "cookie" => HashKey::Var(var(format!("cookie_{key}"))?),
            "consumer" => HashKey::Consumer,
            "vars_combinations" => {
                let template =
                    Template::compile(key, false).map_err(|e| Rejected::Unsupported(format!("hash key: {e}")))?;
                if template.is_contextual() {
                    return Err(Rejected::Unsupported(format!("hash key {key:?}: only request variables")));
                }
                HashKey::Template(template)
            }
            other => return Err(Rejected::Unsupported(format!("hash_on {other:?}"))),
        };
        Ok(compiled)
    }

    /// The hash of this request's key, `None` when the key is absent or empty (or, for `hash_on: consumer`, when
    /// no consumer was authenticated).
    pub(crate) fn hash_of(&self, req: &RequestInfo<'_>, consumer: Option<&str>) -> Option<u64> {
        let text = match self {
            HashKey::Var(v) => v.value(req),
            HashKey::Template(t) => Some(t.render(req, &Scope::default(), verbatim)),
            HashKey::Consumer => consumer.map(Cow::Borrowed),
        };
        text.filter(|t| !t.is_empty()).map(|t| balancer::hash_key(t.as_bytes()))
    }

    /// The hash of this request's key; the client address's when the key is absent, as APISIX's `chash` does.
    fn hash(&self, req: &RequestInfo<'_>, consumer: Option<&str>) -> u64 {
        self.hash_of(req, consumer).unwrap_or_else(|| balancer::hash_key(req.remote_addr.to_string().as_bytes()))
    }
}

/// Timeouts for one route, after the route's `timeout` has overridden the upstream's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// Time allowed to open a connection to a node.
    pub connect: Duration,
    /// Time the node may take to accept more of a request body being uploaded.
    pub send: Duration,
    /// Time allowed to wait for the response headers, and between two reads of the response body.
    pub read: Duration,
}

impl Timeouts {
    pub(crate) fn from_model(t: Option<Timeout>) -> Timeouts {
        // Clamped to a day so deadlines computed from them never overflow.
        let secs = |s: f64| Duration::try_from_secs_f64(s).unwrap_or(DEFAULT_TIMEOUT).min(MAX_TIMEOUT);
        match t {
            Some(t) => Timeouts { connect: secs(t.connect), send: secs(t.send), read: secs(t.read) },
            None => Timeouts { connect: DEFAULT_TIMEOUT, send: DEFAULT_TIMEOUT, read: DEFAULT_TIMEOUT },
        }
    }
}

/// One node, with what the proxy needs precomputed.
#[derive(Debug)]
pub struct NodeRuntime {
    /// `host:port` to dial.
    pub authority: Authority,
    /// The same as text, for logs and metrics labels.
    pub address: Arc<str>,
    /// The `Host` header for `pass_host: node` (no port when it is the scheme default).
    pub host_header: HeaderValue,
    /// Idle connections to the node, shared with every upstream that uses the same node and settings.
    pub pool: Arc<NodePool>,
    /// For TLS, the server name of `host_header` (`None` without TLS, or when it is no valid name).
    pub tls_name: Option<String>,
}

/// The runtime of one upstream: nodes and balancer state. Shared by every route using the upstream and kept
/// across recompiles while its definition is unchanged.
#[derive(Debug)]
pub struct UpstreamRuntime {
    /// The upstream's id, or `route <id>` for an inline upstream; used in logs and errors.
    pub name: Arc<str>,
    spec: UpstreamSpec,
    /// The nodes, indexed as the balancer indexes them.
    pub nodes: Vec<NodeRuntime>,
    /// The balancing state.
    pub balancer: Balancer,
    hash_key: Option<HashKey>,
    /// The `Host` header for `pass_host: rewrite`.
    pub rewrite_host: Option<HeaderValue>,
    /// For TLS, the server name of `rewrite_host`.
    pub rewrite_tls_name: Option<String>,
    /// How many nodes one request may try: 1 + `retries` (default: every node), at most the eligible nodes.
    pub max_tries: usize,
    /// Passive health counters, when `checks.passive` is set.
    pub passive: Option<PassiveState>,
    /// Metric handles, resolved once here.
    pub metrics: UpstreamMetrics,
    /// No new attempt starts once this much time has passed since the first (`retry_timeout`; 0 or absent means
    /// no limit, as in APISIX).
    pub retry_timeout: Option<Duration>,
    /// TLS for `https` active checks: the upstream's client certificate, verified as
    /// `checks.active.https_verify_certificate` says.
    pub probe_tls: Option<Arc<TlsClient>>,
}

impl UpstreamRuntime {
    /// Builds the runtime of `spec`, named `name` in logs and errors, for a data plane in `zone`.
    pub fn new(
        name: Arc<str>,
        spec: UpstreamSpec,
        metrics: &Metrics,
        pools: &Pools,
        zone: Option<&str>,
    ) -> Result<UpstreamRuntime, Rejected> {
        let tls = spec.tls.as_ref().map(|t| pools.tls(t)).transpose().map_err(Rejected::Invalid)?;
        let default_port = if tls.is_some() { 443 } else { 80 };
        let mut nodes = Vec::with_capacity(spec.nodes.len());
        let mut balanced = Vec::with_capacity(spec.nodes.len());
        for (host, port, weight, priority, node_zone) in &spec.nodes {
            let bracketed = if host.contains(':') { format!("[{host}]") } else { host.clone() };
            let address = format!("{bracketed}:{port}");
            let authority = Authority::try_from(address.as_str())
                .map_err(|e| Rejected::Unsupported(format!("node address {host}:{port} ({e})")))?;
            let host_text = if *port == default_port { bracketed } else { address.clone() };
            let host_header = HeaderValue::try_from(host_text)
                .map_err(|e| Rejected::Unsupported(format!("node host {host} ({e})")))?;
            let pool = pools.node(&authority, spec.pool, tls.clone(), spec.protocol);
            // Said once per build; each request that picks the node is answered 502 without dialling it.
            if let Ok(ip) = host.parse::<std::net::IpAddr>()
                && !pools.policy().admits(std::net::SocketAddr::new(ip, *port))
            {
                tracing::warn!(upstream = %name, node = %address, "node refused by the upstream address policy");
            }
            let tls_name = tls.as_ref().and_then(|_| server_name(&host_header)).map(Cow::into_owned);
            nodes.push(NodeRuntime { address: Arc::from(authority.as_str()), authority, host_header, pool, tls_name });
            let priority = match zone.filter(|_| spec.zone_aware) {
                // The zone ranks below the configured priority: within a tier, this zone's nodes first, and the
                // rest when they are all down.
                Some(own) => priority.saturating_mul(2).saturating_add(i32::from(node_zone.as_deref() == Some(own))),
                None => *priority,
            };
            balanced.push(NodeSpec { address, weight: *weight, priority });
        }
        let balancer = Balancer::with_algorithm(spec.lb, &balanced);
        let hash_key = HashKey::compile(&spec)?;
        let rewrite_host = match (spec.pass_host, &spec.upstream_host) {
            (PassHost::Rewrite, Some(h)) => Some(
                HeaderValue::try_from(h.as_str())
                    .map_err(|e| Rejected::Unsupported(format!("upstream_host {h:?} ({e})")))?,
            ),
            _ => None,
        };
        let rewrite_tls_name =
            rewrite_host.as_ref().filter(|_| tls.is_some()).and_then(server_name).map(Cow::into_owned);
        let eligible = balancer.eligible();
        let max_tries = spec.retries.map_or(eligible, |r| (r as usize).saturating_add(1)).clamp(1, eligible.max(1));
        let retry_timeout = spec.retry_timeout.filter(|t| *t > 0.0).and_then(|t| Duration::try_from_secs_f64(t).ok());
        let metrics = metrics.upstream(&name);
        let passive = spec.checks.as_ref().and_then(|c| c.passive.clone()).map(|p| PassiveState::new(p, nodes.len()));
        let probe_tls = match spec.checks.as_ref().and_then(|c| c.active.as_ref()) {
            Some(active) if active.kind == ProbeKind::Https => {
                // Probes speak HTTP/1.1, also to gRPC nodes.
                let base = spec.tls.clone().unwrap_or_default();
                let settings = TlsSettings { verify: active.https_verify_certificate, h2: false, ..base };
                Some(pools.tls(&settings).map_err(Rejected::Invalid)?)
            }
            _ => None,
        };
        Ok(UpstreamRuntime {
            name,
            spec,
            nodes,
            balancer,
            hash_key,
            rewrite_host,
            rewrite_tls_name,
            max_tries,
            passive,
            metrics,
            retry_timeout,
            probe_tls,
        })
    }

    /// The definition this runtime was built from.
    pub fn spec(&self) -> &UpstreamSpec {
        &self.spec
    }

    /// The upstream's own timeouts, which a route's `timeout` overrides.
    pub fn timeout(&self) -> Option<Timeout> {
        self.spec.timeout
    }

    /// How the `Host` header is chosen.
    pub fn pass_host(&self) -> PassHost {
        self.spec.pass_host
    }

    /// The health-check settings.
    pub fn checks(&self) -> Option<&Checks> {
        self.spec.checks.as_ref()
    }

    /// Copies the health of nodes that `old` also has (same address) into this runtime, so a change to some
    /// nodes does not make the others healthy again before their checks say so.
    pub fn inherit_health(&self, old: &UpstreamRuntime) {
        let unhealthy: std::collections::HashSet<&Authority> =
            (0..old.nodes.len()).filter(|&j| !old.balancer.is_healthy(j)).map(|j| &old.nodes[j].authority).collect();
        if unhealthy.is_empty() {
            return;
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if unhealthy.contains(&node.authority) {
                self.balancer.set_healthy(i, false);
            }
        }
    }

    /// Feeds what a request saw on `node` to the passive health checks, if any.
    pub fn observe(&self, node: usize, seen: Observed) {
        if let Some(p) = &self.passive {
            p.observe(&self.balancer, node, seen);
        }
    }

    /// Whether picking a node needs the request's hash ([`UpstreamRuntime::hash`]).
    pub fn hashes(&self) -> bool {
        self.hash_key.is_some()
    }

    /// The request's `chash` key hashed (`consumer`: the authenticated consumer); 0 for other algorithms.
    pub fn hash(&self, req: &RequestInfo<'_>, consumer: Option<&str>) -> u64 {
        self.hash_key.as_ref().map_or(0, |k| k.hash(req, consumer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_supported_upstream_features() {
        let spec = |v: serde_json::Value| UpstreamSpec::from_model(&serde_json::from_value(v).unwrap());
        assert!(spec(json!({"nodes": {"a:1": 1}})).is_ok());
        assert!(spec(json!({"scheme": "https", "nodes": {"a:1": 1}})).is_ok());
        assert!(spec(json!({"scheme": "grpc", "nodes": {"a:1": 1}})).is_ok_and(|s| s.protocol == Protocol::Http2));
        assert!(spec(json!({"scheme": "grpcs", "nodes": {"a:1": 1}})).is_ok_and(|s| s.tls.is_some_and(|t| t.h2)));
        assert!(spec(json!({"scheme": "tls", "nodes": {"a:1": 1}})).is_err(), "stream proxying is not supported");
        assert!(spec(json!({"scheme": "https", "tls": {"client_cert": "x"}, "nodes": {"a:1": 1}})).is_err());
        assert!(spec(json!({"type": "least_conn", "nodes": {"a:1": 1}})).is_ok());
        assert!(spec(json!({"type": "ewma", "nodes": {"a:1": 1}})).is_ok());
        assert!(spec(json!({"type": "chash", "key": "remote_addr", "nodes": {"a:1": 1}})).is_ok());
        assert!(spec(json!({"type": "chash", "nodes": {"a:1": 1}})).is_err(), "chash needs a key");
        assert!(spec(json!({"type": "chash", "key": "nope", "nodes": {"a:1": 1}})).is_err(), "unknown variable");
        let combo =
            json!({"type": "chash", "hash_on": "vars_combinations", "key": "$host-$bogus", "nodes": {"a:1": 1}});
        assert!(spec(combo).is_err());
        assert!(spec(json!({"checks": {"active": {}}, "nodes": {"a:1": 1}})).is_ok());
        assert!(spec(json!({"checks": {"active": {"timeout": -1}}, "nodes": {"a:1": 1}})).is_err());
        assert!(spec(json!({"checks": {"passive": {}}, "nodes": {"a:1": 1}})).is_err(), "passive needs active");
        let pool = |p: serde_json::Value| spec(json!({"keepalive_pool": p, "nodes": {"a:1": 1}})).map(|s| s.pool);
        assert_eq!(pool(json!({})).unwrap(), Pool::default());
        let custom = pool(json!({"size": 8, "idle_timeout": 2.5, "requests": 5})).unwrap();
        assert_eq!(custom, Pool { size: 8, idle_timeout: Duration::from_millis(2500), requests: 5 });
        assert!(pool(json!({"requests": 0})).is_err());
        assert!(pool(json!({"size": 0})).is_err());
        assert!(pool(json!({"idle_timeout": -1})).is_err());
        assert!(spec(json!({"tls": {}, "nodes": {"a:1": 1}})).is_ok(), "tls is ignored for plain http, as in APISIX");
        let tiers = json!({"nodes": [{"host": "a", "port": 1, "weight": 1, "priority": 1},
            {"host": "b", "port": 1, "weight": 1}]});
        assert!(spec(tiers).is_ok());
    }

    #[test]
    fn hashes_the_configured_request_value() {
        let runtime = |v: serde_json::Value| {
            let spec = UpstreamSpec::from_model(&serde_json::from_value(v).unwrap()).unwrap();
            UpstreamRuntime::new("u".into(), spec, &Metrics::new(), &Pools::default(), None).unwrap()
        };
        let mut headers = http::HeaderMap::new();
        headers.insert("x-user", "alice".parse().unwrap());
        headers.insert("cookie", "a=1; sid=s42".parse().unwrap());
        let req = RequestInfo {
            method: &http::Method::GET,
            host: "example.com",
            path: "/p",
            query: Some("id=7"),
            headers: &headers,
            remote_addr: "10.1.2.3".parse().unwrap(),
            tls: false,
        };
        let nodes = json!({"a:1": 1, "b:1": 1});
        let h = |on: &str, key: &str| {
            runtime(json!({"type": "chash", "hash_on": on, "key": key, "nodes": nodes})).hash(&req, None)
        };
        let of = |text: &str| balancer::hash_key(text.as_bytes());
        assert_eq!(h("vars", "arg_id"), of("7"));
        assert_eq!(h("vars", "uri"), of("/p"));
        assert_eq!(h("header", "X-User"), of("alice"));
        assert_eq!(h("cookie", "sid"), of("s42"));
        assert_eq!(h("vars_combinations", "$host-$uri"), of("example.com-/p"));
        // Absent values and consumers fall back to the client address.
        assert_eq!(h("header", "x-missing"), of("10.1.2.3"));
        assert_eq!(h("consumer", "x"), of("10.1.2.3"));
        let by_consumer = runtime(json!({"type": "chash", "hash_on": "consumer", "nodes": nodes}));
        assert_eq!(by_consumer.hash(&req, Some("jack")), of("jack"));
        let rr = runtime(json!({"nodes": nodes}));
        assert!(!rr.hashes());
        assert_eq!(rr.hash(&req, Some("jack")), 0);
    }

    #[test]
    fn route_timeout_overrides_upstream_timeout() {
        let t = Timeouts::from_model(Some(Timeout { connect: 1.0, send: 2.0, read: 0.3 }));
        assert_eq!(t.read, Duration::from_millis(300));
        assert_eq!(Timeouts::from_model(None).connect, DEFAULT_TIMEOUT);
    }
}
