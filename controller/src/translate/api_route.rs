//! ApiRoute → routes (one per rule), with upstreams for their backends.
//!
//! A rule that cannot be expressed (a bad path, host, expression, address or duration), or whose plugins cannot
//! be configured (a missing Secret), is left out and reported; the other rules of the same ApiRoute are still
//! written. A missing Service, Upstream or PluginConfig is reported too, but the rule is written: it answers 503
//! until the reference resolves.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};
use sluice_crds::ApiRoute;
use sluice_crds::api_route::{Backend, HttpRule, Operator, ResolveGranularity, Scope, Split, SplitKeyFrom};
use sluice_model::{Nodes, Route, Upstream, labels};

use super::backend::{BackendRef, Index, NODE_WEIGHT, PortRef};
use super::secrets::Secrets;
use super::{ObjectRef, Problem, Reason, StatusUpdate, hosts, ids, plugins, policy};
use crate::config::Config;
use crate::resources::{Resources, name, namespace};

/// Translates one ApiRoute into `config`; returns its status.
pub(super) fn translate(
    ar: &ApiRoute,
    index: &Index,
    secrets: &Secrets,
    resources: &Resources,
    config: &mut Config,
) -> StatusUpdate {
    let (ns, ar_name) = (namespace(&ar.metadata), name(&ar.metadata));
    let object = ObjectRef { kind: "ApiRoute".into(), namespace: ns.into(), name: ar_name.into() };
    let mut problems = Vec::new();
    for rule in &ar.spec.http {
        let mut rule_problems = Vec::new();
        let route = route(rule, ns, ar_name, index, secrets, resources, config, &mut rule_problems);
        problems.extend(
            rule_problems
                .into_iter()
                .map(|p| Problem { reason: p.reason, message: format!("rule {:?}: {}", rule.name, p.message) }),
        );
        if let Some(route) = route {
            config.routes.insert(route.id.clone().unwrap_or_default(), route);
        }
    }
    StatusUpdate::new(object, ar.metadata.generation, problems)
}

