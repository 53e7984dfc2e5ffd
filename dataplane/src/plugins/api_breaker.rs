//! `api-breaker`: a circuit breaker per route, in three states. **Closed**: requests pass and their outcomes are
//! counted; `unhealthy.failures` failures in a row (APISIX's rule), or with `failure_rate` a share of failures
//! over the window once it holds `min_requests`, trip it. **Open**: every request is answered with
//! `break_response_code` without reaching a node, for 2, 4, 8… seconds (doubling with each trip in a row, at most
//! `max_breaker_sec`, as APISIX times it). **Half open**: then up to `half_open_requests` probes at a time go through
//! and the rest are still refused; a failed probe opens the breaker again, `healthy.successes` successful ones
//! close it.
//!
//! Outcomes are the statuses of requests that reached the upstream stage (a node's answer, or the data plane's 502
//! and 504 for a node that failed); a request refused by a plugin, the breaker included, does not count. All state
//! is atomics: the request path takes no lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode, request};
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, api_breaker as model};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, Reply, clone_reply};

/// api-breaker's place in the registry (APISIX priority 1005).
pub(super) const FACTORY: Factory =
    Factory { name: model::ApiBreaker::NAME, priority: 1005, auth: false, prefer_route: false, build };

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::ApiBreaker(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    Ok(Arc::new(ApiBreaker::new(c)?))
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// Tripping on a share of failures.
#[derive(Debug)]
struct Rate {
    threshold: f64,
    min_requests: u32,
}

/// One second of the failure-rate window: the second (since the breaker's epoch) in the high half of each word,
/// requests and failures in that second in the low halves.
#[derive(Debug, Default)]
struct Bucket {
    requests: AtomicU64,
    failures: AtomicU64,
}

/// Adds one to a stamped counter, starting it again when its stamp is not `second`.
fn bump(word: &AtomicU64, second: u32) {
    let mut current = word.load(Ordering::Relaxed);
    loop {
        let next = if (current >> 32) as u32 == second { current + 1 } else { (u64::from(second) << 32) | 1 };
        match word.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => current = seen,
        }
    }
}

/// The count of a stamped counter if its stamp is within `window` seconds before `second`.
fn live(word: &AtomicU64, second: u32, window: u32) -> u64 {
    let current = word.load(Ordering::Relaxed);
    if second.wrapping_sub((current >> 32) as u32) < window { current & 0xffff_ffff } else { 0 }
}

/// The breaker's shared state.
#[derive(Debug)]
struct Breaker {
    epoch: Instant,
    state: AtomicU8,
    /// While open: until when (ms since the epoch).
    open_until: AtomicU64,
    /// Trips in a row (without closing in between): the open time doubles with each.
    trips: AtomicU32,
    /// Failures in a row while closed.
    failures: AtomicU32,
    /// Successful probes while half open.
    successes: AtomicU32,
    /// Probes in flight while half open.
    probes: AtomicU32,
    /// The failure-rate window, one bucket per second (empty without `failure_rate`).
    window: Vec<Bucket>,
}

/// Marks a request let through as a half-open probe.
#[derive(Debug, Clone, Copy)]
struct Probe;

#[derive(Debug)]
struct ApiBreaker {
    refusal: Reply,
    unhealthy: Vec<u16>,
    failures: u32,
    healthy: Vec<u16>,
    successes: u32,
    max_open_ms: u64,
    rate: Option<Rate>,
    half_open: u32,
    breaker: Breaker,
}

/// What a finished request says about the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Failure,
    Success,
    /// A status in neither list.
    Neither,
}

