//! `route-burst`: 1,000 route changes at 100,000 routes while the proxy serves load.
//!
//! Starts a real etcd and an echo backend, writes N routes (default 100,000) and their upstream, starts the
//! release `sluice-dataplane` binary built next to this one, then runs a closed-loop load of keep-alive HTTP/1.1
//! clients against routes of every kind: first quietly, then while 1,000 of the routes being requested are
//! rewritten in etcd one put at a time. Prints latency percentiles and failures for both windows.
//!
//! Usage: `route-burst [ROUTES] [CONNECTIONS]` after `cargo build --release -p sluice-dataplane -p sluice-bench --bins`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use etcd_client::{Client, Txn, TxnOp};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use sluice_bench::{PREFIX, Summary, request_for, route, route_key, tenant_for, upstream};
use sluice_testkit::{Child, EchoServer, Etcd, free_port, get, workspace_bin};

const CHANGES: usize = 1_000;
const QUIET: Duration = Duration::from_secs(5);
const SAMPLE: usize = 1_024;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let conns: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);

    let etcd = Etcd::start().await?;
    let mut client = etcd.client().await?;
    let echo = EchoServer::start("bench").await?;
    let loaded = Instant::now();
    load_routes(&mut client, n, &echo.addr().to_string()).await?;
    println!("wrote {n} routes to etcd in {:.1} s", loaded.elapsed().as_secs_f64());

    let (http, admin) = (free_port(), free_port());
    let mut cmd = Command::new(workspace_bin("sluice-dataplane"));
    cmd.args(["--etcd-endpoints", &etcd.endpoint()])
        .args(["--http-addr", &format!("127.0.0.1:{http}"), "--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(["--log-level", "warn"])
        .stdout(Stdio::null());
    let started = Instant::now();
    let mut dp = Child::spawn("sluice-dataplane", cmd).context("start target/release/sluice-dataplane (build it)")?;
    let admin_addr: SocketAddr = ([127, 0, 0, 1], admin).into();
    loop {
        if get(admin_addr, "localhost", "/readyz").await.is_ok_and(|r| r.status == 200) {
            break;
        }
        if dp.exited().is_some() || started.elapsed() > Duration::from_secs(120) {
            bail!("the data plane did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("data plane ready with {n} routes {:.2} s after start", started.elapsed().as_secs_f64());

    let addr: SocketAddr = ([127, 0, 0, 1], http).into();
    let targets: Arc<Vec<usize>> = Arc::new((0..SAMPLE).map(|k| (k * 104_729 + 13) % n).collect());
    // Warm up connections and caches.
    run_load(addr, &targets, conns, Window::For(Duration::from_secs(1))).await;
    let quiet = run_load(addr, &targets, conns, Window::For(QUIET)).await;

    // Control: the same 1,000 puts to keys the data plane does not watch, so etcd and the writer load the machine
    // exactly as in the burst but the routing table does not change. The marker still goes to the watched prefix.
    let control = Window::Burst { writer: &client, prefix: "/unwatched", marker: "control-done" };
    let control = run_load(addr, &targets, conns, control).await;
    let changes = Window::Burst { writer: &client, prefix: PREFIX, marker: "burst-done" };
    let during = run_load(addr, &targets, conns, changes).await;

    println!();
    println!("| window | requests | failures | p50 | p99 | max |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, r) in
        [("quiet", &quiet), ("control: 1,000 puts outside the prefix", &control), ("1,000 route changes", &during)]
    {
        println!(
            "| {name} | {} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
            r.summary.count,
            r.failures,
            ms(r.summary.p50),
            ms(r.summary.p99),
            ms(r.summary.max)
        );
    }
    if let Some(burst) = during.burst {
        println!(
            "\nburst: {CHANGES} puts in {:.2} s, applied and served {:.2} s after the first",
            ms(burst.0) / 1e3,
            ms(burst.1) / 1e3
        );
    }
    let ratio = ms(during.summary.p99) / ms(quiet.summary.p99).max(1e-9);
    let control_ratio = ms(during.summary.p99) / ms(control.summary.p99).max(1e-9);
    println!(
        "p99 burst / quiet = {ratio:.2}; p99 burst / control = {control_ratio:.2} (target <= 2.0); failures {}",
        quiet.failures + control.failures + during.failures
    );
    drop(dp);
    Ok(())
}

/// Starts writing 1,000 changed versions of the requested routes under `prefix`, one put at a time, then a marker
/// route `/<marker>` under the watched prefix; resolves to when the first put was sent and how long the puts took.
fn burst(
    mut writer: Client,
    targets: &[usize],
    prefix: &'static str,
    marker: &'static str,
) -> tokio::task::JoinHandle<anyhow::Result<(Instant, Duration)>> {
    let changed: Vec<usize> = targets.iter().copied().cycle().take(CHANGES).collect();
    tokio::spawn(async move {
        let t = Instant::now();
        for (version, i) in changed.iter().enumerate() {
            let value = route(*i, 1 + version as u64).to_string();
            writer.put(format!("{prefix}/routes/r{i}"), value, None).await?;
        }
        let elapsed = t.elapsed();
        // Written last: once it answers, everything before it has been applied.
        let route = serde_json::json!({"uri": format!("/{marker}"), "upstream_id": sluice_bench::UPSTREAM});
        writer.put(format!("{PREFIX}/routes/{marker}"), route.to_string(), None).await?;
        anyhow::Ok((t, elapsed))
    })
}

/// Writes the upstream and `n` routes in transactions of 128 puts (etcd's default limit per transaction).
async fn load_routes(client: &mut Client, n: usize, node: &str) -> anyhow::Result<()> {
    client.put(format!("{PREFIX}/upstreams/{}", sluice_bench::UPSTREAM), upstream(node).to_string(), None).await?;
    for start in (0..n).step_by(128) {
        let ops: Vec<TxnOp> =
            (start..(start + 128).min(n)).map(|i| TxnOp::put(route_key(i), route(i, 0).to_string(), None)).collect();
        client.txn(Txn::new().and_then(ops)).await?;
    }
    Ok(())
}

/// How long a load window lasts.
enum Window<'a> {
    /// A fixed time.
    For(Duration),
    /// Until a burst written with `writer` under `prefix` is written and its `marker` route answers.
    Burst { writer: &'a Client, prefix: &'static str, marker: &'static str },
}

/// How long the marker of a burst may take to answer before the run is declared failed.
const APPLY_LIMIT: Duration = Duration::from_secs(600);

struct LoadResult {
    summary: Summary,
    failures: usize,
    /// For the burst window: how long the puts took, and when the marker route answered.
    burst: Option<(Duration, Duration)>,
}

/// Runs `conns` closed-loop clients for the `window`.
async fn run_load(addr: SocketAddr, targets: &Arc<Vec<usize>>, conns: usize, window: Window<'_>) -> LoadResult {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..conns).map(|w| tokio::spawn(worker(addr, targets.clone(), w, stop.clone()))).collect();
    let mut burst_times = None;
    match window {
        Window::For(duration) => tokio::time::sleep(duration).await,
        Window::Burst { writer, prefix, marker } => {
            // Started once the load is, so the whole burst falls inside the window.
            let (first_put, written) = match burst(writer.clone(), targets, prefix, marker).await {
                Ok(Ok(times)) => times,
                Ok(Err(e)) => panic!("writing the burst failed: {e}"),
                Err(e) => panic!("burst task failed: {e}"),
            };
            let path = format!("/{marker}");
            loop {
                if get(addr, "bench.test", &path).await.is_ok_and(|r| r.status == 200) {
                    break;
                }
                if first_put.elapsed() > APPLY_LIMIT {
                    panic!("the burst was never applied");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            burst_times = Some((written, first_put.elapsed()));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    let mut failures = 0;
    for w in workers {
        if let Ok((s, f)) = w.await {
            samples.extend(s);
            failures += f;
        }
    }
    LoadResult { summary: Summary::of(&mut samples), failures, burst: burst_times }
}

/// One keep-alive connection sending requests round the targets until `stop`; returns latencies and failures.
async fn worker(
    addr: SocketAddr,
    targets: Arc<Vec<usize>>,
    offset: usize,
    stop: Arc<AtomicBool>,
) -> (Vec<Duration>, usize) {
    let mut samples = Vec::new();
    let mut failures = 0;
    let mut k = offset * 131;
    let mut sender = None;
    while !stop.load(Ordering::Relaxed) {
        if sender.is_none() {
            match connect(addr).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    failures += 1;
                    // A proxy that refuses connections must not turn this client into a busy loop.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        k = (k + 1) % targets.len();
        let i = targets[k];
        let (host, path) = request_for(i);
        let req =
            http::Request::get(path).header("host", host).header("x-tenant", tenant_for(i)).body(Empty::<Bytes>::new());
        let Ok(req) = req else { continue };
        let t = Instant::now();
        let ok = match s.send_request(req).await {
            Ok(resp) => {
                let status = resp.status();
                resp.into_body().collect().await.is_ok() && status == 200
            }
            Err(_) => {
                sender = None;
                false
            }
        };
        samples.push(t.elapsed());
        failures += usize::from(!ok);
    }
    (samples, failures)
}

async fn connect(addr: SocketAddr) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
