//! Upstreams as the proxy uses them: the supported subset checked once, nodes resolved to authorities and
//! `Host` values, and the balancer, kept across config changes while the definition is unchanged.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use http::uri::Authority;
use sluice_model::{DecodeError, LoadBalancer, PassHost, Scheme, Timeout, Upstream};

use super::Rejected;
use crate::balancer::Balancer;

/// Timeout used for connect, send and read when neither the route nor the upstream sets one (APISIX's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The parts of an upstream that shape its runtime; a runtime is reused while these stay equal.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    nodes: Vec<(String, u16, u32)>,
    pass_host: PassHost,
    upstream_host: Option<String>,
    timeout: Option<Timeout>,
    retries: Option<u32>,
}

impl UpstreamSpec {
    /// Checks that an upstream uses only supported features and extracts what the proxy needs.
    pub fn from_model(up: &Upstream) -> Result<UpstreamSpec, Rejected> {
        let unsupported = |what: String| Err(Rejected::Unsupported(what));
        if up.lb != LoadBalancer::Roundrobin {
            return unsupported(format!("upstream type {}", up.lb));
        }
        if up.scheme != Scheme::Http {
            return unsupported(format!("upstream scheme {}", up.scheme));
        }
        if up.checks.is_some() {
            return unsupported("upstream checks (health checks)".into());
        }
        if up.tls.is_some() {
            return unsupported("upstream tls".into());
        }
        let list = up.nodes.to_list().map_err(|e| Rejected::Decode(DecodeError::Upstream(e)))?;
        if list.windows(2).any(|w| w[0].priority != w[1].priority) {
            return unsupported("nodes with different priorities".into());
        }
        let nodes = list.iter().map(|n| (n.host.clone(), n.port.unwrap_or(80), n.weight)).collect();
        let spec = UpstreamSpec {
            nodes,
            pass_host: up.pass_host,
            upstream_host: up.upstream_host.clone(),
            timeout: up.timeout,
            retries: up.retries,
        };
        Ok(spec)
    }
}

/// Timeouts for one route, after the route's `timeout` has overridden the upstream's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// Time allowed to open a connection to a node.
    pub connect: Duration,
    /// Time allowed between two writes of the request (not enforced separately yet).
    pub send: Duration,
    /// Time allowed to wait for the response headers, and between two reads of the response body.
    pub read: Duration,
}

impl Timeouts {
    pub(crate) fn from_model(t: Option<Timeout>) -> Timeouts {
        let secs = |s: f64| Duration::try_from_secs_f64(s).unwrap_or(DEFAULT_TIMEOUT);
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
    /// The `Host` header for `pass_host: node` (no port when it is the scheme default).
    pub host_header: HeaderValue,
}

/// The runtime of one upstream: nodes and balancer position. Shared by every route using the upstream and kept
/// across recompiles while its definition is unchanged.
#[derive(Debug)]
pub struct UpstreamRuntime {
    /// The upstream's id, or `route <id>` for an inline upstream; used in logs and errors.
    pub name: Arc<str>,
    spec: UpstreamSpec,
    /// The nodes, indexed as the balancer indexes them.
    pub nodes: Vec<NodeRuntime>,
    /// The smooth WRR state.
    pub balancer: Balancer,
    /// The `Host` header for `pass_host: rewrite`.
    pub rewrite_host: Option<HeaderValue>,
    /// How many nodes one request may try: 1 + `retries` (default: every node), at most the eligible nodes.
    pub max_tries: usize,
}

impl UpstreamRuntime {
    /// Builds the runtime of `spec`, named `name` in logs and errors.
    pub fn new(name: Arc<str>, spec: UpstreamSpec) -> Result<UpstreamRuntime, Rejected> {
        let mut nodes = Vec::with_capacity(spec.nodes.len());
        for (host, port, _) in &spec.nodes {
            let bracketed = if host.contains(':') { format!("[{host}]") } else { host.clone() };
            let authority = Authority::try_from(format!("{bracketed}:{port}"))
                .map_err(|e| Rejected::Unsupported(format!("node address {host}:{port} ({e})")))?;
            let host_text = if *port == 80 { bracketed } else { format!("{bracketed}:{port}") };
            let host_header = HeaderValue::try_from(host_text)
                .map_err(|e| Rejected::Unsupported(format!("node host {host} ({e})")))?;
            nodes.push(NodeRuntime { authority, host_header });
        }
        let weights: Vec<u32> = spec.nodes.iter().map(|(_, _, w)| *w).collect();
        let balancer = Balancer::new(&weights);
        let rewrite_host = match (spec.pass_host, &spec.upstream_host) {
            (PassHost::Rewrite, Some(h)) => Some(
                HeaderValue::try_from(h.as_str())
                    .map_err(|e| Rejected::Unsupported(format!("upstream_host {h:?} ({e})")))?,
            ),
            _ => None,
        };
        let eligible = balancer.eligible();
        let max_tries = spec.retries.map_or(eligible, |r| (r as usize).saturating_add(1)).clamp(1, eligible.max(1));
        Ok(UpstreamRuntime { name, spec, nodes, balancer, rewrite_host, max_tries })
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_supported_upstream_features() {
        let spec = |v: serde_json::Value| UpstreamSpec::from_model(&serde_json::from_value(v).unwrap());
        assert!(spec(json!({"nodes": {"a:1": 1}})).is_ok());
        assert!(spec(json!({"scheme": "https", "nodes": {"a:1": 1}})).is_err());
        assert!(spec(json!({"type": "least_conn", "nodes": {"a:1": 1}})).is_err());
        assert!(spec(json!({"checks": {}, "nodes": {"a:1": 1}})).is_err());
        assert!(spec(json!({"tls": {}, "nodes": {"a:1": 1}})).is_err());
        let tiers = json!({"nodes": [{"host": "a", "port": 1, "weight": 1, "priority": 1},
            {"host": "b", "port": 1, "weight": 1}]});
        assert!(spec(tiers).is_err());
    }

    #[test]
    fn route_timeout_overrides_upstream_timeout() {
        let t = Timeouts::from_model(Some(Timeout { connect: 1.0, send: 2.0, read: 0.3 }));
        assert_eq!(t.read, Duration::from_millis(300));
        assert_eq!(Timeouts::from_model(None).connect, DEFAULT_TIMEOUT);
    }
}
