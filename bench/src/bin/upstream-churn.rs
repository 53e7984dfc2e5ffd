//! `upstream-churn`: a 2,000-node upstream with active health checks whose nodes change by 10% every second.
//!
//! Starts a real etcd and the `sluice-dataplane` binary built next to this one, writes one upstream of N nodes
//! (default 2,000) with TCP health checks and a route to it, then every second replaces a tenth of the nodes in
//! etcd. The nodes are loopback addresses (`127.x.y.z`) that all reach one listener of this process, except a
//! fixed set of "dead" nodes on a closed port that are never changed. Reports:
//!
//! - the data plane's CPU (utime + stime from `/proc/<pid>/stat`) while idle with the upstream loaded and checked,
//!   and while churning, and the difference;
//! - whether health state of unchanged nodes survived the churn: every dead node must stay unhealthy and every
//!   stable live node healthy in `sluice_upstream_node_healthy` at every sample (a reset would show them as
//!   healthy again, or flapping).
//!
//! Usage: `upstream-churn [NODES] [SECONDS]` after `cargo build --release -p sluice-dataplane -p sluice-bench --bins`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sluice_testkit::{Child, Etcd, free_port, get, workspace_bin};
use tokio::net::TcpListener;

const PREFIX: &str = "/sluice";
/// Nodes that never change and whose port is closed: they must become and stay unhealthy.
const DEAD: usize = 50;
/// Nodes that never change and are live: they must stay healthy.
const STABLE: usize = 150;
const IDLE: Duration = Duration::from_secs(5);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000).max(DEAD + STABLE + 10);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);

    // One listener on every loopback address: 127.x.y.z:live all land here. It accepts and closes.
    let listener = TcpListener::bind(("0.0.0.0", 0)).await?;
    let live = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let dead_port = free_port();

    let etcd = Etcd::start().await?;
    let mut client = etcd.client().await?;
    // Node k is 127.x.y.z with x.y.z = k + 2 (skipping 127.0.0.0 and 127.0.0.1).
    let address = |k: usize, port: u16| {
        let v = k + 2;
        format!("127.{}.{}.{}:{port}", (v >> 16) & 255, (v >> 8) & 255, v & 255)
    };
    let dead: Vec<String> = (0..DEAD).map(|k| address(k, dead_port)).collect();
    let stable: Vec<String> = (DEAD..DEAD + STABLE).map(|k| address(k, live)).collect();
    let mut churning: Vec<String> = (DEAD + STABLE..n).map(|k| address(k, live)).collect();
    let mut next = n;
    let upstream = |churning: &[String]| -> Value {
        let nodes: serde_json::Map<String, Value> =
            dead.iter().chain(&stable).chain(churning).map(|a| (a.clone(), json!(1))).collect();
        json!({"nodes": nodes, "checks": {"active": {"type": "tcp", "concurrency": 20,
            "healthy": {"interval": 1}, "unhealthy": {"interval": 1}}}})
    };
    client.put(format!("{PREFIX}/upstreams/churn"), upstream(&churning).to_string(), None).await?;
    client
        .put(format!("{PREFIX}/routes/churn"), json!({"uri": "/churn", "upstream_id": "churn"}).to_string(), None)
        .await?;

    let (http, admin) = (free_port(), free_port());
    let mut cmd = Command::new(workspace_bin("sluice-dataplane"));
    cmd.args(["--etcd-endpoints", &etcd.endpoint()])
        .args(["--http-addr", &format!("127.0.0.1:{http}"), "--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(["--log-level", "error"])
        .stdout(Stdio::null());
    let mut dp = Child::spawn("sluice-dataplane", cmd).context("start sluice-dataplane (build it)")?;
    let admin_addr: SocketAddr = ([127, 0, 0, 1], admin).into();
    let started = Instant::now();
    while !get(admin_addr, "localhost", "/readyz").await.is_ok_and(|r| r.status == 200) {
        if dp.exited().is_some() || started.elapsed() > Duration::from_secs(60) {
            bail!("the data plane did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Wait until every dead node has been found unhealthy (tcp_failures 2 at 1 s intervals).
    let settle = Instant::now();
    loop {
        let health = health(admin_addr).await;
        if dead.iter().all(|a| health.get(a) == Some(&0)) && stable.iter().all(|a| health.get(a) == Some(&1)) {
            break;
        }
        if settle.elapsed() > Duration::from_secs(30) {
            bail!("dead nodes were not all ejected within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("{n} nodes loaded; {DEAD} dead nodes ejected after {:.1} s", settle.elapsed().as_secs_f64());

    let pid = dp.pid();
    let ticks = clock_ticks();
    let before = cpu_ticks(pid)?;
    tokio::time::sleep(IDLE).await;
    let idle = (cpu_ticks(pid)? - before) as f64 / ticks / IDLE.as_secs_f64();

    let mut violations = 0usize;
    let mut samples = 0usize;
    let per_step = n / 10;
    let before = cpu_ticks(pid)?;
    let churn_started = Instant::now();
    for second in 0..seconds {
        // Replace the oldest tenth of the nodes with fresh addresses.
        let replaced = per_step.min(churning.len());
        churning.drain(..replaced);
        churning.extend((next..next + replaced).map(|k| address(k, live)));
        next += replaced;
        client.put(format!("{PREFIX}/upstreams/churn"), upstream(&churning).to_string(), None).await?;
        let deadline = churn_started + Duration::from_secs(second + 1);
        tokio::time::sleep_until(deadline.into()).await;
        let health = health(admin_addr).await;
        samples += 1;
        violations += dead.iter().filter(|a| health.get(*a) != Some(&0)).count();
        violations += stable.iter().filter(|a| health.get(*a) != Some(&1)).count();
    }
    let churn_secs = churn_started.elapsed().as_secs_f64();
    let churn = (cpu_ticks(pid)? - before) as f64 / ticks / churn_secs;
    if dp.exited().is_some() {
        bail!("the data plane exited during the run");
    }

    println!("data plane CPU, idle with {n} checked nodes: {:.1}% of one core", idle * 100.0);
    println!("data plane CPU, {per_step} nodes replaced per second: {:.1}% of one core", churn * 100.0);
    println!("  above idle: {:.1}% of one core", (churn - idle) * 100.0);
    println!(
        "health of unchanged nodes ({DEAD} dead, {STABLE} live) over {samples} samples: {} ({violations} wrong values)",
        if violations == 0 { "preserved" } else { "NOT preserved" }
    );
    Ok(())
}

/// `sluice_upstream_node_healthy` of the `churn` upstream, by node address.
async fn health(admin: SocketAddr) -> HashMap<String, i64> {
    let Ok(reply) = get(admin, "localhost", "/metrics").await else { return HashMap::new() };
    reply
        .body
        .lines()
        .filter_map(|line| line.strip_prefix("sluice_upstream_node_healthy{node=\""))
        .filter_map(|rest| {
            let (node, rest) = rest.split_once('"')?;
            let value = rest.strip_prefix(",upstream=\"churn\"} ")?;
            Some((node.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// utime + stime of `pid` in clock ticks, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces; fields after it are space-separated (utime is field 14, stime 15).
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).context("malformed stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).context("malformed stat");
    Ok(field(11)? + field(12)?)
}

/// Clock ticks per second (`getconf CLK_TCK`), 100 when it cannot be read.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
