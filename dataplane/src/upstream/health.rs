//! Active health checks, in APISIX's `checks.active` shape and with its defaults.
//!
//! Each upstream with checks has one background task that probes its nodes (TCP connect, or an HTTP request whose
//! status is classified) and flips the node's health flag in the upstream's balancer after enough consecutive
//! results; the request path only reads those flags. Counters are kept per node address inside the task, which
//! lives as long as the upstream, and the compiler copies flags into a rebuilt runtime by address, so changing one
//! node of an upstream does not reset the health of the others.
//!
//! A node's first probe decides at once: one that fails it is unhealthy from the start instead of after
//! `unhealthy.*_failures` probes, so that a data plane that has just started (or an upstream that has just gained
//! a node) sends no burst of requests to a node that is down. [`FirstPass`] counts the checkers that have not
//! finished their first round; the data plane is not ready until they have (or a time limit has passed).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::balancer::Balancer;
use super::runtime::UpstreamRuntime;
use crate::metrics::Metrics;

/// `checks` of an upstream: only active checks are run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// Probes sent by the data plane.
    pub active: Option<Active>,
    /// Checks from real traffic.
    pub passive: Option<Passive>,
}

/// How real traffic marks nodes (`checks.passive`); active checks bring ejected nodes back.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Passive {
    /// Only `http` is meaningful for HTTP upstreams.
    #[serde(rename = "type")]
    pub kind: ProbeKind,
    /// When responses count as healthy.
    pub healthy: PassiveHealthy,
    /// When responses and failures count against a node.
    pub unhealthy: PassiveUnhealthy,
}

/// `checks.passive.healthy`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealthy {
    /// Statuses that count as success.
    pub http_statuses: Vec<u16>,
    /// Consecutive successes that make an unhealthy node healthy.
    pub successes: u32,
}

/// `checks.passive.unhealthy`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveUnhealthy {
    /// Statuses that count as failure.
    pub http_statuses: Vec<u16>,
    /// Consecutive failing statuses that make a node unhealthy.
    pub http_failures: u32,
    /// Consecutive connect failures that make a node unhealthy.
    pub tcp_failures: u32,
    /// Consecutive timeouts that make a node unhealthy.
    pub timeouts: u32,
}

impl Default for Passive {
    fn default() -> Self {
        Passive { kind: ProbeKind::Http, healthy: PassiveHealthy::default(), unhealthy: PassiveUnhealthy::default() }
    }
}

impl Default for PassiveHealthy {
    fn default() -> Self {
        let http_statuses =
            vec![200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 306, 307, 308];
        PassiveHealthy { http_statuses, successes: 5 }
    }
}

impl Default for PassiveUnhealthy {
    fn default() -> Self {
        PassiveUnhealthy { http_statuses: vec![429, 500, 503], http_failures: 5, tcp_failures: 2, timeouts: 7 }
    }
}

/// What one attempt of a real request showed about its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// The node answered with this status.
    Status(u16),
    /// The connection could not be opened.
    ConnectFailure,
    /// The node did not answer in time.
    Timeout,
}

/// Per-node passive counters of one upstream runtime: atomics, updated from the request path.
#[derive(Debug)]
pub struct PassiveState {
    config: Passive,
    nodes: Box<[PassiveCounts]>,
}

#[derive(Debug, Default)]
struct PassiveCounts {
    successes: AtomicU32,
    http_failures: AtomicU32,
    tcp_failures: AtomicU32,
    timeouts: AtomicU32,
}

impl PassiveState {
    /// Counters for `nodes` nodes.
    pub fn new(config: Passive, nodes: usize) -> PassiveState {
        PassiveState { config, nodes: (0..nodes).map(|_| PassiveCounts::default()).collect() }
    }

