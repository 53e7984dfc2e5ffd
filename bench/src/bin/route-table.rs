//! `route-table`: the routing engine at scale, without sockets. Builds N routes (default 100,000) from cold as the
//! data plane does on its first sync (decode, check and compile on every core, then index and publish), then
//! applies single-route changes and times matches, and reports the resident memory the table added.
//!
//! Usage: `route-table [ROUTES]` (build with `--release`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method};
use sluice_bench::{KINDS, PREFIX, Summary, objects, request_for, route, route_key, rss_kib, tenant_for};
use sluice_dataplane::config::{RawObject, State, Target, Update};
use sluice_dataplane::router::{RequestInfo, Router};
use sluice_model::Keys;

const UPDATES: usize = 2_000;
const MATCHES: usize = 400_000;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let input = objects(n, "127.0.0.1:1980");
    let rss_before = rss_kib();

    let started = Instant::now();
    let mut state = State::new(Keys::new(PREFIX));
    let rejected = std::cell::Cell::new(0u32);
    let on_reject = |_| rejected.set(rejected.get() + 1);
    state.apply(Update::Reset(input), &on_reject);
    let compiled = state.publish();
    let build = started.elapsed();
    assert_eq!(compiled.router.len(), n, "every generated route is served");
    let rss_after = rss_kib();
    drop(compiled);

    // One changed route, applied and published, as the compile loop does for a burst of one.
    let mut updates = Vec::with_capacity(UPDATES);
    for u in 0..UPDATES {
        let i = (u * 7919) % n;
        let object = RawObject {
            key: route_key(i),
            value: route(i, 1 + u as u64).to_string().into_bytes(),
            revision: 1_000_000 + u as i64,
        };
        let t = Instant::now();
        state.apply(Update::Put(object), &on_reject);
        let snapshot = state.publish();
        updates.push(t.elapsed());
        black_box(snapshot);
    }
    let update = Summary::of(&mut updates);

    // Matches over a rotating sample of requests of every kind.
    let compiled = state.publish();
    let sample: Vec<(String, String, HeaderMap)> = (0..4096)
        .map(|k| {
            let i = (k * 104_729) % n;
            let (host, path) = request_for(i);
            let mut headers = HeaderMap::new();
            headers.insert("x-tenant", HeaderValue::try_from(tenant_for(i)).unwrap_or(HeaderValue::from_static("")));
            (host, path, headers)
        })
        .collect();
    let router = &compiled.router;
    let matched = time_matches(router, &sample, true);
    let cold = time_matches(router, &sample, false);
    let hot = time_matches(router, &sample[..8], true);
    let by_kind: Vec<(&str, Summary)> = KINDS
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let only: Vec<_> = sample
                .iter()
                .enumerate()
                .filter(|(j, _)| (j * 104_729) % n % KINDS.len() == k)
                .map(|(_, s)| s.clone())
                .collect();
            (*name, time_matches(router, &only, true))
        })
        .collect();

    let per_route = (rss_after.saturating_sub(rss_before) * 1024) / n.max(1) as u64;
    println!("routes                      {n} (static, prefix, param, host, vars in equal parts)");
    println!("rejected                    {}", rejected.get());
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    println!("cold build (decode+index)   {:>10.1} ms   (decoding on {cores} threads)", ms(build));
    println!(
        "one route update  p50       {:>10.3} ms   p99 {:.3} ms   max {:.3} ms",
        ms(update.p50),
        ms(update.p99),
        ms(update.max)
    );
    println!(
        "match             p50       {:>10.0} ns   p99 {:.0} ns (per lookup, batches of 64 just-read requests)",
        ns(matched.p50),
        ns(matched.p99)
    );
    println!("match, requests not in cache p50 {:>5.0} ns   p99 {:.0} ns", ns(cold.p50), ns(cold.p99));
    println!("match, 8 hot requests p50   {:>10.0} ns", ns(hot.p50));
    for (kind, s) in by_kind {
        println!("match {kind:<7} p50          {:>10.0} ns   p99 {:.0} ns", ns(s.p50), ns(s.p99));
    }
    println!(
        "memory (RSS delta)          {:>10} bytes per route ({} MiB total)",
        per_route,
        rss_after.saturating_sub(rss_before) / 1024
    );
}

/// Times lookups of `sample` in rotation, in batches of 64 (one lookup is shorter than the clock's own overhead).
///
/// With `just_read`, each batch's requests are read byte by byte before the clock starts, as the proxy's parser
/// has just done when it asks the router; without it, the sample's scattered strings and header maps are
/// fetched from memory inside the timed part, which adds their cache misses to the router's.
fn time_matches(router: &Router<Target>, sample: &[(String, String, HeaderMap)], just_read: bool) -> Summary {
    let mut matches = Vec::with_capacity(MATCHES / 64);
    let mut misses = 0usize;
    let method = Method::GET;
    for b in 0..MATCHES / 64 {
        if just_read {
            let mut sum = 0u32;
            for k in 0..64 {
                let (host, path, headers) = &sample[(b * 64 + k) % sample.len()];
                let bytes = host
                    .bytes()
                    .chain(path.bytes())
                    .chain(headers.iter().flat_map(|(n, v)| n.as_str().bytes().chain(v.as_bytes().iter().copied())));
                sum = bytes.fold(sum, |a, x| a.wrapping_add(u32::from(x)));
            }
            black_box(sum);
        }
        let t = Instant::now();
        for k in 0..64 {
            let (host, path, headers) = &sample[(b * 64 + k) % sample.len()];
            let info = RequestInfo {
                method: &method,
                host,
                path,
                query: None,
                headers,
                remote_addr: std::net::IpAddr::from([127, 0, 0, 1]),
                tls: false,
            };
            misses += usize::from(black_box(router.find(&info)).is_none());
        }
        matches.push(t.elapsed() / 64);
    }
    assert_eq!(misses, 0, "every sampled request matches");
    Summary::of(&mut matches)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}
