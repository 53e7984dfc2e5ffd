//! The route object: which requests it matches and where they go.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plugins::Plugins;
use crate::upstream::{InvalidUpstream, Timeout, Upstream};
use crate::validate::{self, InvalidId, InvalidLabel};

/// HTTP methods APISIX accepts in `methods`.
pub const METHODS: [&str; 10] =
    ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE"];

/// A route as stored under `<prefix>/routes/<id>`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Route {
    /// The id, also the last segment of the key.
    #[serde(default, deserialize_with = "crate::id::opt", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    /// One path: exact, or a prefix when it ends in `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Several paths, any of which matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uris: Option<Vec<String>>,
    /// One host; a leading `*.` is a wildcard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Several hosts, any of which matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// Allowed methods; absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// One client address or CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    /// Client addresses or CIDRs, any of which matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_addrs: Option<Vec<String>>,
    /// Extra conditions as APISIX expressions (`[["http_x", "==", "y"], ...]`), kept as JSON until compiled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vars: Option<Vec<Value>>,
    /// Among routes matching the same path, higher goes first.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i64,
    /// 1 enabled (the default), 0 disabled.
    #[serde(default, skip_serializing_if = "Status::is_enabled")]
    pub status: Status,
    /// An inline upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
    /// A reference to `<prefix>/upstreams/<id>`.
    #[serde(default, deserialize_with = "crate::id::opt", skip_serializing_if = "Option::is_none")]
    pub upstream_id: Option<String>,
    /// A reference to `<prefix>/services/<id>`.
    #[serde(default, deserialize_with = "crate::id::opt", skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    /// A reference to `<prefix>/plugin_configs/<id>`.
    #[serde(default, deserialize_with = "crate::id::opt", skip_serializing_if = "Option::is_none")]
    pub plugin_config_id: Option<String>,
    /// Plugins by name with their configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<Plugins>,
    /// Timeouts overriding the upstream's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    /// Whether WebSocket upgrades are proxied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_websocket: Option<bool>,
    /// Labels; the controller uses them to record ownership.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Creation time (seconds since the epoch) as the Admin API records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<i64>,
    /// Last update time (seconds since the epoch) as the Admin API records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<i64>,
    /// Fields this version does not know; any makes the route invalid rather than silently ignored.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// APISIX's route `status`: 1 takes traffic (the default when absent), 0 is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Status(pub u8);

impl Default for Status {
    fn default() -> Self {
        Status(1)
    }
}

