//! `sluice-stack`: the README's local stack. Starts a real etcd, the example echo backends, the controller
//! reading `config/examples/` and the data plane; checks that the example routes answer; prints `curl` lines;
//! runs until Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sluice_e2e::{Stack, StackConfig};
use sluice_testkit::EchoServer;

/// Flags; the defaults match the example manifests.
#[derive(Parser, Debug)]
struct Args {
    /// The manifest directory the controller reads.
    #[arg(long, default_value = "config/examples")]
    manifests: PathBuf,
    /// The data plane's proxy port (0 picks a free one).
    #[arg(long, default_value_t = 9080)]
    http_port: u16,
    /// Check the example routes, print the results and exit instead of running until Ctrl-C.
    #[arg(long)]
    check: bool,
}

/// The echo backends the example EndpointSlices point at.
const BACKENDS: [(&str, &str); 4] = [
    ("web-1", "127.0.0.2:18080"),
    ("web-2", "127.0.0.3:18080"),
    ("api-1", "127.0.0.4:18081"),
    ("fallback-1", "127.0.0.5:18082"),
];

/// Example requests: (Host header or none, path, backend expected to answer).
const EXAMPLES: [(Option<&str>, &str, &str); 6] = [
    (None, "/web/hello", "web-"),
    (None, "/api/health", "api-1"),
    (Some("shop.example.test"), "/cart", "api-1"),
    (Some("one.apps.example.test"), "/", "web-"),
    (Some("two.levels.apps.example.test"), "/", "fallback-1"),
    (None, "/anything-else", "fallback-1"),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut echoes = Vec::new();
    for (name, addr) in BACKENDS {
        echoes.push(EchoServer::bind(name, addr.parse()?).await?);
    }
    let log_dir = PathBuf::from(".local/logs");
    let config = StackConfig {
        http_port: if args.http_port == 0 { sluice_testkit::free_port() } else { args.http_port },
        ..StackConfig::on_free_ports(
            std::fs::canonicalize(&args.manifests)?,
            std::fs::canonicalize(".")?.join(&log_dir),
        )
    };
    let stack = Stack::start(config).await?;
    let http = stack.http();
    println!("sluice is running: etcd {}, data plane http://{http}", stack.etcd.endpoint());
    println!("logs: {}/", log_dir.display());
    // Both components report ready once they have synced, but the data plane applies the controller's writes to
    // etcd a few milliseconds later (on its configuration thread): give the examples a moment to converge.
    sluice_testkit::eventually(Duration::from_secs(10), || async move {
        for (host, path, expected) in EXAMPLES {
            let Ok(reply) = sluice_testkit::get(http, host.unwrap_or("localhost"), path).await else { return false };
            if !(reply.status.is_success() && reply.backend().unwrap_or_default().starts_with(expected)) {
                return false;
            }
        }
        true
    })
    .await;
    let mut failures = 0;
    for (host, path, expected) in EXAMPLES {
        let reply = sluice_testkit::get(http, host.unwrap_or("localhost"), path).await?;
        let backend = reply.backend().unwrap_or_default();
        let ok = reply.status.is_success() && backend.starts_with(expected);
        failures += usize::from(!ok);
        let header = host.map(|h| format!("-H 'Host: {h}' ")).unwrap_or_default();
        println!(
            "curl -s {header}http://{http}{path}    # -> {} from {backend} {}",
            reply.status.as_u16(),
            if ok { "(ok)" } else { "(UNEXPECTED)" }
        );
    }
    if failures > 0 {
        eprintln!("{failures} example request(s) did not answer as expected; logs:\n{}", stack.logs());
        std::process::exit(1);
    }
    if args.check {
        return Ok(());
    }
    println!(
        "Edit files in {} and the routes follow within a second. Ctrl-C stops everything.",
        args.manifests.display()
    );
    tokio::signal::ctrl_c().await?;
    drop(stack);
    drop(echoes);
    Ok(())
}
