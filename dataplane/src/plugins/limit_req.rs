//! `limit-req`: a leaky bucket per key, as nginx's `limit_req` counts. Each request adds one to the key's excess,
//! which drains at `rate` per second; a request that would take the excess past `burst` is refused, the others wait
//! until the excess has drained to them (`excess / rate`), or pass at once with `nodelay`. The wait does not block
//! the worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::request;
use prometheus::IntCounter;
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, limit_req as model};

use super::limit::{Idle, KeySource, Share, Table, refusal};
use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, Reply, Resume, clone_reply};

/// limit-req's place in the registry (APISIX priority 1001).
pub(super) const FACTORY: Factory =
    Factory { name: model::LimitReq::NAME, priority: 1001, auth: false, prefer_route: false, build };

/// The bucket clock's step: 1 ms, nginx's.
const TICK_MS: u32 = 1;

/// How much longer than the undivided drain time a bucket is kept: a cluster-wide limit drains at its share of
/// the rate, up to this many data planes' worth slower.
const SPAN_MARGIN: f64 = 64.0;

fn build(conf: &PluginConf, ctx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::LimitReq(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    // Time for a full bucket to drain, in ms.
    let drain = ((c.burst + 1.0) / c.rate * 1000.0 * SPAN_MARGIN).ceil().min(f64::from(u32::MAX / 2));
    Ok(Arc::new(LimitReq {
        key: KeySource::compile(c.key_type, &c.key)?,
        rate: c.rate,
        burst: c.burst,
        nodelay: c.nodelay,
        share: Share::new(c.scope, ctx.cluster),
        refusal: refusal(c.rejected_code, c.rejected_msg.as_deref())?,
        table: Table::new(TICK_MS, drain as u32),
        refused: ctx.metrics.limited(FACTORY.name),
    }))
}

/// One key's bucket: when it was last admitted to (ms ticks) in the high half, its excess in thousandths of a
/// request in the low half; 0 for a key not seen yet.
#[derive(Debug, Default)]
struct Bucket(AtomicU64);

/// What a bucket says about one more request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    /// Admitted after waiting this many milliseconds (0: at once).
    Admitted { wait_ms: f64 },
    /// Over the burst.
    Refused,
}

impl Bucket {
    /// `rate` in requests per second, `burst` in requests, `now` in ms ticks.
    fn admit(&self, rate: f64, burst: f64, now: u32) -> Verdict {
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let (last, excess) = ((current >> 32) as u32, current as u32);
            let excess = if current == 0 {
                // A new key passes with nothing in its bucket.
                0.0
            } else {
                // A rate of r per second drains r thousandths of a request per millisecond.
                let drained = rate * f64::from(now.wrapping_sub(last));
                (f64::from(excess) - drained + 1000.0).max(0.0)
            };
            if excess > burst * 1000.0 {
                return Verdict::Refused;
            }
            let next = (u64::from(now) << 32) | (excess as u64).min(u64::from(u32::MAX));
            if self.0.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                return Verdict::Admitted { wait_ms: excess / rate };
            }
            current = self.0.load(Ordering::Relaxed);
        }
    }
}

impl Idle for Bucket {
    fn idle(&self, now: u32, drain: u32) -> bool {
        let current = self.0.load(Ordering::Relaxed);
        current == 0 || now.wrapping_sub((current >> 32) as u32) >= drain
    }
}

#[derive(Debug)]
struct LimitReq {
    key: KeySource,
    rate: f64,
    burst: f64,
    nodelay: bool,
    share: Share,
    refusal: Reply,
    table: Table<Bucket>,
    refused: IntCounter,
}

impl Plugin for LimitReq {
    fn phases(&self) -> Phases {
        Phases::ACCESS
    }

    fn access(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        let (rate, burst) = (self.share.of_rate(self.rate), self.share.of_rate(self.burst));
        let now = self.table.ticks(ctx.started);
        match self.key.with_key(ctx, req, |key| self.table.with(key, now, |b| b.admit(rate, burst, now))) {
            Verdict::Refused => {
                self.refused.inc();
                Flow::Respond(clone_reply(&self.refusal))
            }
            // Under a millisecond is not worth a timer (APISIX waits from 1 ms too).
            Verdict::Admitted { wait_ms } if self.nodelay || wait_ms < 1.0 => Flow::Continue,
            Verdict::Admitted { wait_ms } => {
                let wait = Duration::from_secs_f64(wait_ms / 1000.0);
                Flow::Wait(Box::pin(async move {
                    tokio::time::sleep(wait).await;
                    Box::new(|_: &mut Ctx, _: &mut request::Parts| Flow::Continue) as Resume
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaks_at_the_rate_and_refuses_past_the_burst() {
        let b = Bucket::default();
        // 10 per second with a burst of 1: one at once, one delayed by 100 ms, the third refused.
        assert_eq!(b.admit(10.0, 1.0, 1), Verdict::Admitted { wait_ms: 0.0 });
        assert_eq!(b.admit(10.0, 1.0, 1), Verdict::Admitted { wait_ms: 100.0 });
        assert_eq!(b.admit(10.0, 1.0, 1), Verdict::Refused);
        // 100 ms later one request's worth has drained.
        assert_eq!(b.admit(10.0, 1.0, 101), Verdict::Admitted { wait_ms: 100.0 });
        assert_eq!(b.admit(10.0, 1.0, 101), Verdict::Refused);
        // A second later the bucket is empty again.
        assert_eq!(b.admit(10.0, 1.0, 1101), Verdict::Admitted { wait_ms: 0.0 });
    }
}
