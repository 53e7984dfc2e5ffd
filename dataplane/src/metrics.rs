//! Prometheus metrics in a registry owned by one data plane (not the process-global default), so several
//! instances in one test process do not share counters.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use sluice_model::Kind;

/// Status codes whose counters are resolved up front, so counting a request does no label hashing.
const COMMON_CODES: [u16; 16] = [200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 405, 429, 500, 502, 503, 504];

/// Every metric the data plane exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    rejected: IntCounterVec,
    rejected_route: IntCounter,
    rejected_upstream: IntCounter,
    requests: IntCounterVec,
    common: Vec<IntCounter>,
    /// Enabled routes in the served configuration.
    pub routes: IntGauge,
    /// 1 while the etcd watch is established, 0 otherwise.
    pub etcd_connected: IntGauge,
    /// Configuration snapshots compiled and swapped in.
    pub compiles: IntCounter,
    /// Full lists of the etcd prefix (the first sync, and re-syncs after compaction).
    pub etcd_lists: IntCounter,
    /// 1 while the served configuration comes from the snapshot file (etcd unreachable since the start).
    pub config_from_snapshot: IntGauge,
    /// Snapshot files refused at start (unreadable, damaged or of another format).
    pub snapshot_refused: IntCounter,
    upstream_retries: IntCounterVec,
    upstream_refused: IntCounterVec,
    upstream_latency: HistogramVec,
    node_healthy: IntGaugeVec,
    http_status: IntCounterVec,
    http_latency: HistogramVec,
    bandwidth: IntCounterVec,
    log_dropped: IntCounterVec,
    log_failed: IntCounterVec,
    tls_handshakes: IntCounterVec,
    /// Live data planes registered in etcd, this one included (`sluice_dataplane_cluster_size`).
    pub cluster_size: IntGauge,
    limited: IntCounterVec,
    redis_up: IntGaugeVec,
    redis_batches: IntCounterVec,
    limit_fallback: IntCounterVec,
    /// Requests let through by forward-auth because its service could not be asked (`allow_degradation`).
    pub auth_bypassed: IntCounter,
    mirrored: IntCounterVec,
    /// Active health checkers restarted after a panic (`sluice_health_checker_restarts_total`).
    pub health_checker_restarts: IntCounter,
}

/// APISIX's latency buckets, in milliseconds.
const LATENCY_BUCKETS_MS: [f64; 15] =
    [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0, 60000.0];

/// The labels of the prometheus plugin's series for one route, status, consumer and node.
#[derive(Debug, Clone, Copy)]
pub struct SeriesLabels<'a> {
    /// The status code sent.
    pub code: u16,
    /// The route's id (or name).
    pub route: &'a str,
    /// The route's path pattern.
    pub matched_uri: &'a str,
    /// The route's host pattern.
    pub matched_host: &'a str,
    /// The service's id (or name).
    pub service: &'a str,
    /// The consumer's name.
    pub consumer: &'a str,
    /// The node's address, without the port.
    pub node: &'a str,
}

/// The handles of the prometheus plugin's series for one label combination.
#[derive(Debug)]
pub struct PluginSeries {
    /// `sluice_http_status`.
    pub status: IntCounter,
    /// `sluice_http_latency{type="request"}`: from the request's arrival to the end of the response (ms).
    pub latency_request: Histogram,
    /// `sluice_http_latency{type="upstream"}`: the node's time to answer (ms).
    pub latency_upstream: Histogram,
    /// `sluice_http_latency{type="sluice"}`: the request's time less the node's (ms).
    pub latency_gateway: Histogram,
    /// `sluice_bandwidth{type="ingress"}`: bytes received from the client.
    pub ingress: IntCounter,
    /// `sluice_bandwidth{type="egress"}`: bytes sent to the client.
    pub egress: IntCounter,
}

