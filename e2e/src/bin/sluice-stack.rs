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
    /// The data plane's HTTPS port (0 picks a free one).
    #[arg(long, default_value_t = 9443)]
    https_port: u16,
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

/// One example request and what should answer it.
struct Example {
    host: Option<&'static str>,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    /// The status expected.
    status: u16,
    /// The backend expected to answer (by name prefix); `None` when the data plane itself answers.
    backend: Option<&'static str>,
    /// Sent over HTTPS, trusting the example CA.
    tls: bool,
}

const fn example(host: Option<&'static str>, path: &'static str, backend: &'static str) -> Example {
    Example { host, path, headers: &[], status: 200, backend: Some(backend), tls: false }
}

/// The CA that signed the example certificate (`config/examples/21-ingress-tls.yaml`), relative to the manifests.
const EXAMPLE_CA: &str = "tls/example-ca.crt";

/// Where the stack listens, and what an HTTPS example trusts.
struct Target {
    http: std::net::SocketAddr,
    https: std::net::SocketAddr,
    tls: sluice_testkit::TlsClient,
    ca_path: PathBuf,
}

/// Example requests, one per feature the examples show.
const EXAMPLES: [Example; 13] = [
    example(None, "/web/hello", "web-"),
    example(None, "/api/health", "api-1"),
    example(Some("shop.example.test"), "/cart", "api-1"),
    example(Some("one.apps.example.test"), "/", "web-"),
    example(Some("two.levels.apps.example.test"), "/", "fallback-1"),
    example(None, "/anything-else", "fallback-1"),
    // key-auth on the ApiRoute's `orders` rule: refused without alice's key, never answered by the fallback.
    Example { host: Some("store.example.test"), path: "/orders", headers: &[], status: 401, backend: None, tls: false },
    Example {
        host: Some("store.example.test"),
        path: "/orders",
        headers: &[("apikey", "alice-example-key")],
        status: 200,
        backend: Some("api-1"),
        tls: false,
    },
    // The ApiRoute's `/quota`: a limit counted in Redis (the stack's own on 127.0.0.1:6390).
    example(Some("store.example.test"), "/quota", "api-1"),
    // The ApiRoute's canary: a user is kept on one backend by X-User-Id (erin in the canary, alice not).
    Example { headers: &[("X-User-Id", "erin")], ..example(Some("store.example.test"), "/canary", "api-1") },
    Example { headers: &[("X-User-Id", "alice")], ..example(Some("store.example.test"), "/canary", "web-") },
    // The Ingress with TLS: served over HTTPS with its Secret's certificate, and plain HTTP is redirected there.
    Example { tls: true, ..example(Some("secure.example.test"), "/account", "api-1") },
    Example {
        host: Some("secure.example.test"),
        path: "/account",
        headers: &[],
        status: 301,
        backend: None,
        tls: false,
    },
];

impl Example {
    async fn ask(&self, target: &Target) -> anyhow::Result<(sluice_testkit::Reply, bool)> {
        let host = self.host.unwrap_or("localhost");
        let reply = if self.tls {
            let mut conn = target.tls.connect(target.https, Some(host)).await?;
            conn.send(http::Method::GET, host, self.path, self.headers).await?
        } else {
            let body = bytes::Bytes::new();
            sluice_testkit::request(target.http, http::Method::GET, host, self.path, self.headers, body).await?
        };
        let backend = reply.backend();
        let ok = reply.status.as_u16() == self.status
            && match self.backend {
                Some(expected) => backend.unwrap_or_default().starts_with(expected),
                None => backend.is_none(),
            };
        Ok((reply, ok))
    }