#[allow(clippy::too_many_arguments)]
fn route(
    rule: &HttpRule,
    ns: &str,
    ar_name: &str,
    index: &Index,
    secrets: &Secrets,
    resources: &Resources,
    config: &mut Config,
    problems: &mut Vec<Problem>,
) -> Option<Route> {
    let invalid = |message: String| Problem { reason: Reason::InvalidSpec, message };
    let m = &rule.matches;
    for p in &m.paths {
        if !p.starts_with('/') || p.find('*').is_some_and(|i| i != p.len() - 1) {
            problems.push(invalid(format!("path {p:?} must start with '/' and may only end in '*'")));
        }
    }
    let mut host_list = Vec::new();
    for h in &m.hosts {
        match hosts::parse(h) {
            Ok(h) => host_list.push(h),
            Err(p) => problems.push(p),
        }
    }
    let (hosts, host_var) = hosts::matcher(&host_list);
    let mut vars: Vec<Value> = host_var.into_iter().collect();
    for e in &m.exprs {
        match expression(e) {
            Ok(v) => vars.push(v),
            Err(message) => problems.push(invalid(message)),
        }
    }
    for addr in &m.remote_addrs {
        if !valid_address(addr) {
            problems.push(invalid(format!("remote address {addr:?} is not an IP address or CIDR block")));
        }
    }
    let timeout = match rule.timeout.as_ref().map(policy::timeout) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            problems.push(invalid(e));
            None
        }
    };
    // A path, host, expression or address that cannot be expressed leaves the rule out: there is no match to write.
    let matching_invalid = problems.iter().any(|p| p.reason.is_invalid_spec());
    let before = problems.len();
    let mut plugins = plugins::map(&rule.plugins, ns, secrets, problems);
    if rule.split.is_some() && plugins.get("traffic-split").is_some() {
        problems.push(invalid("a rule with a split cannot also have a traffic-split plugin".into()));
    }
    let plugins_failed = problems.len() > before;
    let plugin_config_id = rule.plugin_config_name.as_deref().map(|pc| {
        if !plugins::config_exists(resources, ns, pc) {
            problems
                .push(Problem { reason: Reason::RefNotFound, message: format!("PluginConfig {ns}/{pc} not found") });
        }
        plugins::config_id(ns, pc)
    });
    if matching_invalid {
        return None;
    }
    let before = problems.len();
    let upstream_id = match &rule.split {
        None => upstream(rule, ns, ar_name, index, config, problems),
        Some(split) => {
            let (id, plugin) = split_backends(rule, split, ns, index, config, problems);
            if let Some(plugin) = plugin {
                plugins.insert(plugin);
            }
            id
        }
    };
    // A split that cannot be written answers 503 in the rule's place, as plugins that cannot be configured do.
    let split_invalid = rule.split.is_some() && problems[before..].iter().any(|p| p.reason.is_invalid_spec());
    if !split_invalid && problems[before..].iter().any(|p| p.reason.is_invalid_spec()) {
        return None;
    }
    let plugins_failed = plugins_failed || split_invalid;
    let (uri, uris) = match m.paths.as_slice() {
        [one] => (Some(one.clone()), None),
        many => (None, Some(many.to_vec())),
    };
    Some(Route {
        id: Some(ids::make("ar", &[ns, ar_name, &rule.name])),
        name: Some(format!("{ns}/{ar_name} {}", rule.name)),
        uri,
        uris,
        hosts,
        methods: (!m.methods.is_empty()).then(|| m.methods.iter().map(|x| x.as_str().to_string()).collect()),
        remote_addrs: (!m.remote_addrs.is_empty()).then(|| m.remote_addrs.clone()),
        vars: (!vars.is_empty()).then_some(vars),
        priority: rule.priority.unwrap_or(0),
        upstream_id: (!plugins_failed).then_some(upstream_id),
        plugin_config_id: plugin_config_id.filter(|_| !plugins_failed),
        // Fail closed: a rule whose plugins cannot be configured as written (an auth plugin missing its Secret, an
        // unknown plugin, an invalid field) answers 503 in its place rather than being served without them, or
        // being left out so that its requests reach a broader route.
        plugins: if plugins_failed {
            Some(unavailable(ns, ar_name, &rule.name))
        } else {
            (!plugins.is_empty()).then_some(plugins)
        },
        timeout,
        enable_websocket: rule.websocket,
        labels: labels::owner("ApiRoute", ns, ar_name),
        ..Route::default()
    })
}

/// The plugins of a rule that cannot be served as written: an answer of 503 for every request it matches.
fn unavailable(ns: &str, ar_name: &str, rule: &str) -> sluice_model::Plugins {
    use sluice_model::plugins::fault_injection::{Abort, FaultInjection, Scalar};
    let body = serde_json::json!({
        "error_msg": format!("503 Service Unavailable: ApiRoute {ns}/{ar_name} rule {rule:?} has plugins that cannot be used; see its status")
    });
    let abort = Abort {
        http_status: 503,
        body: Some(body.to_string()),
        headers: Some([("Content-Type".to_string(), Scalar::Text("application/json".into()))].into()),
        percentage: None,
        vars: None,
    };
    let conf = sluice_model::PluginConf::FaultInjection(FaultInjection { abort: Some(abort), delay: None });
    [sluice_model::Plugin { conf, meta: sluice_model::Meta::default() }].into_iter().collect()
}

fn backend_ref(b: &Backend) -> BackendRef<'_> {
    let port = match &b.service_port {
        IntOrString::Int(n) => PortRef::Number(*n),
        IntOrString::String(s) => PortRef::Name(s),
    };
    let cluster_ip = b.resolve_granularity == Some(ResolveGranularity::Service);
    BackendRef { service: &b.service_name, port, cluster_ip, subset: b.subset.as_deref() }
}

