//! `limit-count`: at most `count` requests per `time_window` for each key. As APISIX's local policy counts, a
//! key's window opens with its first request and closes `time_window` seconds later; `X-RateLimit-Limit`,
//! `-Remaining` and `-Reset` (seconds until the window closes) tell the client where it stands.
//!
//! Counters live in the plugin instance, which the registry keeps while the configuration is unchanged; routes
//! naming the same `group` share one table across instances.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::header::{HeaderName, HeaderValue};
use http::{request, response};
use prometheus::IntCounter;
use sluice_model::PluginConf;
use sluice_model::plugins::limit::Scope;
use sluice_model::plugins::{Schema, limit_count as model};

use super::limit::{Groups, Idle, KeySource, Share, Table, refusal};
use super::redis_count::{RedisCount, Setup, Verdict as RedisVerdict};
use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, Reply, Resume, clone_reply};

/// limit-count's place in the registry (APISIX priority 1002).
pub(super) const FACTORY: Factory =
    Factory { name: model::LimitCount::NAME, priority: 1002, auth: false, prefer_route: false, build };

/// The window clock's step: 10 ms.
const TICK_MS: u32 = 10;

/// The tables of local limit-count groups.
pub type CountGroups = Groups<Table<Window>>;
/// The Redis-backed counts of limit-count groups.
pub type RedisGroups = Groups<RedisCount>;

fn build(conf: &PluginConf, ctx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::LimitCount(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    let window = u32::try_from(c.time_window.saturating_mul(1000 / u64::from(TICK_MS))).unwrap_or(u32::MAX);
    let table = match &c.group {
        Some(group) => ctx.count_groups.get(group, || Arc::new(Table::new(TICK_MS, window))),
        None => Arc::new(Table::new(TICK_MS, window)),
    };
    let redis_target = c.redis_target();
    // Without Redis, a Redis-backed limit falls back to the cluster-aware local limit.
    let scope = if redis_target.is_some() { Scope::Cluster } else { c.scope };
    let local = Local { table, count: c.count, window, share: Share::new(scope, ctx.cluster) };
    let redis = redis_target.map(|target| {
        let make = || {
            let link = ctx.redis.link(&target, ctx.metrics);
            RedisCount::start(Setup {
                owner: match &c.group {
                    Some(group) => format!("group/{group}"),
                    None => ctx.owner.to_string(),
                },
                count: c.count,
                window_secs: c.time_window,
                link,
                cluster: ctx.cluster.clone(),
                local: local.clone(),
                allow_degradation: c.allow_degradation,
                fallback: ctx.metrics.limit_fallback(FACTORY.name),
                timeout: std::time::Duration::from_millis(target.timeout_ms),
            })
        };
        match &c.group {
            Some(group) => ctx.redis_groups.get(group, make),
            None => make(),
        }
    });
    Ok(Arc::new(LimitCount {
        key: KeySource::compile(c.key_type, &c.key)?,
        count: c.count,
        local,
        redis,
        refusal: refusal(c.rejected_code, c.rejected_msg.as_deref())?,
        headers: c.show_limit_quota_header,
        limit_value: HeaderValue::from(c.count),
        refused: ctx.metrics.limited(FACTORY.name),
    }))
}

/// Local counting: per-key fixed windows in this data plane's memory, of this data plane's share of the limit.
#[derive(Debug, Clone)]
pub struct Local {
    table: Arc<Table<Window>>,
    count: u64,
    /// The window, in ticks.
    window: u32,
    share: Share,
}

impl Local {
    /// Counts one request with key `key`, arrived at `started`.
    pub fn decide(&self, key: &[u8], started: Instant) -> Decision {
        let limit = self.share.of(self.count);
        let now = self.table.ticks(started);
        match self.table.with(key, now, |w| w.admit(limit, self.window, now)) {
            Verdict::Admitted { remaining, reset } => {
                Decision::Admitted(Quota { limit, remaining, reset: seconds(reset) })
            }
            Verdict::Refused { reset } => Decision::Refused(Quota { limit, remaining: 0, reset: seconds(reset) }),
        }
    }
}

/// What limit-count decided about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admitted, with the quota left.
    Admitted(Quota),
    /// Refused.
    Refused(Quota),
    /// Let through uncounted (Redis unreachable, `allow_degradation`).
    Pass,
}

/// One key's window: when it opened (ticks) in the high half, requests admitted in it in the low half; 0 for a
/// key not seen yet.
#[derive(Debug, Default)]
pub struct Window(AtomicU64);

/// What a window says about one more request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Admitted; this many more fit in the window.
    Admitted { remaining: u64, reset: u32 },
    /// The window is full until `reset` ticks from now.
    Refused { reset: u32 },
}

impl Window {
    fn admit(&self, limit: u64, window: u32, now: u32) -> Verdict {
        // At least 1 (the model's minimum), so that no arithmetic below can underflow.
        let limit = u32::try_from(limit).unwrap_or(u32::MAX).max(1);
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let (start, used) = ((current >> 32) as u32, current as u32);
            let elapsed = now.wrapping_sub(start);
            let (next, verdict) = if used == 0 || elapsed >= window {
                let next = (u64::from(now) << 32) | 1;
                (next, Verdict::Admitted { remaining: u64::from(limit - 1), reset: window })
            } else if used >= limit {
                return Verdict::Refused { reset: window - elapsed };
            } else {
                (current + 1, Verdict::Admitted { remaining: u64::from(limit - used - 1), reset: window - elapsed })
            };
            match self.0.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return verdict,
                Err(seen) => current = seen,
            }
        }
    }
}

