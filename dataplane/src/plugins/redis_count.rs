//! limit-count's Redis policies without a Redis round trip per request: each data plane admits requests from a
//! local allowance that it claims from Redis in batches.
//!
//! Windows are aligned to the wall clock (window `n` covers `[n·w, (n+1)·w)` seconds since the Unix epoch), so
//! every data plane counts the same window under the same key, `sluice:limit-count:<owner>:<n>:<key>`.
//! A claim is one Lua script per key, batched with the other keys waiting into one pipeline: it reads the window's
//! count, grants `min(want, ⌈(limit − count) / data planes⌉)` and adds the grant to the count, so an allowance is
//! reserved before any request spends it. Hence the bound: **the data planes together never admit more than the
//! limit in a window** while Redis answers; what they may admit less is what was claimed and not spent when the
//! window ends (each claim is sized to about `horizon` of the key's recent demand, so at most that much per data
//! plane, and nothing at steady overload, when every claim is spent).
//!
//! The request path reads and updates one atomic word per key (the window, the allowance, whether the window is
//! full, whether a claim is queued). When the allowance falls to half, the key is queued for the next claim and the
//! request goes on; only a request that finds no allowance at all waits for the claim (as a new key's first
//! request in a window does), at most the target's timeout.
//!
//! Redis down or slow (see `redis.rs`): the limit counts locally, the cluster-aware way (the limit divided by the
//! live data planes), or lets requests pass with `allow_degradation`; `sluice_limit_redis_fallback_total` counts
//! those requests, and counting returns to Redis once it answers again.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;
use redis::Value;
use tokio::sync::{Notify, mpsc, watch};
use tracing::debug;

use super::limit::{Idle, Table};
use super::limit_count::{Decision, Local, Quota};
use crate::membership::ClusterSize;
use crate::redis::RedisLink;

/// The claim: `KEYS[1]` the window's counter; `ARGV` want, limit, data planes, the counter's lifetime (ms).
/// Returns the count after the claim and the grant (0: the window is full).
const CLAIM: &str = "local used = tonumber(redis.call('GET', KEYS[1]) or '0') \
local left = tonumber(ARGV[2]) - used \
if left <= 0 then return {used, 0} end \
local grant = math.min(tonumber(ARGV[1]), math.ceil(left / tonumber(ARGV[3]))) \
used = redis.call('INCRBY', KEYS[1], grant) \
if used == grant then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end \
return {used, grant}";

/// Keys claimed in one pipeline.
const BATCH: usize = 512;
/// The largest allowance a slot holds.
const MAX_GRANT: u32 = (1 << 24) - 1;
/// The table clock's step.
const TICK_MS: u32 = 10;

/// One key's word: the window (its number modulo 2²², bits 42–63), the allowance left (bits 0–23), the level at
/// which to claim more (bits 24–39), the window is full (bit 40), a claim is queued (bit 41).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word {
    window: u32,
    granted: u32,
    refill_at: u32,
    full: bool,
    queued: bool,
}

const WINDOW_BITS: u32 = 22;

impl Word {
    fn unpack(v: u64) -> Word {
        Word {
            granted: (v & u64::from(MAX_GRANT)) as u32,
            refill_at: ((v >> 24) & 0xFFFF) as u32,
            full: v & (1 << 40) != 0,
            queued: v & (1 << 41) != 0,
            window: (v >> 42) as u32,
        }
    }

    fn pack(self) -> u64 {
        u64::from(self.granted.min(MAX_GRANT))
            | (u64::from(self.refill_at.min(0xFFFF)) << 24)
            | (u64::from(self.full) << 40)
            | (u64::from(self.queued) << 41)
            | (u64::from(self.window & ((1 << WINDOW_BITS) - 1)) << 42)
    }

    fn fresh(window: u32) -> Word {
        Word { window: window & ((1 << WINDOW_BITS) - 1), granted: 0, refill_at: 0, full: false, queued: false }
    }
}

/// What one request takes from its key's word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// Admitted from the allowance, `left` remaining; `queue`: this request queued the next claim.
    Admitted { left: u32, queue: bool },
    /// Redis said the window is full.
    Full,
    /// No allowance: wait for a claim (`queue`: this request queued it).
    Wait { queue: bool },
}

/// One key's state.
#[derive(Debug, Default)]
pub struct Slot {
    word: AtomicU64,
    /// Requests seen since the last claim (sizes the next one).
    demand: AtomicU32,
    /// Redis's count of the window after the last claim (for `X-RateLimit-Remaining`).
    used: AtomicU32,
    /// When the last claim was applied (table ticks; 0: never).
    claimed_at: AtomicU32,
}