    /// Counts what a request saw on `node` and flips its health in `balancer` once a threshold is reached.
    pub fn observe(&self, balancer: &Balancer, node: usize, seen: Observed) {
        let Some(n) = self.nodes.get(node) else { return };
        let (cfg, relaxed) = (&self.config, Ordering::Relaxed);
        // Resets skip the store when already zero, so healthy traffic does not keep writing shared cache lines.
        let reset = |c: &AtomicU32| {
            if c.load(relaxed) != 0 {
                c.store(0, relaxed);
            }
        };
        let fail = |count: &AtomicU32, limit: u32| {
            reset(&n.successes);
            if count.fetch_add(1, relaxed) + 1 >= limit && balancer.set_healthy(node, false) {
                [&n.http_failures, &n.tcp_failures, &n.timeouts].into_iter().for_each(reset);
                warn!(node, ?seen, "node is unhealthy after failures of real requests");
            }
        };
        match seen {
            Observed::Status(s) if cfg.healthy.http_statuses.contains(&s) => {
                [&n.http_failures, &n.tcp_failures, &n.timeouts].into_iter().for_each(reset);
                if !balancer.is_healthy(node)
                    && n.successes.fetch_add(1, relaxed) + 1 >= cfg.healthy.successes
                    && balancer.set_healthy(node, true)
                {
                    reset(&n.successes);
                }
            }
            Observed::Status(s) if cfg.unhealthy.http_statuses.contains(&s) => {
                fail(&n.http_failures, cfg.unhealthy.http_failures)
            }
            Observed::Status(_) => {}
            Observed::ConnectFailure => fail(&n.tcp_failures, cfg.unhealthy.tcp_failures),
            Observed::Timeout => fail(&n.timeouts, cfg.unhealthy.timeouts),
        }
    }
}

/// How nodes are probed (`checks.active`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Active {
    /// `http`, `https` or `tcp`.
    #[serde(rename = "type")]
    pub kind: ProbeKind,
    /// Seconds a probe may take.
    pub timeout: f64,
    /// How many nodes are probed at once.
    pub concurrency: usize,
    /// The path requested by HTTP probes.
    pub http_path: String,
    /// The `Host` header of HTTP probes; the node's host when absent.
    pub host: Option<String>,
    /// The port probed; the node's port when absent.
    pub port: Option<u16>,
    /// Extra request headers of HTTP probes, as `"Name: value"` lines.
    pub req_headers: Vec<String>,
    /// Whether an `https` probe verifies the certificate.
    pub https_verify_certificate: bool,
    /// When a node counts as healthy again.
    pub healthy: Healthy,
    /// When a node counts as unhealthy.
    pub unhealthy: Unhealthy,
}

/// The probe protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// An HTTP request; the status decides.
    #[default]
    Http,
    /// An HTTPS request.
    Https,
    /// A TCP connection; connecting is success.
    Tcp,
}

/// `checks.active.healthy`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Healthy {
    /// Seconds between probes of a healthy node.
    pub interval: u64,
    /// Consecutive successes that make an unhealthy node healthy.
    pub successes: u32,
    /// Statuses that count as success.
    pub http_statuses: Vec<u16>,
}

/// `checks.active.unhealthy`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Unhealthy {
    /// Seconds between probes of an unhealthy node.
    pub interval: u64,
    /// Consecutive failing statuses that make a node unhealthy.
    pub http_failures: u32,
    /// Consecutive connect failures that make a node unhealthy.
    pub tcp_failures: u32,
    /// Consecutive timeouts that make a node unhealthy.
    pub timeouts: u32,
    /// Statuses that count as failure.
    pub http_statuses: Vec<u16>,
}

impl Default for Active {
    fn default() -> Self {
        Active {
            kind: ProbeKind::Http,
            timeout: 1.0,
            concurrency: 10,
            http_path: "/".into(),
            host: None,
            port: None,
            req_headers: Vec::new(),
            https_verify_certificate: true,
            healthy: Healthy::default(),
            unhealthy: Unhealthy::default(),
        }
    }
}

impl Default for Healthy {
    fn default() -> Self {
        Healthy { interval: 1, successes: 2, http_statuses: vec![200, 302] }
    }
}

impl Default for Unhealthy {
    fn default() -> Self {
        Unhealthy {
            interval: 1,
            http_failures: 5,
            tcp_failures: 2,
            timeouts: 3,
            http_statuses: vec![429, 404, 500, 501, 502, 503, 504, 505],
        }
    }
}

