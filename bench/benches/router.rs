//! Criterion benchmarks of the routing engine at 100,000 routes: cold build, one update, and one match.

// `criterion_group!` generates an undocumented `pub fn benches`.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use sluice_bench::{PREFIX, objects, request_for, route, route_key};
use sluice_dataplane::config::{RawObject, State, Update};
use sluice_dataplane::router::RequestInfo;
use sluice_model::Keys;

const ROUTES: usize = 100_000;

fn built() -> State {
    let mut state = State::new(Keys::new(PREFIX));
    state.apply(Update::Reset(objects(ROUTES, "127.0.0.1:1980")), &|_| {});
    state.publish();
    state
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("router");
    g.sample_size(10);
    g.bench_function("cold_build_100k", |b| {
        b.iter_batched(
            || objects(ROUTES, "127.0.0.1:1980"),
            |input| {
                let mut state = State::new(Keys::new(PREFIX));
                state.apply(Update::Reset(input), &|_| {});
                black_box(state.publish());
                state
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn update(c: &mut Criterion) {
    let mut state = built();
    let mut u = 0u64;
    c.bench_function("router/one_update_at_100k", |b| {
        b.iter(|| {
            u += 1;
            let i = (u as usize * 7919) % ROUTES;
            let object = RawObject {
                key: route_key(i),
                value: route(i, u).to_string().into_bytes(),
                revision: 1_000_000 + u as i64,
            };
            state.apply(Update::Put(object), &|_| {});
            black_box(state.publish());
        })
    });
}

fn matching(c: &mut Criterion) {
    let compiled = built().publish();
    let sample: Vec<(String, String)> = (0..1024).map(|k| request_for((k * 104_729) % ROUTES)).collect();
    let headers = HeaderMap::new();
    let method = Method::GET;
    let mut k = 0usize;
    c.bench_function("router/match_at_100k", |b| {
        b.iter(|| {
            k = (k + 1) % sample.len();
            let (host, path) = &sample[k];
            let info = RequestInfo {
                method: &method,
                host,
                path,
                query: None,
                headers: &headers,
                remote_addr: std::net::IpAddr::from([127, 0, 0, 1]),
                tls: false,
            };
            black_box(compiled.router.find(&info).is_some())
        })
    });
}

criterion_group!(benches, build, update, matching);
criterion_main!(benches);
