//! `sluice-controller`: watches Kubernetes (or a manifest directory) and writes configuration to etcd.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sluice_controller::leader::Elector;
use sluice_controller::manifest_source::{self, ManifestSource};
use sluice_controller::manifests::Loader;
use sluice_controller::metrics::Metrics;
use sluice_controller::pipeline::{LogReporter, Pipeline};
use sluice_controller::sink::EtcdSink;
use sluice_controller::translate::{DEFAULT_CONTROLLER_NAME, Options, Publish};
use sluice_controller::{admin, kubernetes};
use sluice_model::{DEFAULT_PREFIX, Keys};
use tokio::sync::Notify;

/// Command-line flags; each can also come from the environment.
#[derive(Parser, Debug)]
#[command(name = "sluice-controller", version, about)]
struct Args {
    /// Read objects from this directory of manifests instead of the Kubernetes API.
    #[arg(long, env = "SLUICE_MANIFESTS")]
    manifests: Option<PathBuf>,
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "SLUICE_ETCD_ENDPOINTS", value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    etcd_endpoints: Vec<String>,
    /// CA bundle (PEM) to verify the etcd servers; use https:// endpoints with it.
    #[arg(long, env = "SLUICE_ETCD_CA_FILE")]
    etcd_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS with etcd.
    #[arg(long, env = "SLUICE_ETCD_CERT_FILE")]
    etcd_cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS with etcd.
    #[arg(long, env = "SLUICE_ETCD_KEY_FILE")]
    etcd_key_file: Option<PathBuf>,
    /// Key prefix of every object in etcd.
    #[arg(long, env = "SLUICE_ETCD_PREFIX", default_value = DEFAULT_PREFIX)]
    etcd_prefix: String,
    /// Address of the admin listener (/healthz, /readyz, /metrics).
    #[arg(long, env = "SLUICE_ADMIN_ADDR", default_value = "127.0.0.1:9092")]
    admin_addr: SocketAddr,
    /// A file holding the token the admin listener requires (`Authorization: Bearer`) for everything but
    /// /healthz and /readyz; read on each request, so a rotated Secret takes effect without a restart.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// The keyring file (`<id> <base64 key>` lines, the current key first) consumers' credentials are sealed
    /// with before they are written to etcd; read again at every sync.
    #[arg(long, env = "SLUICE_CREDENTIAL_KEYRING")]
    credential_keyring: Option<PathBuf>,
    /// The IngressClass `spec.controller` value this controller serves.
    #[arg(long, env = "SLUICE_CONTROLLER_NAME", default_value = DEFAULT_CONTROLLER_NAME)]
    controller_name: String,
    /// NAMESPACE/NAME of the Service whose addresses every Ingress reports in its status.
    #[arg(long, env = "SLUICE_PUBLISH_SERVICE", conflicts_with = "publish_status_address")]
    publish_service: Option<String>,
    /// Fixed addresses (IPs or host names, comma-separated) every Ingress reports in its status.
    #[arg(long, env = "SLUICE_PUBLISH_STATUS_ADDRESS", value_delimiter = ',')]
    publish_status_address: Vec<String>,
    /// Milliseconds to wait after a change for more changes before syncing.
    #[arg(long, env = "SLUICE_DEBOUNCE_MS", default_value_t = 100)]
    debounce_ms: u64,
    /// Elect one leader among replicas with a Lease (Kubernetes mode); only the leader writes.
    #[arg(long, env = "SLUICE_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: the pod's namespace from POD_NAMESPACE, else `default`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "SLUICE_LEASE_NAME", default_value = "sluice-controller")]
    lease_name: String,
    /// Seconds a leader holds the Lease without renewing it.
    #[arg(long, env = "SLUICE_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// Print the RBAC rules the controller needs as JSON and exit.
    #[arg(long)]
    print_rbac: bool,
    /// Log filter (tracing syntax), overridden by RUST_LOG.
    #[arg(long, env = "SLUICE_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_rbac {
        println!("{}", serde_json::to_string_pretty(kubernetes::ACCESS)?);
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let publish = match (&args.publish_service, args.publish_status_address.is_empty()) {
        (Some(svc), _) => Publish::service(svc).context("--publish-service must be NAMESPACE/NAME")?,
        (None, false) => Publish::Addresses(args.publish_status_address.clone()),
        (None, true) => Publish::None,
    };
    let options = Options { controller_name: args.controller_name.clone(), publish };
    let keys = Keys::new(&args.etcd_prefix);
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let (ready, metrics, token) = (ready.clone(), metrics.clone(), args.admin_token_file.clone());
        async move {
            if let Err(e) = admin::serve(args.admin_addr, ready, metrics, token).await {
                tracing::error!(error = %e, addr = %args.admin_addr, "admin listener failed");
            }
        }
    });
    let tls = sluice_etcd::TlsFiles {
        ca: args.etcd_ca_file.clone(),
        cert: args.etcd_cert_file.clone(),
        key: args.etcd_key_file.clone(),
    }
    .options()
    .context("etcd TLS settings")?;
    let client = connect_etcd(&args.etcd_endpoints, tls).await;
    let sink = EtcdSink::new(client, keys.clone());
    let trigger = Arc::new(Notify::new());
    let debounce = Duration::from_millis(args.debounce_ms);
    let sealer = sluice_controller::sealing::Sealer::load(args.credential_keyring.clone())?;

    if let Some(dir) = &args.manifests {
        tracing::info!(dir = %dir.display(), "manifest-directory mode");
        let _watcher =
            manifest_source::watch(dir, trigger.clone()).with_context(|| format!("watching {}", dir.display()))?;
        let source = ManifestSource::new(Loader::new(dir), metrics.clone());
        let pipeline = Pipeline {
            source,
            reporter: LogReporter::default(),
            sink,
            options,
            keys,
            metrics,
            trigger,
            ready,
            debounce,
            sealer,
        };
        tokio::select! {
            _ = pipeline.run() => {}
            _ = shutdown() => tracing::info!("shutting down"),
        }
        return Ok(());
    }
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let identity = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("sluice-controller-{}", std::process::id()));
    let (source, reporter) = kubernetes::start(client.clone(), trigger.clone(), identity.clone()).await;
    let elector = args.leader_elect.then(|| {
        let lease = Duration::from_secs(args.lease_seconds.max(3));
        Elector::new(client, &args.lease_namespace, &args.lease_name, &identity, lease)
    });
    let pipeline = Pipeline { source, reporter, sink, options, keys, metrics, trigger, ready, debounce, sealer };
    let lead = async {
        if let Some(elector) = &elector {
            elector.acquire().await;
            tokio::select! {
                _ = pipeline.run() => {}
                _ = elector.keep() => anyhow::bail!("lost leadership; exiting so that a fresh replica takes over"),
            }
        } else {
            pipeline.run().await;
        }
        Ok(())
    };
    tokio::select! {
        result = lead => result?,
        _ = shutdown() => tracing::info!("shutting down"),
    }
    Ok(())
}

/// Connects to etcd, retrying with backoff for as long as it takes.
async fn connect_etcd(endpoints: &[String], tls: Option<etcd_client::TlsOptions>) -> etcd_client::Client {
    let mut delay = Duration::from_millis(200);
    loop {
        let mut opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        if let Some(tls) = &tls {
            opts = opts.with_tls(tls.clone());
        }
        match etcd_client::Client::connect(endpoints, Some(opts)).await {
            Ok(client) => {
                tracing::info!(?endpoints, "connected to etcd");
                return client;
            }
            Err(e) => {
                tracing::error!(?endpoints, error = %e, retry_in = ?delay, "cannot reach etcd; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
