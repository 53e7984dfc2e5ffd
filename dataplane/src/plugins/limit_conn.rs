//! `limit-conn`: at most `conn` requests in flight per key. A request beyond `conn` but within `burst` more waits
//! one unit delay for each `conn` requests ahead of it (as lua-resty-limit-traffic delays), one beyond that is
//! refused. The unit delay starts at `default_conn_delay` and, unless `only_use_default_delay`, follows the
//! requests' latency as APISIX's does: each request that ends moves it halfway to its own latency (its time in
//! flight less what it was delayed). A request counts from its access phase until its context is dropped, when
//! the response has been sent or the client went away, whichever way the request ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::request;
use prometheus::IntCounter;
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, limit_conn as model};

use super::limit::{Idle, KeySource, Share, Table, refusal};
use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, Reply, Resume, clone_reply};

/// limit-conn's place in the registry (APISIX priority 1003).
pub(super) const FACTORY: Factory =
    Factory { name: model::LimitConn::NAME, priority: 1003, auth: false, prefer_route: false, build };

fn build(conf: &PluginConf, ctx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::LimitConn(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    Ok(Arc::new(LimitConn {
        key: KeySource::compile(c.key_type, &c.key)?,
        conn: c.conn,
        burst: c.burst,
        delay: Duration::try_from_secs_f64(c.default_conn_delay).map_err(|e| e.to_string())?,
        unit_us: (!c.only_use_default_delay)
            .then(|| Arc::new(AtomicU64::new((c.default_conn_delay * 1e6).round().max(1.0) as u64))),
        share: Share::new(c.scope, ctx.cluster),
        refusal: refusal(c.rejected_code, c.rejected_msg.as_deref())?,
        table: Table::new(1000, 0),
        refused: ctx.metrics.limited(FACTORY.name),
    }))
}

/// One key's requests in flight.
#[derive(Debug, Default)]
struct Conns(Arc<AtomicU64>);

impl Idle for Conns {
    fn idle(&self, _: u32, _: u32) -> bool {
        // Nothing in flight and no request holding it.
        self.0.load(Ordering::Acquire) == 0 && Arc::strong_count(&self.0) == 1
    }
}

/// One request counted against a key; the count drops with it, and its latency moves the unit delay (when it
/// adapts).
#[derive(Debug)]
pub struct Held {
    count: Arc<AtomicU64>,
    /// The unit delay in µs, the request's arrival, and how long it was delayed.
    adapt: Option<(Arc<AtomicU64>, Instant, Duration)>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        if let Some((unit, started, waited)) = &self.adapt {
            let latency = u64::try_from(started.elapsed().saturating_sub(*waited).as_micros()).unwrap_or(u64::MAX);
            // Halfway from the current unit to this latency (lua-resty-limit-traffic's `leaving`), at least 1 µs.
            let _ = unit.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| Some((u / 2 + latency / 2).max(1)));
        }
    }
}

#[derive(Debug)]
struct LimitConn {
    key: KeySource,
    conn: u64,
    burst: u64,
    delay: Duration,
    /// The adapting unit delay in µs; none with `only_use_default_delay`.
    unit_us: Option<Arc<AtomicU64>>,
    share: Share,
    refusal: Reply,
    table: Table<Conns>,
    refused: IntCounter,
}

impl Plugin for LimitConn {
    fn phases(&self) -> Phases {
        Phases::ACCESS
    }

    fn access(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        // `conn` is at least 1 (the model's minimum), so the delay's division below cannot fail.
        let (conn, burst) = (self.share.of(self.conn).max(1), self.share.of(self.burst));
        let counter = self.key.with_key(ctx, req, |key| self.table.with(key, 0, |c| c.0.clone()));
        let n = counter.fetch_add(1, Ordering::AcqRel) + 1;
        if n > conn + burst {
            // A refused request neither stays counted nor moves the unit delay.
            drop(Held { count: counter, adapt: None });
            self.refused.inc();
            return Flow::Respond(clone_reply(&self.refusal));
        }
        let unit = match &self.unit_us {
            Some(us) => Duration::from_micros(us.load(Ordering::Acquire)),
            None => self.delay,
        };
        let wait = if n <= conn {
            Duration::ZERO
        } else {
            unit.saturating_mul(u32::try_from((n - 1) / conn).unwrap_or(u32::MAX))
        };
        let adapt = self.unit_us.as_ref().map(|us| (us.clone(), ctx.started, wait));
        ctx.held.push(Held { count: counter, adapt });
        if wait.is_zero() {
            return Flow::Continue;
        }
        Flow::Wait(Box::pin(async move {
            tokio::time::sleep(wait).await;
            Box::new(|_: &mut Ctx, _: &mut request::Parts| Flow::Continue) as Resume
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_delay_moves_halfway_to_each_latency() {
        let unit = Arc::new(AtomicU64::new(2_000_000));
        let count = Arc::new(AtomicU64::new(1));
        let started = Instant::now() - Duration::from_millis(300);
        // 300 ms in flight of which 100 ms waiting: a latency of 200 ms.
        drop(Held { count: count.clone(), adapt: Some((unit.clone(), started, Duration::from_millis(100))) });
        assert_eq!(count.load(Ordering::Relaxed), 0);
        let after = unit.load(Ordering::Relaxed);
        assert!((1_100_000..1_110_000).contains(&after), "halfway from 2 s to 200 ms: {after} µs");
    }
}