impl Checks {
    /// Parses and checks `checks` against APISIX's schema limits; the message says what is wrong.
    pub fn parse(value: &Value) -> Result<Checks, String> {
        let checks: Checks = serde_json::from_value(value.clone()).map_err(|e| format!("checks: {e}"))?;
        if let Some(a) = &checks.active {
            a.validate()?;
        }
        if let Some(p) = &checks.passive {
            if checks.active.is_none() {
                // As in APISIX's schema: only active checks can bring a passively ejected node back.
                return Err("checks.passive needs checks.active".into());
            }
            p.validate()?;
        }
        Ok(checks)
    }
}

impl Passive {
    fn validate(&self) -> Result<(), String> {
        let u = &self.unhealthy;
        let counts = [self.healthy.successes, u.http_failures, u.tcp_failures, u.timeouts];
        if counts.iter().any(|c| !(1..=254).contains(c)) {
            return Err("checks.passive counts must be from 1 to 254".into());
        }
        for list in [&self.healthy.http_statuses, &u.http_statuses] {
            if list.is_empty() || list.iter().any(|s| !(200..=599).contains(s)) {
                return Err("checks.passive http_statuses must list statuses from 200 to 599".into());
            }
        }
        if self.kind == ProbeKind::Https {
            return Err("checks.passive.type https is not supported yet".into());
        }
        Ok(())
    }
}

impl Active {
    fn validate(&self) -> Result<(), String> {
        let count = |name: &str, v: u32| match v {
            1..=254 => Ok(()),
            _ => Err(format!("checks.active.{name} must be from 1 to 254")),
        };
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            return Err("checks.active.timeout must be a positive number of seconds".into());
        }
        if self.concurrency == 0 {
            return Err("checks.active.concurrency must be at least 1".into());
        }
        if self.healthy.interval == 0 || self.unhealthy.interval == 0 {
            return Err("checks.active intervals must be at least 1 second".into());
        }
        if !self.http_path.starts_with('/') || self.http_path.contains(['\r', '\n', ' ']) {
            return Err(format!("checks.active.http_path {:?} must be a path", self.http_path));
        }
        if self.port == Some(0) {
            return Err("checks.active.port must be from 1 to 65535".into());
        }
        let bad_text = |s: &str| s.contains(['\r', '\n']);
        if self.host.as_deref().is_some_and(|h| h.is_empty() || bad_text(h) || h.contains(' ')) {
            return Err("checks.active.host must be a host name".into());
        }
        if self.req_headers.iter().any(|h| bad_text(h) || !h.contains(':')) {
            return Err("checks.active.req_headers must be \"Name: value\" lines".into());
        }
        count("healthy.successes", self.healthy.successes)?;
        count("unhealthy.http_failures", self.unhealthy.http_failures)?;
        count("unhealthy.tcp_failures", self.unhealthy.tcp_failures)?;
        count("unhealthy.timeouts", self.unhealthy.timeouts)?;
        for list in [&self.healthy.http_statuses, &self.unhealthy.http_statuses] {
            if list.is_empty() || list.iter().any(|s| !(200..=599).contains(s)) {
                return Err("checks.active http_statuses must list statuses from 200 to 599".into());
            }
        }
        Ok(())
    }
}

/// The result of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    HttpFailure,
    TcpFailure,
    Timeout,
    /// A status in neither list: counts for nothing, as in APISIX.
    Neutral,
}

/// Consecutive results of one node.
#[derive(Debug, Clone, Default)]
struct Counters {
    unhealthy: bool,
    successes: u32,
    http_failures: u32,
    tcp_failures: u32,
    timeouts: u32,
    due: Option<Instant>,
}

impl Counters {
    /// Counts `outcome`; returns the new health when it flips.
    fn record(&mut self, outcome: Outcome, a: &Active) -> Option<bool> {
        match outcome {
            Outcome::Success => {
                (self.http_failures, self.tcp_failures, self.timeouts) = (0, 0, 0);
                self.successes += 1;
                if self.unhealthy && self.successes >= a.healthy.successes {
                    self.unhealthy = false;
                    self.successes = 0;
                    return Some(true);
                }
            }
            Outcome::Neutral => {}
            failure => {
                self.successes = 0;
                let (count, limit) = match failure {
                    Outcome::HttpFailure => (&mut self.http_failures, a.unhealthy.http_failures),
                    Outcome::TcpFailure => (&mut self.tcp_failures, a.unhealthy.tcp_failures),
                    _ => (&mut self.timeouts, a.unhealthy.timeouts),
                };
                *count += 1;
                if !self.unhealthy && *count >= limit {
                    self.unhealthy = true;
                    (self.http_failures, self.tcp_failures, self.timeouts) = (0, 0, 0);
                    return Some(false);
                }
            }
        }
        None
    }
}

