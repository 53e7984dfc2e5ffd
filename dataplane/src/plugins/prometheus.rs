//! `prometheus`: per route, service, consumer, node and status, APISIX's request counter, latency histograms and
//! bandwidth counters, under sluice's prefix (`sluice_http_status`, `sluice_http_latency`, `sluice_bandwidth`).
//!
//! Resolving a series by its labels hashes every label and takes the registry's lock, so each instance keeps the
//! series it has resolved in a read-mostly map, swapped whole when a new label combination appears: a request
//! for a combination seen before does one hash lookup with borrowed labels and no lock.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hashbrown::{Equivalent, HashMap};
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, prometheus as model};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Phases, Plugin};
use crate::metrics::{Metrics, PluginSeries, SeriesLabels};

/// prometheus's place in the registry (APISIX priority 500).
pub(super) const FACTORY: Factory =
    Factory { name: model::Prometheus::NAME, priority: 500, auth: false, prefer_route: true, build };

fn build(conf: &PluginConf, cx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::Prometheus(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    Ok(Arc::new(Prometheus { prefer_name: c.prefer_name, metrics: cx.metrics.clone(), seen: ArcSwap::default() }))
}

/// The labels that vary per request, owned (the map's key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    route: Arc<str>,
    code: u16,
    consumer: Option<Arc<str>>,
    node: Option<Arc<str>>,
}

/// The same labels, borrowed from the request's context; hashes exactly like [`Key`].
#[derive(Debug)]
struct Labels<'a> {
    route: &'a str,
    code: u16,
    consumer: Option<&'a str>,
    node: Option<&'a str>,
}

impl Hash for Labels<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Field by field as the derived `Hash` of `Key` does: `Arc<str>` hashes as `str`.
        self.route.hash(state);
        self.code.hash(state);
        self.consumer.hash(state);
        self.node.hash(state);
    }
}

impl Equivalent<Key> for Labels<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *key.route == *self.route
            && key.code == self.code
            && key.consumer.as_deref() == self.consumer
            && key.node.as_deref() == self.node
    }
}

#[derive(Debug)]
struct Prometheus {
    prefer_name: bool,
    metrics: Metrics,
    seen: ArcSwap<HashMap<Key, Arc<PluginSeries>>>,
}

impl Prometheus {
    /// Resolves a label combination not seen before, and remembers it.
    fn resolve<'a>(&self, ctx: &'a Ctx, labels: &Labels<'_>) -> Arc<PluginSeries> {
        let route = ctx.route.as_deref();
        let prefer_name = self.prefer_name;
        let name = |id: Option<&'a str>, name: Option<&'a str>| if prefer_name { name.or(id) } else { id };
        let route_label = name(route.map(|r| &*r.id), route.and_then(|r| r.name.as_deref())).unwrap_or("");
        let service_label =
            name(route.and_then(|r| r.service_id.as_deref()), route.and_then(|r| r.service_name.as_deref()))
                .unwrap_or("");
        // The node's address without its port, as APISIX's `balancer_ip`.
        let node = labels.node.map(|n| n.rsplit_once(':').map_or(n, |(ip, _)| ip)).unwrap_or("");
        let node = node.trim_start_matches('[').trim_end_matches(']');
        let series = Arc::new(self.metrics.plugin_series(&SeriesLabels {
            code: labels.code,
            route: route_label,
            matched_uri: route.map_or("", |r| &*r.matched_uri),
            matched_host: route.map_or("", |r| &*r.matched_host),
            service: service_label,
            consumer: labels.consumer.unwrap_or(""),
            node,
        }));
        let key = Key {
            route: Arc::from(labels.route),
            code: labels.code,
            consumer: labels.consumer.map(Arc::from),
            node: labels.node.map(Arc::from),
        };
        self.seen.rcu(|seen| {
            let mut next = HashMap::clone(seen);
            next.insert(key.clone(), series.clone());
            next
        });
        series
    }
}

impl Plugin for Prometheus {
    fn phases(&self) -> Phases {
        Phases::LOG
    }

    fn log(&self, ctx: &Ctx) {
        let labels = Labels {
            route: ctx.route.as_deref().map_or("", |r| &*r.id),
            code: ctx.status.map_or(0, |s| s.as_u16()),
            consumer: ctx.consumer_name(),
            node: ctx.node.as_deref(),
        };
        let seen = self.seen.load();
        let found;
        let series = match seen.get(&labels) {
            Some(series) => series,
            None => {
                found = self.resolve(ctx, &labels);
                &found
            }
        };
        series.status.inc();
        let total = ctx.started.elapsed().as_secs_f64() * 1000.0;
        series.latency_request.observe(total);
        match ctx.upstream_latency {
            Some(upstream) => {
                let upstream = upstream.as_secs_f64() * 1000.0;
                series.latency_upstream.observe(upstream);
                series.latency_gateway.observe((total - upstream).max(0.0));
            }
            None => series.latency_gateway.observe(total),
        }
        series.ingress.inc_by(ctx.request_bytes + ctx.request_head_bytes);
        series.egress.inc_by(ctx.response_bytes + ctx.response_head_bytes);
    }
}