impl Status {
    /// Whether the route takes traffic.
    pub fn is_enabled(&self) -> bool {
        self.0 == 1
    }
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Why a route is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidRoute {
    /// The id breaks APISIX's id rule.
    #[error(transparent)]
    Id(#[from] InvalidId),
    /// A label breaks APISIX's label rule.
    #[error(transparent)]
    Label(#[from] InvalidLabel),
    /// Neither `uri` nor `uris` is set, or both are.
    #[error("exactly one of uri and uris must be set")]
    Paths,
    /// A path is empty, does not start with `/`, or has `*` before its end.
    #[error("path {0:?} must start with '/' and may only end in '*'")]
    Path(String),
    /// Both `host` and `hosts` are set, or a host is empty.
    #[error("host {0:?} is invalid: use host or hosts, not both, with non-empty names")]
    Host(String),
    /// Both `remote_addr` and `remote_addrs` are set.
    #[error("use remote_addr or remote_addrs, not both")]
    RemoteAddr,
    /// A method APISIX does not know.
    #[error("method {0:?} must be one of {METHODS:?}")]
    Method(String),
    /// `status` is neither 0 nor 1.
    #[error("status must be 0 or 1, not {0}")]
    Status(u8),
    /// Nothing says where matched requests go.
    #[error("one of upstream, upstream_id, service_id or plugins must be set")]
    NoTarget,
    /// The inline upstream is invalid.
    #[error("inline upstream: {0}")]
    Upstream(#[from] InvalidUpstream),
    /// A timeout is zero, negative or not a number.
    #[error("timeout connect, send and read must be positive numbers of seconds")]
    Timeout,
    /// A field this version does not know.
    #[error("unknown field {0:?}")]
    UnknownField(String),
}

impl Route {
    /// The paths of `uri` or `uris`.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.uri.iter().map(String::as_str).chain(self.uris.iter().flatten().map(String::as_str))
    }

    /// The hosts of `host` or `hosts`; empty means any host.
    pub fn host_list(&self) -> impl Iterator<Item = &str> {
        self.host.iter().map(String::as_str).chain(self.hosts.iter().flatten().map(String::as_str))
    }

    /// The addresses of `remote_addr` or `remote_addrs`; empty means any client.
    pub fn remote_addr_list(&self) -> impl Iterator<Item = &str> {
        self.remote_addr.iter().map(String::as_str).chain(self.remote_addrs.iter().flatten().map(String::as_str))
    }

    /// Whether the route takes traffic (`status` 1).
    pub fn is_enabled(&self) -> bool {
        self.status.is_enabled()
    }

    /// Checks every rule a route must follow, returning the first broken one.
    pub fn validate(&self) -> Result<(), InvalidRoute> {
        validate::id(self.id.as_deref())?;
        validate::labels(&self.labels)?;
        if let Some(field) = self.unknown.keys().next() {
            return Err(InvalidRoute::UnknownField(field.clone()));
        }
        let uris_set = self.uris.as_ref().is_some_and(|u| !u.is_empty());
        if self.uri.is_some() == uris_set {
            return Err(InvalidRoute::Paths);
        }
        if let Some(path) = self.paths().find(|p| !valid_path(p)) {
            return Err(InvalidRoute::Path(path.to_string()));
        }
        if self.host.is_some() && self.hosts.is_some() {
            return Err(InvalidRoute::Host(self.host.clone().unwrap_or_default()));
        }
        if let Some(host) = self.host_list().find(|h| h.is_empty() || h.contains(char::is_whitespace)) {
            return Err(InvalidRoute::Host(host.to_string()));
        }
        if self.remote_addr.is_some() && self.remote_addrs.is_some() {
            return Err(InvalidRoute::RemoteAddr);
        }
        if let Some(m) = self.methods.iter().flatten().find(|m| !METHODS.contains(&m.as_str())) {
            return Err(InvalidRoute::Method(m.clone()));
        }
        if self.status.0 > 1 {
            return Err(InvalidRoute::Status(self.status.0));
        }
        if self.upstream.is_none()
            && self.upstream_id.is_none()
            && self.service_id.is_none()
            && self.plugins.as_ref().is_none_or(Plugins::is_empty)
        {
            return Err(InvalidRoute::NoTarget);
        }
        if let Some(upstream) = &self.upstream {
            upstream.validate()?;
        }
        if self.timeout.is_some_and(|t| ![t.connect, t.send, t.read].into_iter().all(validate::seconds)) {
            return Err(InvalidRoute::Timeout);
        }
        Ok(())
    }
}

fn valid_path(path: &str) -> bool {
    path.starts_with('/') && path.find('*').is_none_or(|i| i == path.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Route {
        let r: Route = serde_json::from_value(v).unwrap();
        r.validate().unwrap();
        let back: Route = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r, "serde round trip");
        r
    }

    #[test]
    fn parses_admin_api_examples() {
        let r = parse(json!({
            "uri": "/index.html", "hosts": ["foo.com", "*.bar.com"], "remote_addrs": ["127.0.0.0/8"],
            "methods": ["PUT", "GET"], "enable_websocket": true,
            "upstream": {"type": "roundrobin", "nodes": {"127.0.0.1:1980": 1}}
        }));
        assert_eq!(r.host_list().collect::<Vec<_>>(), ["foo.com", "*.bar.com"]);
        assert!(r.is_enabled());
        let r = parse(json!({"id": 1, "uris": ["/hello", "/world/*"], "upstream_id": 1, "priority": 10,
            "status": 0, "name": "r1", "labels": {"version": "v2"}, "timeout": {"connect": 3, "send": 3, "read": 3},
            "vars": [["arg_name", "==", "json"]], "plugin_config_id": "pc1", "service_id": "s1"}));
        assert_eq!(r.id.as_deref(), Some("1"));
        assert_eq!(r.upstream_id.as_deref(), Some("1"));
        assert_eq!(r.paths().collect::<Vec<_>>(), ["/hello", "/world/*"]);
        assert!(!r.is_enabled());
        let r = parse(json!({"uri": "/p", "plugins": {"key-auth": {"header": "k"}}}));
        assert!(r.plugins.as_ref().and_then(|p| p.get("key-auth")).is_some());
        assert!(serde_json::from_value::<Route>(json!({"uri": "/p", "plugins": {"nope": {}}})).is_err());
    }

    #[test]
    fn rejects_broken_routes() {
        let bad = |v: Value| serde_json::from_value::<Route>(v).unwrap().validate().unwrap_err();
        assert_eq!(bad(json!({"upstream_id": "1"})), InvalidRoute::Paths);
        assert_eq!(bad(json!({"uri": "/a", "uris": ["/b"], "upstream_id": "1"})), InvalidRoute::Paths);
        assert_eq!(bad(json!({"uri": "a", "upstream_id": "1"})), InvalidRoute::Path("a".into()));
        assert_eq!(bad(json!({"uri": "/a*b", "upstream_id": "1"})), InvalidRoute::Path("/a*b".into()));
        assert_eq!(
            bad(json!({"uri": "/a", "methods": ["FETCH"], "upstream_id": "1"})),
            InvalidRoute::Method("FETCH".into())
        );
        assert_eq!(bad(json!({"uri": "/a", "status": 2, "upstream_id": "1"})), InvalidRoute::Status(2));
        assert_eq!(bad(json!({"uri": "/a"})), InvalidRoute::NoTarget);
        assert_eq!(
            bad(json!({"uri": "/a", "upstream_id": "1", "script": "x"})),
            InvalidRoute::UnknownField("script".into())
        );
        assert!(matches!(
            bad(json!({"uri": "/a", "upstream": {"type": "chash", "nodes": {}}})),
            InvalidRoute::Upstream(_)
        ));
        assert!(serde_json::from_value::<Route>(json!({"uri": 5})).is_err());
    }
}
