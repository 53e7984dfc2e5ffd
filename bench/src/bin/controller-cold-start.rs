//! `controller-cold-start [N]`: how long the controller takes from start to having N ApiRoutes (default 10,000)
//! written to a real etcd, in manifest-directory mode. Run from the repository root after
//! `cargo build --release --bins`; it uses `target/release/sluice-controller`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sluice_testkit::{Child, Etcd, free_port, workspace_bin};

fn manifests(n: usize) -> String {
    let mut text = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: sluice}\n\
         spec: {controller: sluice.dev/ingress-controller}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: load}\nspec: {ports: [{port: 80}]}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: web-1, namespace: load, labels: {kubernetes.io/service-name: web}}\n\
         addressType: IPv4\nports: [{port: 8080}]\nendpoints: [{addresses: [10.0.0.1]}, {addresses: [10.0.0.2]}]\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "---\napiVersion: sluice.dev/v1alpha1\nkind: ApiRoute\nmetadata: {{name: r{i}, namespace: load}}\n\
             spec:\n  ingressClassName: sluice\n  http:\n    - name: main\n      match:\n        \
             paths: [\"/r{i}\", \"/r{i}/*\"]\n        hosts: [\"h{}.example.com\"]\n        methods: [GET, POST]\n        \
             exprs: [{{subject: {{scope: Header, name: x-tenant}}, op: Equal, value: \"t{i}\"}}]\n      \
             backends: [{{serviceName: web, servicePort: 80}}]\n",
            i % 100
        ));
    }
    text
}

async fn routes(client: &mut etcd_client::Client) -> i64 {
    let opts = etcd_client::GetOptions::new().with_prefix().with_count_only();
    client.get("/sluice/routes/", Some(opts)).await.map(|r| r.count()).unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(10_000);
    let timeout: u64 = std::env::args().nth(2).map(|a| a.parse()).transpose()?.unwrap_or(120);
    let controller = workspace_bin("sluice-controller");
    if !controller.exists() {
        bail!("{} is missing: run `cargo build --release --bins` first", controller.display());
    }
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    std::fs::write(dir.path().join("routes.yaml"), manifests(n))?;
    let written = started.elapsed();
    let etcd = Etcd::start().await?;
    let mut client = etcd.client().await?;
    let mut cmd = Command::new(&controller);
    cmd.arg(format!("--manifests={}", dir.path().display()))
        .arg(format!("--etcd-endpoints={}", etcd.endpoint()))
        .arg(format!("--admin-addr=127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("controller.log"))?);
    let started = Instant::now();
    let _child = Child::spawn("sluice-controller", cmd).context("starting the controller")?;
    let target = i64::try_from(n)?;
    loop {
        if routes(&mut client).await >= target {
            break;
        }
        if started.elapsed() > Duration::from_secs(timeout) {
            let log = std::fs::read_to_string(dir.path().join("controller.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            bail!(
                "only {} of {n} routes after {timeout} s; controller log (last lines):\n{}",
                routes(&mut client).await,
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    println!("| ApiRoutes | manifest written | start → all routes in etcd | target |");
    println!("|---:|---:|---:|---:|");
    println!("| {n} | {:.0} ms | {:.2} s | < 10 s |", written.as_secs_f64() * 1000.0, elapsed.as_secs_f64());
    Ok(())
}
