//! One Ingress → routes, following the Kubernetes Ingress specification.
//!
//! - `Exact` matches the path only; `Prefix` matches by path element (`/foo` matches `/foo`, `/foo/` and
//!   `/foo/bar`, not `/foobar`) and ignores a trailing `/`; `ImplementationSpecific` is treated as `Prefix`.
//! - The data plane already prefers exact paths and longer prefixes; an `Exact` path gets a higher priority
//!   than a `Prefix` path of the same text, and the default backend the lowest of all.
//! - `*.example.com` matches exactly one label: the host list carries APISIX's wildcard, and a `host` regex
//!   condition narrows it to one label.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{HTTPIngressPath, Ingress, IngressBackend};
use sluice_model::plugins::fault_injection::{Abort, FaultInjection, Scalar};
use sluice_model::plugins::redirect::Redirect;
use sluice_model::plugins::{Meta, Plugin, Plugins};
use sluice_model::{PluginConf, Route, Upstream, labels};

use super::backend::{BackendRef, Index, PortRef};
use super::hosts::{self, Host};
use super::secrets::Secrets;
use super::{ObjectRef, Problem, Reason, ids, plugins, tls};
use crate::resources::{Resources, name, namespace};

const PRIORITY_EXACT: i64 = 1;
const PRIORITY_PREFIX: i64 = 0;
const PRIORITY_DEFAULT_BACKEND: i64 = -1;

/// The routes of one Ingress and the problems found in it.
pub(super) struct Output {
    pub object: ObjectRef,
    pub routes: Vec<Route>,
    pub ssls: Vec<sluice_model::Ssl>,
    pub problems: Vec<Problem>,
}

/// Where one path sends its traffic, and how it matches.
struct Target<'a> {
    id: String,
    what: String,
    uris: Vec<String>,
    host: Option<Host>,
    priority: i64,
    backend: &'a IngressBackend,
}

/// The annotation naming a PluginConfig whose plugins apply to every path of the Ingress.
pub const PLUGIN_CONFIG_ANNOTATION: &str = "sluice.dev/plugin-config-name";
/// The annotation that stops WebSocket upgrades on the Ingress's paths (`"false"`); they are on by default, as in
/// ingress-nginx.
pub const WEBSOCKET_ANNOTATION: &str = "sluice.dev/enable-websocket";

