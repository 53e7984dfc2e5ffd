//! The controller's Prometheus metrics, in a registry of its own.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Every metric the controller exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Syncs to etcd by result (`ok`, `error`).
    pub syncs: IntCounterVec,
    /// Problems found in Kubernetes objects, by object kind and reason; counted once when they appear.
    pub problems: IntCounterVec,
    /// Objects written to or deleted from etcd, by operation.
    pub etcd_writes: IntCounterVec,
    /// Manifest files or documents that could not be used.
    pub manifest_errors: IntCounterVec,
    /// Time from trigger to a completed sync.
    pub sync_seconds: HistogramVec,
    /// Routes in the last translated configuration.
    pub routes: IntGauge,
    /// Upstreams in the last translated configuration.
    pub upstreams: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
            registry.register(Box::new(c.clone())).expect("unique metric name");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric definition");
            registry.register(Box::new(g.clone())).expect("unique metric name");
            g
        };
        let syncs =
            counter("sluice_controller_syncs_total", "Syncs of the desired configuration to etcd.", &["result"]);
        let problems = counter(
            "sluice_controller_problems_total",
            "Problems found in Kubernetes objects, counted when they appear.",
            &["kind", "reason"],
        );
        let etcd_writes = counter("sluice_controller_etcd_writes_total", "Objects written to etcd.", &["op"]);
        let manifest_errors = counter(
            "sluice_controller_manifest_errors_total",
            "Manifest files or documents that could not be used.",
            &["stage"],
        );
        let sync_seconds = HistogramVec::new(
            HistogramOpts::new("sluice_controller_sync_seconds", "Time from change to completed sync."),
            &["result"],
        )
        .expect("valid metric definition");
        registry.register(Box::new(sync_seconds.clone())).expect("unique metric name");
        let routes = gauge("sluice_controller_routes", "Routes in the desired configuration.");
        let upstreams = gauge("sluice_controller_upstreams", "Upstreams in the desired configuration.");
        Metrics { registry, syncs, problems, etcd_writes, manifest_errors, sync_seconds, routes, upstreams }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
