//! Benchmarks for sluice. This crate holds the shared code: a synthetic configuration of many routes mixing the
//! kinds APISIX users write (static, prefix, parameter and host routes), requests that hit them, and a memory probe.
//!
//! Binaries: `route-table` (build, update, match and memory of the routing engine at 100,000 routes) and
//! `route-burst` (1,000 route changes against a loaded proxy backed by real etcd). Criterion benchmarks are in
//! `benches/router.rs`.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_dataplane::config::RawObject;

/// The etcd prefix the generated objects live under.
pub const PREFIX: &str = "/sluice";

/// The id of the one upstream every generated route uses.
pub const UPSTREAM: &str = "bench";

/// The route kinds, in the order route `i` cycles through them.
pub const KINDS: [&str; 5] = ["static", "prefix", "param", "host", "vars"];

/// The JSON of generated route `i` (`version` varies it without changing what it matches).
pub fn route(i: usize, version: u64) -> Value {
    let mut r = match i % KINDS.len() {
        0 => json!({"uri": format!("/static/{i}/item")}),
        1 => json!({"uri": format!("/prefix/{i}/*")}),
        2 => json!({"uri": format!("/param/{i}/:id/detail")}),
        3 => json!({"uri": "/*", "host": format!("h{i}.example.com")}),
        _ => json!({"uris": [format!("/vars/{i}")], "vars": [["http_x_tenant", "==", format!("t{}", i % 97)]]}),
    };
    r["upstream_id"] = json!(UPSTREAM);
    r["priority"] = json!(version % 3);
    r["desc"] = json!(format!("generated route {i} v{version}"));
    r
}

/// The request `(host, path)` that route `i` answers.
pub fn request_for(i: usize) -> (String, String) {
    match i % KINDS.len() {
        0 => ("bench.test".into(), format!("/static/{i}/item")),
        1 => ("bench.test".into(), format!("/prefix/{i}/some/deeper/path")),
        2 => ("bench.test".into(), format!("/param/{i}/42/detail")),
        3 => (format!("h{i}.example.com"), "/index.html".into()),
        _ => ("bench.test".into(), format!("/vars/{i}")),
    }
}

/// The `x-tenant` header route `i` needs (only `vars` routes look at it).
pub fn tenant_for(i: usize) -> String {
    format!("t{}", i % 97)
}

/// The etcd key of route `i`.
pub fn route_key(i: usize) -> String {
    format!("{PREFIX}/routes/r{i}")
}

/// The upstream every route uses, pointing at `node`.
pub fn upstream(node: &str) -> Value {
    json!({"nodes": {node: 1}, "timeout": {"connect": 2, "send": 5, "read": 5}})
}

/// `n` routes plus their upstream, as the data plane's source would hand them over on a first sync.
pub fn objects(n: usize, node: &str) -> Vec<RawObject> {
    let mut out = Vec::with_capacity(n + 1);
    out.push(RawObject {
        key: format!("{PREFIX}/upstreams/{UPSTREAM}"),
        value: upstream(node).to_string().into_bytes(),
        revision: 1,
    });
    out.extend((0..n).map(|i| RawObject {
        key: route_key(i),
        value: route(i, 0).to_string().into_bytes(),
        revision: 2 + i64::try_from(i).unwrap_or(i64::MAX),
    }));
    out
}

/// The resident set size of this process in KiB, from `/proc/self/statm` (0 where it is not available).
pub fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4
}

/// Percentiles of a set of durations.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// How many samples.
    pub count: usize,
    /// The median.
    pub p50: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The largest.
    pub max: Duration,
}

impl Summary {
    /// Summarizes `samples` (sorted in place).
    pub fn of(samples: &mut [Duration]) -> Summary {
        samples.sort_unstable();
        let at = |q: f64| {
            let last = samples.len().saturating_sub(1);
            // Nearest rank; the float only picks an index.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
            let i = ((last as f64) * q).round() as usize;
            samples.get(i.min(last)).copied().unwrap_or_default()
        };
        Summary { count: samples.len(), p50: at(0.5), p99: at(0.99), max: samples.last().copied().unwrap_or_default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_dataplane::config::{State, Update};
    use sluice_model::Keys;

    /// Every generated route compiles, and each generated request reaches its own route.
    #[test]
    fn generated_requests_reach_their_routes() {
        let mut state = State::new(Keys::new(PREFIX));
        let rejected = std::cell::Cell::new(0);
        state.apply(Update::Reset(objects(500, "127.0.0.1:1")), &|_| rejected.set(rejected.get() + 1));
        assert_eq!(rejected.get(), 0);
        let compiled = state.publish();
        assert_eq!(compiled.router.len(), 500);
        for i in 0..500 {
            let (host, path) = request_for(i);
            let mut headers = http::HeaderMap::new();
            headers.insert("x-tenant", tenant_for(i).parse().unwrap());
            let info = sluice_dataplane::router::RequestInfo {
                method: &http::Method::GET,
                host: &host,
                path: &path,
                query: None,
                headers: &headers,
                remote_addr: "127.0.0.1".parse().unwrap(),
                tls: false,
            };
            let found = compiled.router.find(&info).map(|e| e.value.route_id.to_string());
            assert_eq!(found.as_deref(), Some(format!("r{i}").as_str()), "{host}{path}");
        }
    }

    #[test]
    fn summarizes() {
        let mut d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Summary::of(&mut d);
        assert_eq!(
            (s.p50, s.p99, s.max),
            (Duration::from_millis(51), Duration::from_millis(99), Duration::from_millis(100))
        );
    }
}