/// The checkers that have not finished their first round of probes. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct FirstPass(Arc<AtomicUsize>);

impl FirstPass {
    /// Checkers still in their first round.
    pub fn pending(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Counts one more checker in its first round, until the returned token is dropped.
    pub fn begin(&self) -> FirstRound {
        self.0.fetch_add(1, Ordering::AcqRel);
        FirstRound(Some(self.0.clone()))
    }
}

/// One checker's first round; dropped (or [`FirstRound::finish`]ed) when it is over, or when the checker ends.
#[derive(Debug)]
pub struct FirstRound(Option<Arc<AtomicUsize>>);

impl FirstRound {
    /// A token that counts nothing (a restarted checker's: its first round was already counted).
    pub fn finished() -> FirstRound {
        FirstRound(None)
    }

    /// The round is over.
    fn finish(&mut self) {
        if let Some(count) = self.0.take() {
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for FirstRound {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Runs [`run`] for one upstream and restarts it a second later if it panics (a bug, which must not leave the
/// upstream's nodes unchecked for good), counting the restarts; ends when the upstream is gone.
pub async fn supervise(
    upstream: Arc<str>,
    active: Active,
    runtime: watch::Receiver<Arc<UpstreamRuntime>>,
    metrics: Metrics,
    first: FirstRound,
) {
    let mut first = Some(first);
    loop {
        let round = first.take().unwrap_or_else(FirstRound::finished);
        let checker = tokio::spawn(run(active.clone(), runtime.clone(), metrics.clone(), round));
        match checker.await {
            Err(e) if e.is_panic() => {
                tracing::error!(%upstream, "the health checker panicked; restarting it in 1 s");
                metrics.health_checker_restarts.inc();
                tokio::time::sleep(Duration::from_secs(1)).await;
                if runtime.has_changed().is_err() {
                    return;
                }
            }
            // Ended because the upstream is gone, or cancelled because the runtime shuts down.
            _ => return,
        }
    }
}

/// Runs the active checks of one upstream until the sender side is dropped; a new runtime sent through `runtime`
/// replaces the nodes probed while keeping the counters of nodes that stay.
pub async fn run(
    active: Active,
    mut runtime: watch::Receiver<Arc<UpstreamRuntime>>,
    metrics: Metrics,
    mut first: FirstRound,
) {
    let mut active = active;
    let mut counters: HashMap<String, Counters> = HashMap::new();
    loop {
        let tick = Duration::from_secs(active.healthy.interval.min(active.unhealthy.interval));
        let rt = runtime.borrow_and_update().clone();
        // Address → node indexes (one address may be listed twice), so large upstreams stay linear per round.
        let mut by_address: HashMap<String, Vec<usize>> = HashMap::with_capacity(rt.nodes.len());
        for (i, n) in rt.nodes.iter().enumerate() {
            by_address.entry(n.authority.to_string()).or_default().push(i);
        }
        counters.retain(|addr, _| {
            let keep = by_address.contains_key(addr);
            if !keep {
                metrics.forget_node(&rt.name, addr);
            }
            keep
        });
        let now = Instant::now();
        let due: Vec<(usize, String)> = by_address
            .iter()
            .filter(|(a, _)| counters.get(*a).and_then(|c| c.due).is_none_or(|d| d <= now))
            .map(|(a, nodes)| (nodes[0], a.clone()))
            .collect();
        let probes = futures::stream::iter(due.into_iter().map(|(i, addr)| {
            let rt = rt.clone();
            let active = &active;
            async move { (addr, probe(&rt, i, active).await) }
        }))
        .buffer_unordered(active.concurrency)
        .collect::<Vec<_>>()
        .await;
        for (addr, outcome) in probes {
            let new = !counters.contains_key(&addr);
            let c = counters.entry(addr.clone()).or_default();
            if new && !matches!(outcome, Outcome::Success | Outcome::Neutral) {
                // The first probe decides: a node never seen answering gets no traffic until it recovers.
                *c = Counters { unhealthy: true, ..Counters::default() };
                warn!(upstream = %rt.name, node = %addr, ?outcome, "node failed its first health check; no traffic until it recovers");
            }
            // Passive checks may have ejected the node from the request path; count recovery from there.
            let nodes = by_address.get(&addr).map(Vec::as_slice).unwrap_or_default();
            if !c.unhealthy && nodes.iter().any(|&j| !rt.balancer.is_healthy(j)) {
                *c = Counters { unhealthy: true, ..Counters::default() };
            }
            if let Some(healthy) = c.record(outcome, &active) {
                if healthy {
                    info!(upstream = %rt.name, node = %addr, "node is healthy again");
                } else {
                    warn!(upstream = %rt.name, node = %addr, ?outcome, "node is unhealthy; no traffic until it recovers");
                }
            }
            let interval = if c.unhealthy { active.unhealthy.interval } else { active.healthy.interval };
            c.due = Some(Instant::now() + Duration::from_secs(interval));
            for &j in nodes {
                rt.balancer.set_healthy(j, !c.unhealthy);
            }
            metrics.node_healthy(&rt.name, &addr).set(i64::from(!c.unhealthy));
        }
        first.finish();
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            changed = runtime.changed() => {
                if changed.is_err() {
                    for addr in counters.keys() {
                        metrics.forget_node(&rt.name, addr);
                    }
                    return;
                }
                if let Some(a) = runtime.borrow().checks().and_then(|c| c.active.clone()) {
                    active = a;
                }
            }
        }
    }
}

/// Probes node `i` of `rt` once.
async fn probe(rt: &UpstreamRuntime, i: usize, a: &Active) -> Outcome {
    let node = &rt.nodes[i].authority;
    let port = a.port.or(node.port_u16()).unwrap_or(80);
    let host = node.host();
    let limit = Duration::try_from_secs_f64(a.timeout).unwrap_or(Duration::from_secs(1));
    let deadline = Instant::now() + limit;
    // Through the node's pool: a node the address policy refuses is not probed either.
    let connect = tokio::time::timeout_at(deadline, rt.nodes[i].pool.tcp(Some(port))).await;
    let stream = match connect {
        Err(_) => return Outcome::Timeout,
        Ok(Err(_)) => return Outcome::TcpFailure,
        Ok(Ok(s)) => s,
    };
    if a.kind == ProbeKind::Tcp {
        return Outcome::Success;
    }
    let host_header = a.host.clone().unwrap_or_else(|| host.to_string());
    let mut request =
        format!("GET {} HTTP/1.0\r\nHost: {host_header}\r\nUser-Agent: sluice-health-check\r\n", a.http_path);
    for h in &a.req_headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    let head = match (a.kind, &rt.probe_tls) {
        (ProbeKind::Https, Some(tls)) => {
            // The host part of `host` (which may carry a port, or be a bracketed IPv6 address).
            let authority: Option<http::uri::Authority> = host_header.parse().ok();
            let name = authority.as_ref().map_or(host, |a| a.host()).trim_matches(['[', ']']);
            let Ok(name) = ServerName::try_from(name.to_string()) else { return Outcome::TcpFailure };
            // A failed handshake counts as a failed connection, as in APISIX.
            let stream = match tokio::time::timeout_at(deadline, tls.connector().connect(name, stream)).await {
                Err(_) => return Outcome::Timeout,
                Ok(Err(_)) => return Outcome::TcpFailure,
                Ok(Ok(s)) => s,
            };
            tokio::time::timeout_at(deadline, exchange(stream, &request)).await
        }
        _ => tokio::time::timeout_at(deadline, exchange(stream, &request)).await,
    };
    match head {
        Err(_) => Outcome::Timeout,
        Ok(Err(_)) => Outcome::TcpFailure,
        Ok(Ok(head)) => match status(&head) {
            Some(s) if a.healthy.http_statuses.contains(&s) => Outcome::Success,
            Some(s) if a.unhealthy.http_statuses.contains(&s) => Outcome::HttpFailure,
            Some(_) => Outcome::Neutral,
            // Not HTTP at all: the node is broken as an HTTP server.
            None => Outcome::HttpFailure,
        },
    }
}

/// Sends `request` and reads the start of the answer; the status line is all that matters (`HTTP/1.x NNN`).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &str) -> std::io::Result<Vec<u8>> {
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while head.len() < 12 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

fn status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head.get(..12)?).ok()?;
    let rest = text.strip_prefix("HTTP/1.")?;
    rest.get(2..5)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fills_apisix_defaults_and_rejects_bad_settings() {
        let c = Checks::parse(&json!({"active": {}})).unwrap();
        let a = c.active.unwrap();
        assert_eq!(a, Active::default());
        assert_eq!((a.timeout, a.concurrency, a.http_path.as_str()), (1.0, 10, "/"));
        assert_eq!((a.healthy.interval, a.healthy.successes, a.healthy.http_statuses), (1, 2, vec![200, 302]));
        assert_eq!((a.unhealthy.http_failures, a.unhealthy.tcp_failures, a.unhealthy.timeouts), (5, 2, 3));
        let bad = |v: Value| Checks::parse(&v).unwrap_err();
        bad(json!({"active": {"type": "udp"}}));
        bad(json!({"active": {"timeout": 0}}));
        bad(json!({"active": {"healthy": {"successes": 0}}}));
        bad(json!({"active": {"unhealthy": {"http_statuses": [99]}}}));
        bad(json!({"active": {"http_path": "no-slash"}}));
        bad(json!({"active": {"req_headers": ["X-A: 1\r\nX-B: 2"]}}));
        bad(json!({"active": {"bogus": 1}}));
        bad(json!({"passive": {}}));
        let both = Checks::parse(&json!({"active": {}, "passive": {"unhealthy": {"http_failures": 2}}})).unwrap();
        assert_eq!(both.passive.unwrap().unhealthy.http_statuses, [429, 500, 503]);
        bad(json!({"active": {}, "passive": {"healthy": {"successes": 300}}}));
        assert!(Checks::parse(&json!({})).unwrap().active.is_none());
    }

    #[test]
    fn real_traffic_ejects_and_restores_nodes() {
        let b = Balancer::new(&[1, 1]);
        let cfg = Passive { healthy: PassiveHealthy { successes: 2, ..Default::default() }, ..Default::default() };
        let p = PassiveState::new(cfg, 2);
        p.observe(&b, 0, Observed::ConnectFailure);
        p.observe(&b, 0, Observed::Status(200));
        p.observe(&b, 0, Observed::ConnectFailure);
        assert!(b.is_healthy(0), "a success in between resets the count");
        p.observe(&b, 0, Observed::ConnectFailure);
        assert!(!b.is_healthy(0), "tcp_failures 2");
        for _ in 0..4 {
            p.observe(&b, 1, Observed::Status(500));
        }
        p.observe(&b, 1, Observed::Status(404));
        assert!(b.is_healthy(1), "404 is not in the passive failure list");
        p.observe(&b, 1, Observed::Status(503));
        assert!(!b.is_healthy(1), "http_failures 5");
        p.observe(&b, 0, Observed::Status(200));
        p.observe(&b, 0, Observed::Status(200));
        assert!(b.is_healthy(0), "healthy.successes 2");
    }

    #[test]
    fn flips_after_consecutive_results() {
        let a = Active::default();
        let mut c = Counters::default();
        assert_eq!(c.record(Outcome::TcpFailure, &a), None);
        assert_eq!(c.record(Outcome::Success, &a), None, "a success resets the failure count");
        assert_eq!(c.record(Outcome::TcpFailure, &a), None);
        assert_eq!(c.record(Outcome::TcpFailure, &a), Some(false), "tcp_failures 2");
        assert_eq!(c.record(Outcome::Success, &a), None);
        assert_eq!(c.record(Outcome::Neutral, &a), None);
        assert_eq!(c.record(Outcome::Success, &a), Some(true), "successes 2");
        for _ in 0..4 {
            assert_eq!(c.record(Outcome::HttpFailure, &a), None);
        }
        assert_eq!(c.record(Outcome::HttpFailure, &a), Some(false), "http_failures 5");
        assert_eq!(status(b"HTTP/1.1 302 Found\r\n"), Some(302));
        assert_eq!(status(b"SSH-2.0"), None);
    }
}