/// The upstream id for a rule: the shared per-Service upstream for one backend, else an upstream of the rule's
/// own that merges every backend's nodes, each backend's weight split evenly over its nodes.
fn upstream(
    rule: &HttpRule,
    ns: &str,
    ar_name: &str,
    index: &Index,
    config: &mut Config,
    problems: &mut Vec<Problem>,
) -> String {
    if let ([b], []) = (rule.backends.as_slice(), rule.upstreams.as_slice()) {
        let resolved = index.resolve(ns, &backend_ref(b));
        match resolved.upstream {
            Ok(u) => {
                config.upstreams.insert(resolved.upstream_id.clone(), u);
            }
            Err(p) => problems.push(ref_problem(p)),
        }
        return resolved.upstream_id;
    }
    let id = ids::make("ar", &[ns, ar_name, &rule.name]);
    let mut merged: Option<Upstream> = None;
    let mut nodes = Vec::new();
    for b in &rule.backends {
        let weight = u32::try_from(b.weight.unwrap_or(i64::from(NODE_WEIGHT))).unwrap_or(0);
        match index.resolve(ns, &backend_ref(b)).upstream {
            Ok(u) => {
                let list = u.nodes.to_list().unwrap_or_default();
                nodes.extend(split(weight, list));
                merged.get_or_insert(u);
            }
            Err(p) => problems.push(ref_problem(p)),
        }
    }
    for r in &rule.upstreams {
        let weight = u32::try_from(r.weight.unwrap_or(i64::from(NODE_WEIGHT))).unwrap_or(0);
        match index.policy(ns, &r.name).filter(|p| !p.external_nodes.is_empty()) {
            Some(policy) => {
                nodes.extend(split(weight, policy.external_nodes.clone()));
                if merged.is_none() {
                    let mut u = Upstream::default();
                    policy.apply(&mut u);
                    merged = Some(u);
                }
            }
            None => problems.push(Problem {
                reason: Reason::RefNotFound,
                message: format!("Upstream {ns}/{} with externalNodes not found", r.name),
            }),
        }
    }
    if let Some(mut u) = merged {
        u.id = Some(id.clone());
        u.name = Some(format!("{ns}/{ar_name} {}", rule.name));
        u.nodes = Nodes::List(nodes);
        u.labels = labels::owner("ApiRoute", ns, ar_name);
        config.upstreams.insert(id.clone(), u);
    }
    id
}

/// A rule with a split: each backend's shared per-Service upstream as one share of a traffic-split plugin, and the
/// first backend's as the route's own upstream (which takes the requests of a disabled plugin).
fn split_backends(
    rule: &HttpRule,
    split: &Split,
    ns: &str,
    index: &Index,
    config: &mut Config,
    problems: &mut Vec<Problem>,
) -> (String, Option<sluice_model::Plugin>) {
    use sluice_model::plugins::traffic_split::{DEFAULT_TAG_HEADER, Rule, TrafficSplit, WeightedUpstream};
    if !rule.upstreams.is_empty() {
        let message = "a split takes backends only, not upstreams".to_string();
        problems.push(Problem { reason: Reason::InvalidSpec, message });
    }
    let mut shares = Vec::new();
    for b in &rule.backends {
        let resolved = index.resolve(ns, &backend_ref(b));
        match resolved.upstream {
            Ok(u) => {
                config.upstreams.insert(resolved.upstream_id.clone(), u);
            }
            Err(p) => problems.push(ref_problem(p)),
        }
        shares.push(WeightedUpstream {
            upstream_id: Some(resolved.upstream_id),
            upstream: None,
            weight: u32::try_from(b.weight.unwrap_or(i64::from(NODE_WEIGHT))).unwrap_or(0),
            tag: b.tag.clone(),
        });
    }
    // A missing key is reported by the model's check below.
    let key = split.key.clone();
    let (hash_on, key) = match split.key_from {
        None => (None, None),
        Some(SplitKeyFrom::Consumer) => (Some("consumer"), None),
        Some(SplitKeyFrom::Header) => (Some("header"), key),
        Some(SplitKeyFrom::Cookie) => (Some("cookie"), key),
        Some(SplitKeyFrom::Query) => (Some("vars"), key.map(|k| format!("arg_{k}"))),
    };
    let route_upstream = shares.first().and_then(|s| s.upstream_id.clone()).unwrap_or_default();
    let conf = TrafficSplit {
        rules: vec![Rule { matches: Vec::new(), weighted_upstreams: shares }],
        hash_on: hash_on.map(str::to_string),
        key,
        tag_header: split.tag_header.clone().unwrap_or_else(|| DEFAULT_TAG_HEADER.into()),
    };
    // Checked with the data plane's own rules (a total weight of 0, a bad tag).
    let plugin = serde_json::to_value(&conf)
        .map_err(|e| e.to_string())
        .and_then(|v| sluice_model::Plugin::decode("traffic-split", v).map_err(|e| e.to_string()));
    if let Err(message) = &plugin {
        problems.push(Problem { reason: Reason::InvalidSpec, message: format!("split: {message}") });
    }
    (route_upstream, plugin.ok())
}

