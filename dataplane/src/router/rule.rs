//! The matching part of one route, compiled once when the route arrives.

use std::sync::Arc;

use sluice_model::Route;
use sluice_model::route::METHODS;

use super::path::PathPattern;
use super::{IpRange, RequestInfo, Unsupported, Vars, normalize_host};

/// One host pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum HostPattern {
    /// A name, lowercase.
    Exact(Arc<str>),
    /// The suffix after the `*`, starting with `.`.
    Wildcard(Arc<str>),
}

/// A compiled list of host patterns; empty means any host. Shared by a service and the routes that inherit it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts(Arc<[HostPattern]>);

impl Hosts {
    /// Compiles `host`/`hosts` values: names, or a leading `*.` wildcard (APISIX's rule for etcd routes: any
    /// deeper subdomain matches).
    pub fn compile<'a>(hosts: impl IntoIterator<Item = &'a str>) -> Result<Hosts, Unsupported> {
        hosts.into_iter().map(compile_host).collect::<Result<Vec<_>, _>>().map(|h| Hosts(h.into()))
    }

    /// Whether there is no host restriction.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &HostPattern> {
        self.0.iter()
    }
}

fn compile_host(host: &str) -> Result<HostPattern, Unsupported> {
    let lower = host.to_ascii_lowercase();
    match lower.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 && !suffix.contains('*') => {
            Ok(HostPattern::Wildcard(suffix.into()))
        }
        Some(_) => Err(Unsupported::Host(host.to_string())),
        None if lower.contains('*') => Err(Unsupported::Host(host.to_string())),
        None => Ok(HostPattern::Exact(normalize_host(&lower).into())),
    }
}

/// The matching part of one route, compiled. Cheap to clone: the lists are shared.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) id: Arc<str>,
    pub(crate) priority: i64,
    enabled: bool,
    pub(crate) hosts: Hosts,
    pub(crate) paths: Arc<[PathPattern]>,
    /// Bit `i` set means `METHODS[i]` is allowed; `None` allows any method.
    methods: Option<u16>,
    remote_addrs: Arc<[IpRange]>,
    /// `None` when there are no expressions, so the common case reads no extra memory.
    vars: Option<Arc<Vars>>,
}

impl Rule {
    /// Compiles the matching fields of a (validated) route; its own `hosts` only (see [`Rule::with_hosts`]).
    pub fn from_route(id: &str, route: &Route) -> Result<Rule, Unsupported> {
        let hosts = Hosts::compile(route.host_list())?;
        let paths = route.paths().map(PathPattern::compile).collect::<Result<Vec<_>, _>>()?;
        let methods =
            route.methods.as_ref().map(|list| list.iter().filter_map(|m| method_bit(m)).fold(0, |a, b| a | b));
        let remote_addrs = route
            .remote_addr_list()
            .map(|a| IpRange::parse(a).ok_or_else(|| Unsupported::RemoteAddr(a.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let vars = Vars::compile(route.vars.as_deref().unwrap_or_default())?;
        Ok(Rule {
            id: id.into(),
            priority: route.priority,
            enabled: route.is_enabled(),
            hosts,
            paths: paths.into(),
            methods,
            remote_addrs: remote_addrs.into(),
            vars: (!vars.is_empty()).then(|| Arc::new(vars)),
        })
    }

    /// This rule with `hosts` when it has none of its own (a route inherits its service's hosts).
    pub fn with_hosts(&self, hosts: &Hosts) -> Rule {
        if self.hosts.is_empty() { Rule { hosts: hosts.clone(), ..self.clone() } } else { self.clone() }
    }

    /// The route id.
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// Whether the route takes traffic (`status` 1).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the route restricts methods, client addresses or `vars` at all.
    pub(crate) fn has_conditions(&self) -> bool {
        self.methods.is_some() || !self.remote_addrs.is_empty() || self.vars.is_some()
    }

    /// Whether the method, client address and `vars` conditions hold (host and path were matched by the index).
    pub(crate) fn conditions_hold(&self, req: &RequestInfo<'_>) -> bool {
        if let Some(allowed) = self.methods
            && method_bit(req.method.as_str()).is_none_or(|bit| allowed & bit == 0)
        {
            return false;
        }
        if !self.remote_addrs.is_empty() && !self.remote_addrs.iter().any(|r| r.contains(req.remote_addr)) {
            return false;
        }
        self.vars.as_ref().is_none_or(|v| v.matches(req))
    }
}

fn method_bit(method: &str) -> Option<u16> {
    METHODS.iter().position(|m| *m == method).map(|i| 1 << i)
}
