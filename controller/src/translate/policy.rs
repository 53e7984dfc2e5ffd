//! Upstream resources compiled into policies applied to every upstream generated for their Service.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};
use sluice_crds::common::parse_duration;
use sluice_crds::upstream::{
    ActiveCheck, BalancerType, CheckType, HashOn, PassHost as CrdPassHost, PassiveCheck, Scheme as CrdScheme,
};
use sluice_model::{LoadBalancer, Node, PassHost, Scheme, Timeout, Upstream};

use super::secrets::Secrets;
use super::{ObjectRef, Problem, Reason, StatusUpdate};
use crate::resources::{Resources, name, namespace};

/// What an Upstream resource sets on the upstreams of its Service.
#[derive(Debug, Clone, Default)]
pub(super) struct Policy {
    lb: Option<(LoadBalancer, Option<String>, Option<String>)>,
    scheme: Option<Scheme>,
    retries: Option<u32>,
    retry_timeout: Option<f64>,
    timeout: Option<Timeout>,
    pass_host: Option<(PassHost, Option<String>)>,
    checks: Option<Value>,
    tls: Option<Value>,
    zone_aware: Option<bool>,
    /// Subset name → pod labels.
    pub subsets: BTreeMap<String, BTreeMap<String, String>>,
    /// Nodes outside the cluster.
    pub external_nodes: Vec<Node>,
}

impl Policy {
    /// Sets every field the Upstream resource declares.
    pub(super) fn apply(&self, u: &mut Upstream) {
        if let Some((lb, hash_on, key)) = &self.lb {
            u.lb = *lb;
            u.hash_on = hash_on.clone();
            u.key = key.clone();
        }
        if let Some(scheme) = self.scheme {
            u.scheme = scheme;
        }
        u.retries = self.retries.or(u.retries);
        u.retry_timeout = self.retry_timeout.or(u.retry_timeout);
        u.timeout = self.timeout.or(u.timeout);
        if let Some((pass_host, host)) = &self.pass_host {
            u.pass_host = *pass_host;
            u.upstream_host = host.clone();
        }
        u.checks = self.checks.clone().or(u.checks.take());
        u.tls = self.tls.clone().or(u.tls.take());
        u.zone_aware = self.zone_aware.or(u.zone_aware);
    }
}

/// Converts durations, filling the unset ones with APISIX's default of 60 seconds.
pub(super) fn timeout(t: &sluice_crds::Timeout) -> Result<Timeout, String> {
    let one = |v: &Option<String>| match v {
        None => Ok(60.0),
        Some(text) => parse_duration(text).ok_or_else(|| format!("timeout {text:?} is not a duration like 5s")),
    };
    Ok(Timeout { connect: one(&t.connect)?, send: one(&t.send)?, read: one(&t.read)? })
}

fn seconds(text: &Option<String>, what: &str) -> Result<Option<f64>, String> {
    text.as_ref()
        .map(|t| parse_duration(t).ok_or_else(|| format!("{what} {t:?} is not a duration like 5s")))
        .transpose()
}

/// APISIX counts check intervals in whole seconds, at least one.
fn whole_seconds(text: &Option<String>, what: &str) -> Result<Option<u64>, String> {
    Ok(seconds(text, what)?.map(|s| (s.ceil() as u64).max(1)))
}

fn insert<T: serde::Serialize>(map: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(v) = value {
        map.insert(key.to_string(), json!(v));
    }
}

fn check_type(kind: Option<CheckType>) -> Option<&'static str> {
    kind.map(|k| match k {
        CheckType::Http => "http",
        CheckType::Https => "https",
        CheckType::Tcp => "tcp",
    })
}

fn statuses(list: &[i64]) -> Option<&[i64]> {
    (!list.is_empty()).then_some(list)
}

/// The APISIX `checks.active` object: only the fields set, so APISIX's defaults apply to the rest.
fn active(a: &ActiveCheck) -> Result<Value, String> {
    let mut m = Map::new();
    insert(&mut m, "type", check_type(a.kind));
    insert(&mut m, "timeout", seconds(&a.timeout, "active.timeout")?);
    insert(&mut m, "concurrency", a.concurrency);
    insert(&mut m, "http_path", a.http_path.clone());
    insert(&mut m, "host", a.host.clone());
    insert(&mut m, "port", a.port);
    insert(&mut m, "req_headers", (!a.request_headers.is_empty()).then_some(&a.request_headers));
    if let Some(h) = &a.healthy {
        let mut hm = Map::new();
        insert(&mut hm, "interval", whole_seconds(&h.interval, "active.healthy.interval")?);
        insert(&mut hm, "successes", h.successes);
        insert(&mut hm, "http_statuses", statuses(&h.http_statuses));
        m.insert("healthy".into(), Value::Object(hm));
    }
    if let Some(u) = &a.unhealthy {
        let mut um = Map::new();
        insert(&mut um, "interval", whole_seconds(&u.interval, "active.unhealthy.interval")?);
        insert(&mut um, "http_failures", u.http_failures);
        insert(&mut um, "tcp_failures", u.tcp_failures);
        insert(&mut um, "timeouts", u.timeouts);
        insert(&mut um, "http_statuses", statuses(&u.http_statuses));
        m.insert("unhealthy".into(), Value::Object(um));
    }
    Ok(Value::Object(m))
}

