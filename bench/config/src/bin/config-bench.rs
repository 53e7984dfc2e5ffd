//! `config-bench`: the configuration side of the gateway benchmark (`bench/run`): loading many routes into etcd and
//! timing how long a change takes to be served, with a probe that polls the data plane every millisecond.
//!
//! Subcommands (every result is one JSON line on stdout):
//!
//! - `load ENDPOINT FROM TO NODE` writes the benchmark upstream (pointing at `NODE`) and the generated routes
//!   `FROM..TO` of [`sluice_bench::route`], in transactions of 128 puts, 4 in flight.
//! - `etcd ENDPOINT HTTP TRIALS NODE`: TRIALS times, puts a new route to etcd and polls `HTTP` every millisecond
//!   until that route answers 200; then deletes it and waits until it no longer answers (untimed).
//! - `manifest DIR HTTP TRIALS BACKGROUND NODE`: writes a Service and EndpointSlice pointing at `NODE` and
//!   BACKGROUND ApiRoutes into the controller's watched DIR, waits until they are served, then TRIALS times edits
//!   `probe.yaml` (an atomic rename, as editors and ConfigMap updates do) to route a new path and polls `HTTP`
//!   every millisecond until that path answers 200.
//!
//! Run by `bench/run`; see docs/benchmarks.md.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use etcd_client::{Client, Txn, TxnOp};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::json;
use sluice_bench::{PREFIX, Summary, UPSTREAM, route, route_key, upstream};

/// How long one trial may take before the benchmark gives up.
const TRIAL_LIMIT: Duration = Duration::from_secs(30);
/// The polling period.
const POLL: Duration = Duration::from_millis(1);

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).with_context(|| format!("missing argument {i}; see --help"));
    let num = |i: usize| -> anyhow::Result<usize> { arg(i)?.parse().with_context(|| format!("argument {i}")) };
    match args.first().map(String::as_str) {
        Some("load") => load(arg(1)?, num(2)?, num(3)?, arg(4)?).await?,
        Some("etcd") => etcd_trials(arg(1)?, arg(2)?.parse()?, num(3)?, arg(4)?).await?,
        Some("manifest") => manifest_trials(Path::new(arg(1)?), arg(2)?.parse()?, num(3)?, num(4)?, arg(5)?).await?,
        _ => bail!(
            "usage: config-bench load ENDPOINT FROM TO NODE | etcd ENDPOINT HTTP TRIALS NODE \
             | manifest DIR HTTP TRIALS BACKGROUND NODE"
        ),
    }
    Ok(())
}