impl Idle for Window {
    fn idle(&self, now: u32, window: u32) -> bool {
        // A closed window is as good as none.
        let current = self.0.load(Ordering::Relaxed);
        current == 0 || now.wrapping_sub((current >> 32) as u32) >= window
    }
}

/// Where a request stands, for the three headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// `X-RateLimit-Limit`.
    pub limit: u64,
    /// `X-RateLimit-Remaining`.
    pub remaining: u64,
    /// `X-RateLimit-Reset`, in seconds.
    pub reset: u64,
}

#[derive(Debug)]
struct LimitCount {
    key: KeySource,
    count: u64,
    local: Local,
    /// A Redis policy's count (`local` is then its fallback).
    redis: Option<Arc<RedisCount>>,
    refusal: Reply,
    headers: bool,
    /// `X-RateLimit-Limit` of the whole count, made once.
    limit_value: HeaderValue,
    refused: IntCounter,
}

/// Applies `decision` to the request.
fn apply(decision: Decision, ctx: &mut Ctx, headers: bool, refusal: &Reply, refused: &IntCounter) -> Flow {
    match decision {
        Decision::Admitted(q) => {
            if headers {
                ctx.quota = Some(q);
            }
            Flow::Continue
        }
        Decision::Refused(q) => {
            refused.inc();
            if headers {
                ctx.quota = Some(q);
            }
            Flow::Respond(clone_reply(refusal))
        }
        Decision::Pass => Flow::Continue,
    }
}

/// Ticks as whole seconds, rounded up (a client waiting that long finds the window closed).
fn seconds(ticks: u32) -> u64 {
    u64::from(ticks).div_ceil(u64::from(1000 / TICK_MS))
}

/// A header value for `n`; small numbers (most `Remaining` and `Reset` values) come from a table made once, so
/// the quota headers cost no allocation.
fn number(n: u64) -> HeaderValue {
    static SMALL: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    let small = SMALL.get_or_init(|| {
        // Leaked once per process: 1,024 short strings, so every copy of a value is free.
        (0..1024u32).map(|i| HeaderValue::from_static(Box::leak(i.to_string().into_boxed_str()))).collect()
    });
    usize::try_from(n).ok().and_then(|i| small.get(i)).cloned().unwrap_or_else(|| HeaderValue::from(n))
}

static LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

impl Plugin for LimitCount {
    fn phases(&self) -> Phases {
        if self.headers { Phases::ACCESS | Phases::RESPONSE_HEADER } else { Phases::ACCESS }
    }

    fn access(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        let decision = match &self.redis {
            None => self.key.with_key(ctx, req, |key| self.local.decide(key, ctx.started)),
            Some(redis) => match self.key.with_key(ctx, req, |key| redis.admit(key, ctx.started)) {
                RedisVerdict::Now(decision) => decision,
                RedisVerdict::Later(decided) => {
                    let (headers, refusal, refused) = (self.headers, clone_reply(&self.refusal), self.refused.clone());
                    return Flow::Wait(Box::pin(async move {
                        let decision = decided.await;
                        Box::new(move |ctx: &mut Ctx, _: &mut request::Parts| {
                            apply(decision, ctx, headers, &refusal, &refused)
                        }) as Resume
                    }));
                }
            },
        };
        apply(decision, ctx, self.headers, &self.refusal, &self.refused)
    }

    fn response_header(&self, ctx: &mut Ctx, resp: &mut response::Parts) {
        if let Some(q) = ctx.quota {
            // The whole count unless a cluster-wide limit is shared out.
            let limit = if q.limit == self.count { self.limit_value.clone() } else { number(q.limit) };
            resp.headers.insert(LIMIT.clone(), limit);
            resp.headers.insert(REMAINING.clone(), number(q.remaining));
            resp.headers.insert(RESET.clone(), number(q.reset));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_a_fixed_window_per_key() {
        let w = Window::default();
        assert_eq!(w.admit(2, 100, 5), Verdict::Admitted { remaining: 1, reset: 100 });
        assert_eq!(w.admit(2, 100, 30), Verdict::Admitted { remaining: 0, reset: 75 });
        assert_eq!(w.admit(2, 100, 40), Verdict::Refused { reset: 65 });
        assert_eq!(w.admit(2, 100, 105), Verdict::Admitted { remaining: 1, reset: 100 }, "a new window");
        // The clock wraps: elapsed time is still right.
        let w = Window::default();
        assert_eq!(w.admit(1, 100, u32::MAX - 10), Verdict::Admitted { remaining: 0, reset: 100 });
        assert_eq!(w.admit(1, 100, 20), Verdict::Refused { reset: 69 });
        assert_eq!(seconds(1), 1);
        assert_eq!(seconds(100), 1);
        assert_eq!(seconds(101), 2);
    }
}
