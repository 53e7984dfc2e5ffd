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
use super::{Consumer, Ctx, Phases, Plugin, RouteMeta};
use crate::metrics::{Metrics, PluginSeries, SeriesLabels};

/// prometheus's place in the registry (APISIX priority 500).
pub(super) const FACTORY: Factory =
    Factory { name: model::Prometheus::NAME, priority: 500, auth: false, prefer_route: true, build };

fn build(conf: &PluginConf, cx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::Prometheus(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    Ok(Arc::new(Prometheus { prefer_name: c.prefer_name, metrics: cx.metrics.clone(), seen: ArcSwap::default() }))
}

/// What varies per request, by identity: the route's and consumer's runtime objects and the node's address, as
/// the configuration shares them, and the status. Hashing three pointers and a number is much cheaper than
/// hashing the label strings; the key holds its objects, so an address cannot be reused while it is cached.
#[derive(Debug, Clone)]
struct Key {
    route: Option<Arc<RouteMeta>>,
    code: u16,
    consumer: Option<Arc<Consumer>>,
    node: Option<Arc<str>>,
}

/// The same, borrowed from the request's context; hashes exactly like [`Key`].
#[derive(Debug)]
struct Labels<'a> {
    route: Option<&'a Arc<RouteMeta>>,
    code: u16,
    consumer: Option<&'a Arc<Consumer>>,
    node: Option<&'a Arc<str>>,
}

fn addr<T: ?Sized>(a: Option<&Arc<T>>) -> usize {
    a.map_or(0, |a| Arc::as_ptr(a).cast::<()>() as usize)
}

impl Key {
    fn labels(&self) -> Labels<'_> {
        Labels {
            route: self.route.as_ref(),
            code: self.code,
            consumer: self.consumer.as_ref(),
            node: self.node.as_ref(),
        }
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.labels().hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.labels().equivalent(other)
    }
}

impl Eq for Key {}

impl Hash for Labels<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (addr(self.route), self.code, addr(self.consumer), addr(self.node)).hash(state);
    }
}

impl Equivalent<Key> for Labels<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        addr(self.route) == addr(key.route.as_ref())
            && self.code == key.code
            && addr(self.consumer) == addr(key.consumer.as_ref())
            && addr(self.node) == addr(key.node.as_ref())
    }
}

/// Cached combinations at most; past it the cache starts over (the series themselves stay registered), so
/// configuration churn cannot grow it without bound.
const CACHE_LIMIT: usize = 4096;

#[derive(Debug)]
struct Prometheus {
    prefer_name: bool,
    metrics: Metrics,
    seen: ArcSwap<HashMap<Key, Arc<PluginSeries>>>,
}

impl Prometheus {
    /// Resolves a label combination not seen before, and remembers it.
    fn resolve<'b>(&self, ctx: &'b Ctx, labels: &Labels<'_>) -> Arc<PluginSeries> {
        let route = ctx.route.as_deref();
        let prefer_name = self.prefer_name;
        let name = |id: Option<&'b str>, name: Option<&'b str>| if prefer_name { name.or(id) } else { id };
        let route_label = name(route.map(|r| &*r.id), route.and_then(|r| r.name.as_deref())).unwrap_or("");
        let service_label =
            name(route.and_then(|r| r.service_id.as_deref()), route.and_then(|r| r.service_name.as_deref()))
                .unwrap_or("");
        // The node's address without its port, as APISIX's `balancer_ip`.
        let node = labels.node.map(|n| n.rsplit_once(':').map_or(&**n, |(ip, _)| ip)).unwrap_or("");
        let node = node.trim_start_matches('[').trim_end_matches(']');
        let series = Arc::new(self.metrics.plugin_series(&SeriesLabels {
            code: labels.code,
            route: route_label,
            matched_uri: route.map_or("", |r| &*r.matched_uri),
            matched_host: route.map_or("", |r| &*r.matched_host),
            service: service_label,
            consumer: labels.consumer.map_or("", |c| &*c.username),
            node,
        }));
        let key = Key {
            route: labels.route.cloned(),
            code: labels.code,
            consumer: labels.consumer.cloned(),
            node: labels.node.cloned(),
        };
        self.seen.rcu(|seen| {
            let mut next = if seen.len() >= CACHE_LIMIT { HashMap::new() } else { HashMap::clone(seen) };
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
            route: ctx.route.as_ref(),
            code: ctx.status.map_or(0, |s| s.as_u16()),
            consumer: ctx.consumer.as_ref(),
            node: ctx.node.as_ref(),
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