/// Writes the upstream and routes `from..to`.
async fn load(endpoint: &str, from: usize, to: usize, node: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut client = Client::connect([endpoint], None).await?;
    client.put(format!("{PREFIX}/upstreams/{UPSTREAM}"), upstream(node).to_string(), None).await?;
    let batches: Vec<(usize, usize)> = (from..to).step_by(128).map(|s| (s, (s + 128).min(to))).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in batches.chunks(batches.len().div_ceil(4).max(1)) {
        let (mut c, chunk) = (client.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for (a, b) in chunk {
                let ops: Vec<TxnOp> = (a..b).map(|i| TxnOp::put(route_key(i), route(i, 0).to_string(), None)).collect();
                c.txn(Txn::new().and_then(ops)).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    println!("{}", json!({"written": to.saturating_sub(from), "seconds": started.elapsed().as_secs_f64()}));
    Ok(())
}

/// Puts a new route per trial and times until it routes.
async fn etcd_trials(endpoint: &str, http: SocketAddr, trials: usize, _node: &str) -> anyhow::Result<()> {
    let mut client = Client::connect([endpoint], None).await?;
    let mut probe = Probe::new(http);
    let (mut samples, mut puts) = (Vec::with_capacity(trials), Vec::with_capacity(trials));
    for k in 0..trials {
        let path = format!("/probe/{k}");
        let key = format!("{PREFIX}/routes/probe-{k}");
        let value = json!({"uri": path, "upstream_id": UPSTREAM}).to_string();
        let t = Instant::now();
        client.put(key.as_str(), value, None).await?;
        puts.push(t.elapsed());
        samples.push(probe.until(&path, true, t).await.with_context(|| format!("trial {k}: {path} never routed"))?);
        client.delete(key.as_str(), None).await?;
        probe.until(&path, false, Instant::now()).await.with_context(|| format!("trial {k}: {path} stays routed"))?;
    }
    report(&mut samples, Some(&mut puts));
    Ok(())
}

/// Edits a manifest per trial and times until its new path routes.
async fn manifest_trials(
    dir: &Path,
    http: SocketAddr,
    trials: usize,
    background: usize,
    node: &str,
) -> anyhow::Result<()> {
    let (ip, port) = node.rsplit_once(':').context("NODE is IP:PORT")?;
    std::fs::write(
        dir.join("00-base.yaml"),
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: sluice}}\n\
             spec: {{controller: sluice.dev/ingress-controller}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: up, namespace: bench}}\nspec: {{ports: [{{port: 80}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: up-1, namespace: bench, labels: {{kubernetes.io/service-name: up}}}}\n\
             addressType: IPv4\nports: [{{port: {port}}}]\nendpoints: [{{addresses: [\"{ip}\"]}}]\n"
        ),
    )?;
    let mut text = String::new();
    for i in 0..background {
        text.push_str(&api_route(&format!("bg{i}"), &format!("/mbg/{i}")));
    }
    text.push_str(&api_route("ready", "/mready"));
    write_atomically(&dir.join("10-background.yaml"), &text)?;
    let mut probe = Probe::new(http);
    let started = Instant::now();
    probe
        .until_within("/mready", Instant::now(), Duration::from_secs(300))
        .await
        .context("the background manifests were never served")?;
    let loaded = started.elapsed();
    let mut samples = Vec::with_capacity(trials);
    for k in 0..trials {
        let path = format!("/mprobe/{k}");
        let t = Instant::now();
        write_atomically(&dir.join("20-probe.yaml"), &api_route("probe", &path))?;
        samples.push(probe.until(&path, true, t).await.with_context(|| format!("trial {k}: {path} never routed"))?);
    }
    eprintln!("manifest: {background} background ApiRoutes served {:.2} s after writing", loaded.as_secs_f64());
    report(&mut samples, None);
    Ok(())
}

fn api_route(name: &str, path: &str) -> String {
    format!(
        "---\napiVersion: sluice.dev/v1alpha1\nkind: ApiRoute\nmetadata: {{name: {name}, namespace: bench}}\n\
         spec:\n  ingressClassName: sluice\n  http:\n    - name: main\n      match:\n        paths: [\"{path}\"]\n      \
         backends: [{{serviceName: up, servicePort: 80}}]\n"
    )
}

/// Writes `path` the way editors and ConfigMap volumes do: a temporary file renamed over it.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Prints the summary of `samples` as JSON, with the etcd put latencies (`puts`) when given.
fn report(samples: &mut [Duration], puts: Option<&mut [Duration]>) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut sorted: Vec<f64> = samples.iter().map(|d| (ms(*d) * 1000.0).round() / 1000.0).collect();
    sorted.sort_by(f64::total_cmp);
    let s = Summary::of(samples);
    let mut out =
        json!({"trials": s.count, "p50_ms": ms(s.p50), "p99_ms": ms(s.p99), "max_ms": ms(s.max), "samples_ms": sorted});
    if let Some(puts) = puts {
        let p = Summary::of(puts);
        out["put_p50_ms"] = json!(ms(p.p50));
        out["put_p99_ms"] = json!(ms(p.p99));
    }
    println!("{out}");
}

/// A keep-alive HTTP/1.1 connection to the data plane, polled every millisecond.
struct Probe {
    addr: SocketAddr,
    sender: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
}

impl Probe {
    fn new(addr: SocketAddr) -> Probe {
        Probe { addr, sender: None }
    }

    /// Polls `path` until it answers 200 (`routed`) or anything else (`!routed`); the time since `since`.
    async fn until(&mut self, path: &str, routed: bool, since: Instant) -> anyhow::Result<Duration> {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.status(path).await.is_some_and(|s| (s == 200) == routed) {
                return Ok(since.elapsed());
            }
            if since.elapsed() > TRIAL_LIMIT {
                bail!("gave up after {TRIAL_LIMIT:?}");
            }
            tick.tick().await;
        }
    }

    async fn until_within(&mut self, path: &str, since: Instant, limit: Duration) -> anyhow::Result<Duration> {
        loop {
            if self.status(path).await == Some(200) {
                return Ok(since.elapsed());
            }
            if since.elapsed() > limit {
                bail!("gave up after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The status of `GET path`, reconnecting as needed; `None` when the data plane cannot be reached.
    async fn status(&mut self, path: &str) -> Option<u16> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(self.addr).await.ok()?;
            stream.set_nodelay(true).ok()?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut()?;
        sender.ready().await.ok()?;
        let req = http::Request::get(path).header("host", "bench.test").body(Empty::<Bytes>::new()).ok()?;
        match sender.send_request(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                resp.into_body().collect().await.ok()?;
                Some(status)
            }
            Err(_) => {
                self.sender = None;
                None
            }
        }
    }
}