impl Slot {
    fn take(&self, window: u32) -> Take {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let mut w = Word::unpack(current);
            if w.window != window & ((1 << WINDOW_BITS) - 1) {
                w = Word::fresh(window);
            }
            let take = if w.granted > 0 {
                w.granted -= 1;
                let queue = !w.queued && w.granted <= w.refill_at && w.refill_at > 0;
                w.queued |= queue;
                Take::Admitted { left: w.granted, queue }
            } else if w.full {
                return Take::Full;
            } else {
                let queue = !w.queued;
                w.queued = true;
                Take::Wait { queue }
            };
            match self.word.compare_exchange_weak(current, w.pack(), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return take,
                Err(seen) => current = seen,
            }
        }
    }

    /// Applies a claim of window `window`: adds `grant` (0: the window is full) and clears the queued mark. A word
    /// that has moved on to another window keeps its state.
    fn apply(&self, window: u32, grant: u32) {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let mut w = Word::unpack(current);
            if w.window != window & ((1 << WINDOW_BITS) - 1) {
                return;
            }
            w.granted = w.granted.saturating_add(grant).min(MAX_GRANT);
            w.full = grant == 0;
            w.refill_at = if w.granted >= 4 { w.granted / 2 } else { 0 };
            w.queued = false;
            match self.word.compare_exchange_weak(current, w.pack(), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// Clears the queued mark after a claim that got no answer, so that a later request queues again.
    fn unqueue(&self) {
        let _ = self.word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(v & !(1 << 41)));
    }
}

impl Idle for Slot {
    fn idle(&self, now: u32, span: u32) -> bool {
        let queued = Word::unpack(self.word.load(Ordering::Relaxed)).queued;
        !queued && now.wrapping_sub(self.claimed_at.load(Ordering::Relaxed)) >= span
    }
}

/// A Redis-backed limit-count: its local allowances, the claims' queue and the fallback.
#[derive(Debug)]
pub struct RedisCount {
    slots: Table<Slot>,
    /// `sluice:limit-count:<owner>:`.
    prefix: Box<[u8]>,
    count: u64,
    window_ms: u64,
    /// How much recent demand a claim asks for, in milliseconds.
    horizon_ms: f64,
    queue: mpsc::UnboundedSender<Box<[u8]>>,
    wake: Notify,
    /// Counts finished claim batches; waiting requests watch it.
    claimed: watch::Sender<u64>,
    link: Arc<RedisLink>,
    cluster: ClusterSize,
    /// The cluster-aware local limit used while Redis is unreachable.
    local: Local,
    allow_degradation: bool,
    fallback: IntCounter,
    /// Waiting requests give up (and count locally) after this.
    wait: Duration,
    /// The queue's other end, taken by the claiming task.
    pending: Mutex<Option<mpsc::UnboundedReceiver<Box<[u8]>>>>,
}

/// How a Redis-backed limit-count is set up.
#[derive(Debug)]
pub struct Setup {
    /// Whose counters (`route/r1`, `group/g`); part of every Redis key.
    pub owner: String,
    /// The limit per window.
    pub count: u64,
    /// The window, in seconds.
    pub window_secs: u64,
    /// The connection.
    pub link: Arc<RedisLink>,
    /// The live data planes.
    pub cluster: ClusterSize,
    /// The fallback.
    pub local: Local,
    /// Let requests pass while Redis is unreachable.
    pub allow_degradation: bool,
    /// `sluice_limit_redis_fallback_total`.
    pub fallback: IntCounter,
    /// The target's timeout.
    pub timeout: Duration,
}

/// What a request gets from a Redis-backed limit.
pub enum Verdict {
    /// Decided now.
    Now(Decision),
    /// Decided once a claim is answered.
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Decision> + Send>>),
}