    /// The curl line for this example; `-i` when the answer's headers are worth seeing.
    fn curl(&self, target: &Target, headers: bool) -> String {
        let mut flags = String::from(if headers { "-i " } else { "" });
        for (k, v) in self.headers {
            flags.push_str(&format!("-H '{k}: {v}' "));
        }
        if self.tls {
            // curl must send the name as SNI and check the certificate against it: resolve it to the listener.
            let host = self.host.unwrap_or("localhost");
            let (ip, port) = (target.https.ip(), target.https.port());
            let ca = target.ca_path.display();
            return format!(
                "curl -s --cacert {ca} --resolve {host}:{port}:{ip} {flags}https://{host}:{port}{}",
                self.path
            );
        }
        if let Some(h) = self.host {
            flags.push_str(&format!("-H 'Host: {h}' "));
        }
        format!("curl -s {flags}http://{}{}", target.http, self.path)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut echoes = Vec::new();
    for (name, addr) in BACKENDS {
        echoes.push(EchoServer::bind(name, addr.parse()?).await?);
    }
    let log_dir = PathBuf::from(".local/logs");
    std::fs::create_dir_all(&log_dir)?;
    // Consumers' credentials are sealed in etcd, as the chart does; a fixed local key (never use it elsewhere).
    let keyring = std::fs::canonicalize(".")?.join(".local/credential-keyring");
    std::fs::write(&keyring, "local1 bG9jYWwgc3RhY2sga2V5OiBub3QgYSBzZWNyZXQhISE=\n")?;
    let port = |p: u16| if p == 0 { sluice_testkit::free_port() } else { p };
    let config = StackConfig {
        http_port: port(args.http_port),
        https_port: port(args.https_port),
        keyring: Some(keyring),
        ..StackConfig::on_free_ports(
            std::fs::canonicalize(&args.manifests)?,
            std::fs::canonicalize(".")?.join(&log_dir),
        )
    };
    let stack = Stack::start(config).await?;
    let ca_path = args.manifests.join(EXAMPLE_CA);
    let roots = vec![std::fs::read_to_string(&ca_path)?];
    let tls = sluice_testkit::TlsClient::new(sluice_testkit::TlsClientOptions { roots, ..Default::default() })?;
    let target = Target { http: stack.http(), https: stack.https(), tls, ca_path };
    let (http, https) = (target.http, target.https);
    println!("sluice is running: etcd {}, data plane http://{http} and https://{https}", stack.etcd.endpoint());
    println!("logs: {}/", log_dir.display());
    // Both components report ready once they have synced, but the data plane applies the controller's writes to
    // etcd a few milliseconds later (on its configuration thread): give the examples a moment to converge.
    let target = &target;
    sluice_testkit::eventually(Duration::from_secs(10), || async move {
        for example in &EXAMPLES {
            if !example.ask(target).await.is_ok_and(|(_, ok)| ok) {
                return false;
            }
        }
        true
    })
    .await;
    let mut failures = 0;
    for example in &EXAMPLES {
        let (reply, ok) = example.ask(target).await?;
        failures += usize::from(!ok);
        let location = reply.headers.get(http::header::LOCATION).and_then(|l| l.to_str().ok());
        let quota = reply.headers.get("x-ratelimit-remaining").and_then(|r| r.to_str().ok());
        let from = match (reply.backend(), location) {
            (Some(b), _) => match quota {
                Some(left) => format!("from {b}, X-RateLimit-Remaining: {left}"),
                None => format!("from {b}"),
            },
            (None, Some(to)) => format!("to {to}"),
            (None, None) => reply.body.trim().to_string(),
        };
        println!(
            "{}    # -> {} {from} {}",
            example.curl(target, quota.is_some()),
            reply.status.as_u16(),
            if ok { "(ok)" } else { "(UNEXPECTED)" }
        );
    }
    // The `/quota` rule counts in Redis: the data plane says whether it reached it.
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], stack.config.dataplane_admin_port));
    let redis_up = format!("sluice_redis_up{{target=\"127.0.0.1:{}\"}}", sluice_e2e::EXAMPLE_REDIS_PORT);
    let up = sluice_testkit::get(admin, "localhost", "/metrics")
        .await
        .ok()
        .and_then(|r| r.body.lines().find_map(|l| l.strip_prefix(&redis_up).map(|v| v.trim() == "1")));
    match up {
        Some(true) => println!("# /quota counted in Redis on 127.0.0.1:{}", sluice_e2e::EXAMPLE_REDIS_PORT),
        _ => {
            eprintln!(
                "the /quota limit could not reach Redis on 127.0.0.1:{} (is redis-server installed? \
                 scripts/setup.sh installs it); it counts locally meanwhile",
                sluice_e2e::EXAMPLE_REDIS_PORT
            );
            failures += 1;
        }
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