/// One upstream's metric handles, resolved when its runtime is compiled so the request path does no label
/// hashing.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    /// Attempts after the first (`sluice_upstream_retries_total`).
    pub retries: IntCounter,
    /// Attempts not made because the node's address is refused by the upstream address policy
    /// (`sluice_upstream_refused_total`).
    pub refused: IntCounter,
    /// Time from sending a request to a node until its response head arrives (`sluice_upstream_latency_seconds`).
    pub latency: Histogram,
}

impl Metrics {
    /// Creates the metrics in a fresh registry.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let rejected = IntCounterVec::new(
            Opts::new(
                "sluice_config_rejected_total",
                "Configuration objects rejected (malformed, invalid or unsupported).",
            ),
            &["kind"],
        )
        .expect("static metric definition");
        let requests = IntCounterVec::new(
            Opts::new("sluice_http_requests_total", "HTTP requests answered, by status code."),
            &["code"],
        )
        .expect("static metric definition");
        let routes = IntGauge::new("sluice_routes", "Enabled routes in the served configuration.").expect("static");
        let etcd_connected = IntGauge::new("sluice_etcd_connected", "1 while the etcd watch is up.").expect("static");
        let compiles =
            IntCounter::new("sluice_config_compiles_total", "Configuration snapshots compiled.").expect("static");
        let etcd_lists = IntCounter::new("sluice_etcd_lists_total", "Full lists of the etcd prefix.").expect("static");
        let upstream_retries = IntCounterVec::new(
            Opts::new("sluice_upstream_retries_total", "Requests sent again to another node after a failure."),
            &["upstream"],
        )
        .expect("static metric definition");
        let upstream_refused = IntCounterVec::new(
            Opts::new(
                "sluice_upstream_refused_total",
                "Connections to nodes not opened because the upstream address policy refuses their address.",
            ),
            &["upstream"],
        )
        .expect("static metric definition");
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "sluice_upstream_latency_seconds",
                "Time from sending a request to a node until its response head arrived.",
            ),
            &["upstream"],
        )
        .expect("static metric definition");
        let node_healthy = IntGaugeVec::new(
            Opts::new("sluice_upstream_node_healthy", "1 while active health checks find the node healthy."),
            &["upstream", "node"],
        )
        .expect("static metric definition");
        let http_status = IntCounterVec::new(
            Opts::new("sluice_http_status", "Requests on routes with the prometheus plugin, by status and labels."),
            &["code", "route", "matched_uri", "matched_host", "service", "consumer", "node"],
        )
        .expect("static metric definition");
        let http_latency = HistogramVec::new(
            HistogramOpts::new("sluice_http_latency", "Request, upstream and gateway latency in milliseconds.")
                .buckets(LATENCY_BUCKETS_MS.to_vec()),
            &["type", "route", "service", "consumer", "node"],
        )
        .expect("static metric definition");
        let bandwidth = IntCounterVec::new(
            Opts::new("sluice_bandwidth", "Bytes received (ingress) and sent (egress) on routes with prometheus."),
            &["type", "route", "service", "consumer", "node"],
        )
        .expect("static metric definition");
        let log_dropped = IntCounterVec::new(
            Opts::new("sluice_log_entries_dropped_total", "Log entries dropped because a logger's queue was full."),
            &["logger"],
        )
        .expect("static metric definition");
        let log_failed = IntCounterVec::new(
            Opts::new("sluice_log_batches_failed_total", "Batches of log entries that could not be delivered."),
            &["logger"],
        )
        .expect("static metric definition");
        let tls_handshakes = IntCounterVec::new(
            Opts::new("sluice_tls_handshakes_total", "TLS handshakes on the HTTPS listener, by outcome."),
            &["result"],
        )
        .expect("static metric definition");
        let cluster_size = IntGauge::new(
            "sluice_dataplane_cluster_size",
            "Live data planes registered in etcd, this one included; cluster-wide limits are divided by it.",
        )
        .expect("static");
        // Counted once a data plane has reached etcd; until then it counts itself alone, as the limits do.
        cluster_size.set(1);
        let limited = IntCounterVec::new(
            Opts::new("sluice_limit_rejected_total", "Requests refused by a rate limiting plugin, by plugin."),
            &["plugin"],
        )
        .expect("static metric definition");
        let redis_up = IntGaugeVec::new(
            Opts::new(
                "sluice_redis_up",
                "1 while a Redis deployment used by limits answers; 0 while they count locally.",
            ),
            &["target"],
        )
        .expect("static metric definition");
        let redis_batches = IntCounterVec::new(
            Opts::new("sluice_redis_batches_total", "Batches of limit claims sent to Redis, by target and result."),
            &["target", "result"],
        )
        .expect("static metric definition");
        let limit_fallback = IntCounterVec::new(
            Opts::new(
                "sluice_limit_redis_fallback_total",
                "Requests a Redis-backed limit decided without Redis (counted locally, or let through).",
            ),
            &["plugin"],
        )
        .expect("static metric definition");
        let health_checker_restarts = IntCounter::new(
            "sluice_health_checker_restarts_total",
            "Active health checkers restarted after a panic (a bug: their upstream's nodes were unchecked for 1 s).",
        )
        .expect("static");
        let auth_bypassed = IntCounter::new(
            "sluice_forward_auth_bypassed_total",
            "Requests forward-auth let through unchecked because its service failed (allow_degradation).",
        )
        .expect("static");
        let mirrored = IntCounterVec::new(
            Opts::new("sluice_mirror_requests_total", "Copies of requests by proxy-mirror: sent, failed or dropped."),
            &["result"],
        )
        .expect("static metric definition");
        let config_from_snapshot = IntGauge::new(
            "sluice_config_from_snapshot",
            "1 while the configuration served comes from the snapshot file, etcd having been unreachable since start.",
        )
        .expect("static");
        let snapshot_refused = IntCounter::new(
            "sluice_config_snapshot_refused_total",
            "Configuration snapshot files refused at start: unreadable, damaged or of another format.",
        )
        .expect("static");
        for c in [
            Box::new(rejected.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(config_from_snapshot.clone()),
            Box::new(snapshot_refused.clone()),
            Box::new(mirrored.clone()),
            Box::new(auth_bypassed.clone()),
            Box::new(health_checker_restarts.clone()),
            Box::new(cluster_size.clone()),
            Box::new(limited.clone()),
            Box::new(redis_up.clone()),
            Box::new(redis_batches.clone()),
            Box::new(limit_fallback.clone()),
            Box::new(tls_handshakes.clone()),
            Box::new(log_dropped.clone()),
            Box::new(log_failed.clone()),
            Box::new(http_status.clone()),
            Box::new(http_latency.clone()),
            Box::new(bandwidth.clone()),
            Box::new(requests.clone()),
            Box::new(routes.clone()),
            Box::new(etcd_connected.clone()),
            Box::new(compiles.clone()),
            Box::new(etcd_lists.clone()),
            Box::new(upstream_retries.clone()),
            Box::new(upstream_refused.clone()),
            Box::new(upstream_latency.clone()),
            Box::new(node_healthy.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        let common = COMMON_CODES.iter().map(|c| requests.with_label_values(&[&c.to_string()])).collect();
        Metrics {
            rejected_route: rejected.with_label_values(&[Kind::Route.label()]),
            rejected_upstream: rejected.with_label_values(&[Kind::Upstream.label()]),
            rejected,
            registry,
            requests,
            common,
            routes,
            etcd_connected,
            compiles,
            etcd_lists,
            config_from_snapshot,
            snapshot_refused,
            upstream_retries,
            upstream_refused,
            upstream_latency,
            node_healthy,
            http_status,
            http_latency,
            bandwidth,
            log_dropped,
            log_failed,
            tls_handshakes,
            cluster_size,
            limited,
            redis_up,
            redis_batches,
            limit_fallback,
            auth_bypassed,
            mirrored,
            health_checker_restarts,
        }
    }

    /// The counter of proxy-mirror copies that ended as `result` (`sent`, `failed`, `dropped`).
    pub fn mirrored(&self, result: &str) -> IntCounter {
        self.mirrored.with_label_values(&[result])
    }

    /// The counter of requests refused by limiting plugin `plugin`.
    pub fn limited(&self, plugin: &str) -> IntCounter {
        self.limited.with_label_values(&[plugin])
    }

    /// The gauge saying whether Redis deployment `target` answers.
    pub fn redis_up(&self, target: &str) -> IntGauge {
        self.redis_up.with_label_values(&[target])
    }

    /// The counter of claim batches sent to `target` that ended as `result` (`ok`, `failed`).
    pub fn redis_batches(&self, target: &str, result: &str) -> IntCounter {
        self.redis_batches.with_label_values(&[target, result])
    }

    /// The counter of requests limiting plugin `plugin` decided without Redis.
    pub fn limit_fallback(&self, plugin: &str) -> IntCounter {
        self.limit_fallback.with_label_values(&[plugin])
    }

    /// Counts one TLS handshake by how it ended.
    pub fn tls_handshake(&self, outcome: crate::listener::tls::Outcome) {
        self.tls_handshakes.with_label_values(&[outcome.label()]).inc();
    }

    /// The counter of entries logger `name` dropped.
    pub fn log_dropped(&self, name: &str) -> IntCounter {
        self.log_dropped.with_label_values(&[name])
    }

    /// The counter of batches logger `name` could not deliver.
    pub fn log_failed(&self, name: &str) -> IntCounter {
        self.log_failed.with_label_values(&[name])
    }

    /// The prometheus plugin's series for one label combination (resolved once, then cached by the plugin).
    pub fn plugin_series(&self, l: &SeriesLabels<'_>) -> PluginSeries {
        let code = l.code.to_string();
        let common = |kind: &'static str| [kind, l.route, l.service, l.consumer, l.node];
        PluginSeries {
            status: self.http_status.with_label_values(&[
                code.as_str(),
                l.route,
                l.matched_uri,
                l.matched_host,
                l.service,
                l.consumer,
                l.node,
            ]),
            latency_request: self.http_latency.with_label_values(&common("request")),
            latency_upstream: self.http_latency.with_label_values(&common("upstream")),
            latency_gateway: self.http_latency.with_label_values(&common("sluice")),
            ingress: self.bandwidth.with_label_values(&common("ingress")),
            egress: self.bandwidth.with_label_values(&common("egress")),
        }
    }

    /// The handles of upstream `name` (an upstream id, or `route <id>` for an inline one).
    pub fn upstream(&self, name: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            retries: self.upstream_retries.with_label_values(&[name]),
            refused: self.upstream_refused.with_label_values(&[name]),
            latency: self.upstream_latency.with_label_values(&[name]),
        }
    }

    /// The health gauge of node `node` of upstream `name`.
    pub fn node_healthy(&self, name: &str, node: &str) -> IntGauge {
        self.node_healthy.with_label_values(&[name, node])
    }

    /// Drops the series of an upstream that no longer exists, so deleted upstreams do not linger in `/metrics`.
    pub fn forget_upstream(&self, name: &str) {
        let _ = self.upstream_retries.remove_label_values(&[name]);
        let _ = self.upstream_refused.remove_label_values(&[name]);
        let _ = self.upstream_latency.remove_label_values(&[name]);
    }

    /// Drops the health gauge of a node that left upstream `name`.
    pub fn forget_node(&self, name: &str, node: &str) {
        let _ = self.node_healthy.remove_label_values(&[name, node]);
    }

    /// Counts one rejected object of `kind`.
    pub fn rejected(&self, kind: Kind) {
        match kind {
            Kind::Route => self.rejected_route.inc(),
            Kind::Upstream => self.rejected_upstream.inc(),
            other => self.rejected.with_label_values(&[other.label()]).inc(),
        }
    }

    /// Counts one answered request.
    pub fn request(&self, code: u16) {
        match COMMON_CODES.iter().position(|&c| c == code) {
            Some(i) => self.common[i].inc(),
            None => self.requests.with_label_values(&[&code.to_string()]).inc(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_else(|e| format!("# error: {e}\n"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