impl RedisCount {
    /// A Redis-backed count, its claiming task started on the current runtime (if any).
    pub fn start(setup: Setup) -> Arc<RedisCount> {
        let window_ms = setup.window_secs.saturating_mul(1000).max(1);
        let span = u32::try_from(window_ms.saturating_mul(2) / u64::from(TICK_MS)).unwrap_or(u32::MAX);
        let (queue, rx) = mpsc::unbounded_channel();
        let count = Arc::new(RedisCount {
            slots: Table::new(TICK_MS, span),
            prefix: format!("sluice:limit-count:{}:", setup.owner).into_bytes().into(),
            count: setup.count,
            window_ms,
            // A fiftieth of the window, between 20 ms and a second: small enough that little is claimed and not
            // spent, large enough that a busy key claims a few times a second at most.
            horizon_ms: (window_ms as f64 / 50.0).clamp(20.0, 1000.0),
            queue,
            wake: Notify::new(),
            claimed: watch::channel(0).0,
            link: setup.link,
            cluster: setup.cluster,
            local: setup.local,
            allow_degradation: setup.allow_degradation,
            fallback: setup.fallback,
            wait: setup.timeout,
            pending: Mutex::new(Some(rx)),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let rx = count.pending.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(rx) = rx {
                handle.spawn(claim(Arc::downgrade(&count), rx));
            }
        }
        count
    }

    /// The current window's number and the milliseconds until it ends.
    fn window_now(&self) -> (u64, u64) {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        (ms / self.window_ms, self.window_ms - ms % self.window_ms)
    }

    fn quota(&self, slot: &Slot, left: u32, reset_ms: u64) -> Quota {
        let used = u64::from(slot.used.load(Ordering::Relaxed));
        Quota {
            limit: self.count,
            remaining: self.count.saturating_sub(used) + u64::from(left),
            reset: reset_ms.div_ceil(1000),
        }
    }

    /// Decides on one request with key `key`: from the local allowance, or once a claim is answered.
    pub fn admit(self: &Arc<Self>, key: &[u8], started: Instant) -> Verdict {
        if !self.link.is_up() {
            return Verdict::Now(self.without_redis(key, started));
        }
        let (window, reset_ms) = self.window_now();
        let now = self.slots.ticks(started);
        let (take, quota) = self.slots.with(key, now, |slot| {
            slot.demand.fetch_add(1, Ordering::Relaxed);
            let take = slot.take(window as u32);
            let quota = match take {
                Take::Admitted { left, .. } => Some(self.quota(slot, left, reset_ms)),
                Take::Full => Some(Quota { limit: self.count, remaining: 0, reset: reset_ms.div_ceil(1000) }),
                Take::Wait { .. } => None,
            };
            (take, quota)
        });
        match (take, quota) {
            (Take::Admitted { queue, .. }, Some(q)) => {
                if queue {
                    self.enqueue(key);
                }
                Verdict::Now(Decision::Admitted(q))
            }
            (Take::Full, Some(q)) => Verdict::Now(Decision::Refused(q)),
            (_, _) => {
                // Subscribed before queueing, so the claim's answer cannot be missed.
                let mut claimed = self.claimed.subscribe();
                if matches!(take, Take::Wait { queue: true }) {
                    self.enqueue(key);
                }
                let me = self.clone();
                let key: Box<[u8]> = key.into();
                Verdict::Later(Box::pin(async move {
                    let deadline = tokio::time::Instant::now() + me.wait;
                    while tokio::time::timeout_at(deadline, claimed.changed()).await.is_ok_and(|r| r.is_ok()) {
                        if !me.link.is_up() {
                            break;
                        }
                        let (window, reset_ms) = me.window_now();
                        let now = me.slots.ticks(Instant::now());
                        let decided = me.slots.with(&key, now, |slot| match slot.take(window as u32) {
                            Take::Admitted { left, queue } => {
                                Some((Decision::Admitted(me.quota(slot, left, reset_ms)), queue))
                            }
                            Take::Full => Some((
                                Decision::Refused(Quota {
                                    limit: me.count,
                                    remaining: 0,
                                    reset: reset_ms.div_ceil(1000),
                                }),
                                false,
                            )),
                            Take::Wait { queue } => {
                                if queue {
                                    me.enqueue(&key);
                                }
                                None
                            }
                        });
                        if let Some((decision, queue)) = decided {
                            if queue {
                                me.enqueue(&key);
                            }
                            return decision;
                        }
                    }
                    me.without_redis(&key, Instant::now())
                }))
            }
        }
    }

    /// The decision while Redis cannot be asked.
    fn without_redis(&self, key: &[u8], started: Instant) -> Decision {
        self.fallback.inc();
        if self.allow_degradation { Decision::Pass } else { self.local.decide(key, started) }
    }

    fn enqueue(&self, key: &[u8]) {
        // The receiver lives as long as the task, which outlives every instance but the last.
        let _ = self.queue.send(key.into());
        self.wake.notify_one();
    }

    /// The Redis key of `key`'s counter in window `window`.
    fn redis_key(&self, window: u64, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len() + 21);
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(window.to_string().as_bytes());
        k.push(b':');
        k.extend_from_slice(key);
        k
    }