impl ApiBreaker {
    fn new(c: &model::ApiBreaker) -> Result<ApiBreaker, String> {
        let mut refusal = Response::new(Bytes::from(c.break_response_body.clone().unwrap_or_default()));
        *refusal.status_mut() = StatusCode::from_u16(c.break_response_code).map_err(|e| e.to_string())?;
        for h in &c.break_response_headers {
            let name = HeaderName::from_bytes(h.key.as_bytes()).map_err(|e| e.to_string())?;
            refusal.headers_mut().append(name, HeaderValue::from_str(&h.value).map_err(|e| e.to_string())?);
        }
        let window = c.failure_rate.as_ref().map_or(0, |r| r.window as usize);
        Ok(ApiBreaker {
            refusal,
            unhealthy: c.unhealthy.http_statuses.clone(),
            failures: c.unhealthy.failures,
            healthy: c.healthy.http_statuses.clone(),
            successes: c.healthy.successes,
            max_open_ms: c.max_breaker_sec.saturating_mul(1000),
            rate: c.failure_rate.as_ref().map(|r| Rate { threshold: r.threshold, min_requests: r.min_requests }),
            half_open: c.half_open_requests,
            breaker: Breaker {
                epoch: Instant::now(),
                state: AtomicU8::new(CLOSED),
                open_until: AtomicU64::new(0),
                trips: AtomicU32::new(0),
                failures: AtomicU32::new(0),
                successes: AtomicU32::new(0),
                probes: AtomicU32::new(0),
                window: (0..window).map(|_| Bucket::default()).collect(),
            },
        })
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.breaker.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes a probe slot, if one is free.
    fn take_probe(&self) -> bool {
        let probes = &self.breaker.probes;
        let mut current = probes.load(Ordering::Acquire);
        while current < self.half_open {
            match probes.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
        false
    }

    /// Opens the breaker from state `from` (closed or half open), for twice as long as the last time.
    fn trip(&self, from: u8, now_ms: u64) {
        let b = &self.breaker;
        let trips = b.trips.load(Ordering::Acquire).saturating_add(1);
        let open_ms = 1000u64.checked_shl(trips.min(40)).unwrap_or(u64::MAX).min(self.max_open_ms);
        b.open_until.store(now_ms.saturating_add(open_ms), Ordering::Release);
        if b.state.compare_exchange(from, OPEN, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            b.trips.store(trips, Ordering::Release);
            b.failures.store(0, Ordering::Release);
        }
    }

    /// Closes the breaker after enough successful probes.
    fn close(&self) {
        let b = &self.breaker;
        if b.state.compare_exchange(HALF_OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            b.trips.store(0, Ordering::Release);
            b.failures.store(0, Ordering::Release);
            for bucket in &b.window {
                bucket.requests.store(0, Ordering::Relaxed);
                bucket.failures.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Whether the failure rate over the window trips the breaker (counting this second's outcome, already added).
    fn rate_trips(&self, second: u32) -> bool {
        let Some(rate) = &self.rate else { return false };
        let window = self.breaker.window.len() as u32;
        let (requests, failures) =
            self.breaker.window.iter().fold((0, 0), |(r, f), b| {
                (r + live(&b.requests, second, window), f + live(&b.failures, second, window))
            });
        requests >= u64::from(rate.min_requests) && failures as f64 >= rate.threshold * requests as f64
    }

    fn outcome(&self, status: StatusCode) -> Outcome {
        let code = status.as_u16();
        if self.unhealthy.contains(&code) {
            Outcome::Failure
        } else if self.healthy.contains(&code) {
            Outcome::Success
        } else {
            Outcome::Neither
        }
    }

    fn record_closed(&self, outcome: Outcome, now_ms: u64) {
        let b = &self.breaker;
        let second = (now_ms / 1000) as u32;
        if !b.window.is_empty() {
            let bucket = &b.window[second as usize % b.window.len()];
            bump(&bucket.requests, second);
            if outcome == Outcome::Failure {
                bump(&bucket.failures, second);
            }
        }
        match outcome {
            Outcome::Failure => {
                let in_a_row = b.failures.fetch_add(1, Ordering::AcqRel) + 1;
                if in_a_row >= self.failures || self.rate_trips(second) {
                    self.trip(CLOSED, now_ms);
                }
            }
            Outcome::Success => b.failures.store(0, Ordering::Release),
            Outcome::Neither => {}
        }
    }

    fn record_probe(&self, outcome: Outcome, now_ms: u64) {
        match outcome {
            Outcome::Failure => self.trip(HALF_OPEN, now_ms),
            Outcome::Success => {
                if self.breaker.successes.fetch_add(1, Ordering::AcqRel) + 1 >= self.successes {
                    self.close();
                }
            }
            Outcome::Neither => {}
        }
    }
}

impl Plugin for ApiBreaker {
    fn phases(&self) -> Phases {
        Phases::ACCESS | Phases::LOG
    }

    fn access(&self, ctx: &mut Ctx, _: &mut request::Parts) -> Flow {
        let b = &self.breaker;
        match b.state.load(Ordering::Acquire) {
            CLOSED => return Flow::Continue,
            OPEN => {
                if self.ms(ctx.started) < b.open_until.load(Ordering::Acquire) {
                    return Flow::Respond(clone_reply(&self.refusal));
                }
                // The open time is over: the first request to see it half-opens the breaker.
                if b.state.compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    b.successes.store(0, Ordering::Release);
                    b.probes.store(0, Ordering::Release);
                }
            }
            _ => {}
        }
        if b.state.load(Ordering::Acquire) == HALF_OPEN && self.take_probe() {
            ctx.extensions.insert(Probe);
            return Flow::Continue;
        }
        Flow::Respond(clone_reply(&self.refusal))
    }

    fn log(&self, ctx: &Ctx) {
        let probe = ctx.extensions.get::<Probe>().is_some();
        if probe {
            // Saturating: a probe of an earlier half-open period must not wrap the count of this one.
            let _ = self.breaker.probes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| p.checked_sub(1));
        }
        // Only requests that reached the upstream stage say something about it.
        let (Some(status), Some(_)) = (ctx.status, &ctx.upstream) else { return };
        let outcome = self.outcome(status);
        let now_ms = self.ms(Instant::now());
        match self.breaker.state.load(Ordering::Acquire) {
            CLOSED => self.record_closed(outcome, now_ms),
            HALF_OPEN if probe => self.record_probe(outcome, now_ms),
            // Requests let in before the breaker opened, finishing late, and non-probes: no say.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(rate: Option<(f64, u32, u32)>) -> ApiBreaker {
        let mut conf = serde_json::json!({"break_response_code": 502, "unhealthy": {"failures": 2},
            "healthy": {"successes": 2}, "max_breaker_sec": 5, "half_open_requests": 1});
        if let Some((threshold, window, min_requests)) = rate {
            conf["failure_rate"] = serde_json::json!({"threshold": threshold, "window": window,
                "min_requests": min_requests});
            conf["unhealthy"]["failures"] = serde_json::json!(1000);
        }
        let plugins = sluice_model::plugins::decode_map(serde_json::json!({"api-breaker": conf})).unwrap();
        let Some(PluginConf::ApiBreaker(c)) = plugins.iter().next().map(|p| &p.conf) else { panic!() };
        ApiBreaker::new(c).unwrap()
    }

    fn state(b: &ApiBreaker) -> u8 {
        b.breaker.state.load(Ordering::Acquire)
    }

    #[test]
    fn trips_after_failures_in_a_row_and_doubles_the_open_time() {
        let b = breaker(None);
        b.record_closed(Outcome::Failure, 0);
        b.record_closed(Outcome::Success, 10);
        b.record_closed(Outcome::Failure, 20);
        assert_eq!(state(&b), CLOSED, "a success in between resets the run");
        b.record_closed(Outcome::Failure, 30);
        assert_eq!(state(&b), OPEN);
        assert_eq!(b.breaker.open_until.load(Ordering::Acquire), 2030, "2 s the first time");
        b.breaker.state.store(HALF_OPEN, Ordering::Release);
        b.record_probe(Outcome::Failure, 3000);
        assert_eq!((state(&b), b.breaker.open_until.load(Ordering::Acquire)), (OPEN, 7000), "then 4 s");
        b.breaker.state.store(HALF_OPEN, Ordering::Release);
        b.record_probe(Outcome::Failure, 8000);
        assert_eq!(b.breaker.open_until.load(Ordering::Acquire), 13_000, "at most max_breaker_sec");
        b.breaker.state.store(HALF_OPEN, Ordering::Release);
        b.record_probe(Outcome::Success, 14_000);
        assert_eq!(state(&b), HALF_OPEN);
        b.record_probe(Outcome::Success, 14_100);
        assert_eq!((state(&b), b.breaker.trips.load(Ordering::Acquire)), (CLOSED, 0));
    }

    #[test]
    fn trips_on_the_failure_rate_once_the_window_holds_enough_requests() {
        let b = breaker(Some((0.5, 10, 4)));
        b.record_closed(Outcome::Failure, 0);
        b.record_closed(Outcome::Failure, 100);
        b.record_closed(Outcome::Success, 200);
        assert_eq!(state(&b), CLOSED, "three requests are fewer than min_requests");
        b.record_closed(Outcome::Success, 300);
        assert_eq!(state(&b), CLOSED, "2 of 4 failed, but the last outcome was a success");
        b.record_closed(Outcome::Failure, 400);
        assert_eq!(state(&b), OPEN, "3 of 5 failed");
        // Outcomes older than the window no longer count.
        let b = breaker(Some((0.5, 2, 2)));
        b.record_closed(Outcome::Failure, 0);
        b.record_closed(Outcome::Success, 5000);
        b.record_closed(Outcome::Success, 5100);
        b.record_closed(Outcome::Failure, 5200);
        assert_eq!(state(&b), CLOSED, "the failure at 0 s has left the 2 s window: 1 of 3 failed");
    }
}