pub(super) fn translate(
    ing: &Ingress,
    index: &Index,
    resources: &Resources,
    secrets: &Secrets,
    claims: &mut tls::Claims,
    upstreams: &mut BTreeMap<String, Upstream>,
) -> Output {
    let (ns, ing_name) = (namespace(&ing.metadata), name(&ing.metadata));
    let object = ObjectRef { kind: "Ingress".into(), namespace: ns.into(), name: ing_name.into() };
    let mut out = Output { object, routes: Vec::new(), ssls: Vec::new(), problems: Vec::new() };
    let Some(spec) = &ing.spec else { return out };
    let annotation = ing.metadata.annotations.as_ref().and_then(|a| a.get(PLUGIN_CONFIG_ANNOTATION));
    let plugin_config_id = annotation.map(|pc| {
        if !plugins::config_exists(resources, ns, pc) {
            let message = format!("annotation {PLUGIN_CONFIG_ANNOTATION}: PluginConfig {ns}/{pc} not found");
            out.problems.push(Problem { reason: Reason::RefNotFound, message });
        }
        plugins::config_id(ns, pc)
    });
    let websocket = ing.metadata.annotations.as_ref().and_then(|a| a.get(WEBSOCKET_ANNOTATION)).map(String::as_str)
        != Some("false");
    let mut targets = Vec::new();
    let hosts: Vec<_> = spec.rules.iter().flatten().map(|r| r.host.as_deref().map(hosts::parse)).collect();
    let valid_hosts: Vec<Host> = hosts.iter().flatten().filter_map(|h| h.as_ref().ok().cloned()).collect();
    let tls = tls::translate(ing, &valid_hosts, secrets, claims);
    out.problems.extend(tls.problems.iter().cloned());
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let host = match &hosts[i] {
            None => None,
            Some(Ok(h)) => Some(h.clone()),
            Some(Err(p)) => {
                out.problems.push(p.clone());
                continue;
            }
        };
        for (j, path) in rule.http.iter().flat_map(|h| &h.paths).enumerate() {
            let what = format!("rule {i} path {}", path.path.as_deref().unwrap_or("/"));
            match uris(path) {
                Ok((uris, priority)) => targets.push(Target {
                    id: ids::make("ing", &[ns, ing_name, &i.to_string(), &j.to_string()]),
                    what,
                    uris,
                    host: host.clone(),
                    priority,
                    backend: &path.backend,
                }),
                Err(message) => {
                    out.problems.push(Problem { reason: Reason::InvalidPath, message: format!("{what}: {message}") })
                }
            }
        }
    }
    if let Some(backend) = &spec.default_backend {
        targets.push(Target {
            id: ids::make("ing", &[ns, ing_name, "default"]),
            what: "defaultBackend".into(),
            uris: vec!["/*".into()],
            host: None,
            priority: PRIORITY_DEFAULT_BACKEND,
            backend,
        });
    }
    for t in targets {
        let Some(svc) = &t.backend.service else {
            let message = format!("{}: only service backends are supported", t.what);
            out.problems.push(Problem { reason: Reason::UnsupportedBackend, message });
            continue;
        };
        let port = match svc.port.as_ref().map(|p| (p.number, p.name.as_deref())) {
            Some((Some(n), _)) => PortRef::Number(n),
            Some((None, Some(name))) => PortRef::Name(name),
            _ => PortRef::Missing,
        };
        let backend = BackendRef { service: &svc.name, port, cluster_ip: false, subset: None };
        let resolved = index.resolve(ns, &backend);
        match resolved.upstream {
            Ok(u) => {
                upstreams.insert(resolved.upstream_id.clone(), u);
            }
            Err(p) => out.problems.push(Problem { reason: p.reason, message: format!("{}: {}", t.what, p.message) }),
        }
        let plugins = match (tls.unserved, tls.redirects(t.host.as_ref())) {
            (true, _) => Some(unserved()),
            (false, true) => Some(https_redirect()),
            (false, false) => None,
        };
        let (hosts, host_var) = hosts::matcher(t.host.as_slice());
        let (uri, uris) = match <[String; 1]>::try_from(t.uris) {
            Ok([one]) => (Some(one), None),
            Err(many) => (None, Some(many)),
        };
        out.routes.push(Route {
            id: Some(t.id),
            name: Some(format!("{ns}/{ing_name} {}", t.what)),
            uri,
            uris,
            hosts,
            vars: host_var.map(|v| vec![v]),
            priority: t.priority,
            plugin_config_id: plugin_config_id.clone(),
            plugins,
            enable_websocket: Some(websocket),
            upstream_id: Some(resolved.upstream_id),
            labels: labels::owner("Ingress", ns, ing_name),
            ..Route::default()
        });
    }
    out.ssls = tls.ssls;
    out
}

/// The route plugin that sends plain-HTTP requests to the same URL over HTTPS.
fn https_redirect() -> Plugins {
    let conf = Redirect {
        ret_code: 301,
        uri: None,
        regex_uri: None,
        http_to_https: Some(true),
        encode_uri: false,
        append_query_string: false,
    };
    Plugins::from_iter([Plugin { conf: PluginConf::Redirect(conf), meta: Meta::default() }])
}

/// The route plugin that answers 503 for an Ingress whose client certificate verification cannot be set up.
fn unserved() -> Plugins {
    let body =
        r#"{"error_msg":"503 Service Unavailable: the Ingress's client certificate verification cannot be set up"}"#;
    let abort = Abort {
        http_status: 503,
        body: Some(body.to_string()),
        headers: Some(BTreeMap::from([("content-type".to_string(), Scalar::Text("application/json".into()))])),
        percentage: None,
        vars: None,
    };
    let conf = FaultInjection { abort: Some(abort), delay: None };
    Plugins::from_iter([Plugin { conf: PluginConf::FaultInjection(conf), meta: Meta::default() }])
}

/// The APISIX paths and priority for one Ingress path.
fn uris(path: &HTTPIngressPath) -> Result<(Vec<String>, i64), String> {
    let p = path.path.as_deref().unwrap_or("/");
    if !p.starts_with('/') {
        return Err(format!("path {p:?} must start with '/'"));
    }
    if p.contains('*') || p.split('/').any(|seg| seg.starts_with(':')) || p.contains(char::is_whitespace) {
        return Err(format!("path {p:?} may not contain '*', white space or segments starting with ':'"));
    }
    match path.path_type.as_str() {
        "Exact" => Ok((vec![p.to_string()], PRIORITY_EXACT)),
        "Prefix" | "ImplementationSpecific" => {
            let base = p.trim_end_matches('/');
            if base.is_empty() {
                Ok((vec!["/*".to_string()], PRIORITY_PREFIX))
            } else {
                Ok((vec![base.to_string(), format!("{base}/*")], PRIORITY_PREFIX))
            }
        }
        other => Err(format!("pathType {other:?} must be Exact, Prefix or ImplementationSpecific")),
    }
}