    /// Claims allowances for `keys` in one pipeline and applies the answers.
    async fn claim_batch(&self, keys: &[Box<[u8]>]) {
        let (window, _) = self.window_now();
        let now = self.slots.ticks(Instant::now());
        let planes = self.cluster.get() as u64;
        let ttl_ms = self.window_ms + 2000;
        let mut pipe = redis::pipe();
        for key in keys {
            let want = self.slots.with(key, now, |slot| {
                let demand = f64::from(slot.demand.swap(0, Ordering::Relaxed).max(1));
                let last = slot.claimed_at.load(Ordering::Relaxed);
                let since_ms = if last == 0 {
                    self.horizon_ms
                } else {
                    (f64::from(now.wrapping_sub(last)) * f64::from(TICK_MS)).max(f64::from(TICK_MS))
                };
                (demand / since_ms * self.horizon_ms).ceil().clamp(1.0, f64::from(MAX_GRANT)) as u64
            });
            pipe.cmd("EVAL")
                .arg(CLAIM)
                .arg(1)
                .arg(self.redis_key(window, key))
                .arg(want)
                .arg(self.count)
                .arg(planes)
                .arg(ttl_ms);
        }
        match self.link.run(pipe).await {
            Ok(values) => {
                for (key, value) in keys.iter().zip(values) {
                    let (used, grant) = answer(&value).unwrap_or((self.count, 0));
                    self.slots.with(key, now, |slot| {
                        slot.used.store(u32::try_from(used).unwrap_or(u32::MAX), Ordering::Relaxed);
                        slot.claimed_at.store(now, Ordering::Relaxed);
                        slot.apply(window as u32, u32::try_from(grant).unwrap_or(MAX_GRANT));
                    });
                }
            }
            Err(e) => {
                debug!(target = %self.link.label(), error = %e, keys = keys.len(), "limit-count: claim failed");
                for key in keys {
                    self.slots.with(key, now, Slot::unqueue);
                }
            }
        }
    }
}

/// `{used, grant}` from the script's answer.
fn answer(value: &Value) -> Option<(u64, u64)> {
    let Value::Array(items) = value else { return None };
    let int = |v: &Value| match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        _ => None,
    };
    Some((int(items.first()?)?, int(items.get(1)?)?))
}

/// The claiming task of one count: waits for queued keys, claims them in batches, wakes the waiting requests.
/// Ends when the count is gone.
async fn claim(count: Weak<RedisCount>, mut queue: mpsc::UnboundedReceiver<Box<[u8]>>) {
    let mut keys = Vec::with_capacity(BATCH);
    loop {
        let Some(me) = count.upgrade() else { return };
        if queue.is_empty() {
            // Woken by a queued key; the periodic wake only notices that the count is gone.
            let woken = tokio::time::timeout(Duration::from_secs(1), me.wake.notified()).await;
            if woken.is_err() {
                continue;
            }
        }
        while keys.len() < BATCH {
            match queue.try_recv() {
                Ok(key) => keys.push(key),
                Err(_) => break,
            }
        }
        keys.sort_unstable();
        keys.dedup();
        if !keys.is_empty() {
            me.claim_batch(&keys).await;
            keys.clear();
            me.claimed.send_modify(|n| *n += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spends_the_allowance_and_queues_claims() {
        let slot = Slot::default();
        assert_eq!(slot.take(7), Take::Wait { queue: true }, "a new key waits for its first claim");
        assert_eq!(slot.take(7), Take::Wait { queue: false }, "queued once");
        slot.apply(7, 8);
        let w = Word::unpack(slot.word.load(Ordering::Relaxed));
        assert_eq!((w.granted, w.refill_at, w.queued, w.full), (8, 4, false, false));
        for left in (5..8).rev() {
            assert_eq!(slot.take(7), Take::Admitted { left, queue: false });
        }
        assert_eq!(slot.take(7), Take::Admitted { left: 4, queue: true }, "half spent: the next claim is queued");
        assert_eq!(slot.take(7), Take::Admitted { left: 3, queue: false });
        slot.apply(7, 0);
        for left in (0..3).rev() {
            assert_eq!(slot.take(7), Take::Admitted { left, queue: false }, "what was granted is still spent");
        }
        assert_eq!(slot.take(7), Take::Full);
        assert_eq!(slot.take(8), Take::Wait { queue: true }, "a new window starts afresh");
        slot.apply(7, 5);
        assert_eq!(Word::unpack(slot.word.load(Ordering::Relaxed)).granted, 0, "a late claim of a past window");
        slot.unqueue();
        assert_eq!(slot.take(8), Take::Wait { queue: true });
        let w =
            Word { window: (1 << WINDOW_BITS) - 1, granted: MAX_GRANT, refill_at: 0xFFFF, full: true, queued: true };
        assert_eq!(Word::unpack(w.pack()), w);
    }

    #[test]
    fn reads_the_claims_answer() {
        assert_eq!(answer(&Value::Array(vec![Value::Int(12), Value::Int(3)])), Some((12, 3)));
        assert_eq!(answer(&Value::Int(1)), None);
    }
}