/// Spreads a backend's weight over its nodes so that backends, not nodes, get the declared shares.
fn split(weight: u32, nodes: Vec<sluice_model::Node>) -> Vec<sluice_model::Node> {
    let count = u32::try_from(nodes.len()).unwrap_or(u32::MAX).max(1);
    let each = if weight == 0 { 0 } else { (weight * NODE_WEIGHT / count).max(1) };
    nodes
        .into_iter()
        .map(|mut n| {
            n.weight = each;
            n
        })
        .collect()
}

/// Missing Services and ports are reference problems in a CRD's vocabulary.
fn ref_problem(p: Problem) -> Problem {
    let reason = match p.reason {
        Reason::ServiceNotFound | Reason::PortNotFound => Reason::RefNotFound,
        other => other,
    };
    Problem { reason, message: p.message }
}

/// One ApiRoute expression → an APISIX `vars` expression.
fn expression(e: &sluice_crds::api_route::Expr) -> Result<Value, String> {
    let name = e.subject.name.as_deref().unwrap_or("");
    let var = match e.subject.scope {
        Scope::Header => format!("http_{}", name.to_ascii_lowercase().replace('-', "_")),
        Scope::Query => format!("arg_{name}"),
        Scope::Cookie => format!("cookie_{name}"),
        Scope::Path => "uri".to_string(),
    };
    if e.subject.scope != Scope::Path && name.is_empty() {
        return Err("Header, Query and Cookie subjects need a name".into());
    }
    let value = || e.value.clone().ok_or_else(|| format!("{:?} needs a value", e.op));
    let number = || {
        let v = value()?;
        v.parse::<f64>().map(|n| json!(n)).map_err(|_| format!("{:?} needs a number, not {v:?}", e.op))
    };
    let regex = || {
        let v = value()?;
        regex::Regex::new(&v).map_err(|err| format!("invalid regex {v:?}: {err}"))?;
        Ok::<_, String>(json!(v))
    };
    let set = || {
        if e.set.is_empty() { Err(format!("{:?} needs a non-empty set", e.op)) } else { Ok(json!(e.set)) }
    };
    Ok(match e.op {
        Operator::Equal => json!([var, "==", value()?]),
        Operator::NotEqual => json!([var, "~=", value()?]),
        Operator::GreaterThan => json!([var, ">", number()?]),
        Operator::LessThan => json!([var, "<", number()?]),
        Operator::In => json!([var, "in", set()?]),
        Operator::NotIn => json!([var, "!", "in", set()?]),
        Operator::RegexMatch => json!([var, "~~", regex()?]),
        Operator::RegexNotMatch => json!([var, "!", "~~", regex()?]),
        Operator::RegexMatchCaseInsensitive => json!([var, "~*", regex()?]),
        Operator::RegexNotMatchCaseInsensitive => json!([var, "!", "~*", regex()?]),
    })
}

fn valid_address(addr: &str) -> bool {
    match addr.split_once('/') {
        None => addr.parse::<std::net::IpAddr>().is_ok(),
        Some((ip, len)) => match (ip.parse::<std::net::IpAddr>(), len.parse::<u8>()) {
            (Ok(std::net::IpAddr::V4(_)), Ok(l)) => l <= 32,
            (Ok(std::net::IpAddr::V6(_)), Ok(l)) => l <= 128,
            _ => false,
        },
    }
}