/// The APISIX `checks.passive` object.
fn passive(p: &PassiveCheck) -> Value {
    let mut m = Map::new();
    insert(&mut m, "type", check_type(p.kind));
    if let Some(h) = &p.healthy {
        let mut hm = Map::new();
        insert(&mut hm, "successes", h.successes);
        insert(&mut hm, "http_statuses", statuses(&h.http_statuses));
        m.insert("healthy".into(), Value::Object(hm));
    }
    if let Some(u) = &p.unhealthy {
        let mut um = Map::new();
        insert(&mut um, "http_failures", u.http_failures);
        insert(&mut um, "tcp_failures", u.tcp_failures);
        insert(&mut um, "timeouts", u.timeouts);
        insert(&mut um, "http_statuses", statuses(&u.http_statuses));
        m.insert("unhealthy".into(), Value::Object(um));
    }
    Value::Object(m)
}

fn compile_one(up: &sluice_crds::Upstream, secrets: &Secrets) -> Result<Policy, Vec<Problem>> {
    let ns = namespace(&up.metadata);
    let spec = &up.spec;
    let mut problems = Vec::new();
    let mut invalid = |message: String| problems.push(Problem { reason: Reason::InvalidSpec, message });
    let mut policy = Policy::default();
    if let Some(lb) = &spec.load_balancer {
        let kind = match lb.kind {
            BalancerType::Roundrobin => LoadBalancer::Roundrobin,
            BalancerType::Chash => LoadBalancer::Chash,
            BalancerType::LeastConn => LoadBalancer::LeastConn,
            BalancerType::Ewma => LoadBalancer::Ewma,
        };
        if kind == LoadBalancer::Chash && lb.key.is_none() {
            invalid("loadBalancer type chash needs a key".into());
        }
        let hash_on = lb.hash_on.map(|h| {
            match h {
                HashOn::Vars => "vars",
                HashOn::Header => "header",
                HashOn::Cookie => "cookie",
                HashOn::Consumer => "consumer",
            }
            .to_string()
        });
        policy.lb = Some((kind, hash_on, lb.key.clone()));
    }
    policy.scheme = spec.scheme.map(|s| match s {
        CrdScheme::Http => Scheme::Http,
        CrdScheme::Https => Scheme::Https,
        CrdScheme::Grpc => Scheme::Grpc,
        CrdScheme::Grpcs => Scheme::Grpcs,
    });
    policy.retries = spec.retries.and_then(|r| u32::try_from(r).ok());
    policy.zone_aware = spec.zone_aware;
    match seconds(&spec.retry_timeout, "retryTimeout") {
        Ok(t) => policy.retry_timeout = t,
        Err(e) => invalid(e),
    }
    if let Some(t) = &spec.timeout {
        match timeout(t) {
            Ok(t) => policy.timeout = Some(t),
            Err(e) => invalid(e),
        }
    }
    if let Some(pass_host) = spec.pass_host {
        let pass_host = match pass_host {
            CrdPassHost::Pass => PassHost::Pass,
            CrdPassHost::Node => PassHost::Node,
            CrdPassHost::Rewrite => PassHost::Rewrite,
        };
        if pass_host == PassHost::Rewrite && spec.upstream_host.is_none() {
            invalid("passHost rewrite needs upstreamHost".into());
        }
        policy.pass_host = Some((pass_host, spec.upstream_host.clone()));
    }
    if let Some(hc) = &spec.health_check {
        let mut checks = Map::new();
        if let Some(a) = &hc.active {
            match active(a) {
                Ok(v) => {
                    checks.insert("active".into(), v);
                }
                Err(e) => invalid(e),
            }
        }
        if let Some(p) = &hc.passive {
            checks.insert("passive".into(), passive(p));
        }
        policy.checks = Some(Value::Object(checks));
    }
    if let Some(secret) = &spec.tls_secret {
        let wanted_by = "tlsSecret";
        let pair =
            (secrets.key(ns, &secret.name, "tls.crt", wanted_by), secrets.key(ns, &secret.name, "tls.key", wanted_by));
        match pair {
            (Ok(cert), Ok(key)) => policy.tls = Some(json!({"client_cert": cert, "client_key": key})),
            (Err(p), _) | (_, Err(p)) => problems.push(p),
        }
    }
    policy.subsets = spec.subsets.iter().map(|s| (s.name.clone(), s.labels.clone())).collect();
    for n in &spec.external_nodes {
        if let Err(why) = super::backend::refused(&n.name) {
            problems.push(Problem { reason: Reason::InvalidSpec, message: format!("externalNodes: {why}") });
            continue;
        }
        let weight = u32::try_from(n.weight.unwrap_or(100)).unwrap_or(0);
        let port = n.port.and_then(|p| u16::try_from(p).ok());
        policy.external_nodes.push(Node { host: n.name.clone(), port, weight, priority: 0, metadata: None });
    }
    if problems.is_empty() { Ok(policy) } else { Err(problems) }
}

/// Compiles every Upstream resource. An invalid one is not applied (its Service keeps the defaults) and reports
/// its problems.
pub(super) fn compile(
    resources: &Resources,
    secrets: &Secrets,
) -> (HashMap<(String, String), Policy>, Vec<StatusUpdate>) {
    let mut policies = HashMap::new();
    let mut statuses = Vec::new();
    for up in &resources.upstreams {
        let (ns, up_name) = (namespace(&up.metadata), name(&up.metadata));
        let object = ObjectRef { kind: "Upstream".into(), namespace: ns.into(), name: up_name.into() };
        let problems = match compile_one(up, secrets) {
            Ok(policy) => {
                policies.insert((ns.to_string(), up_name.to_string()), policy);
                Vec::new()
            }
            Err(problems) => problems,
        };
        statuses.push(StatusUpdate::new(object, up.metadata.generation, problems));
    }
    (policies, statuses)
}
