//! `sluice-dataplane`: the data plane binary.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sluice_dataplane::Options;
use sluice_dataplane::plugins::access_log::{AccessLog, DEFAULT_FIELDS, Target};
use tracing_subscriber::EnvFilter;

// The request path allocates small, short-lived buffers (headers, body chunks); mimalloc's per-thread free lists
// serve them faster than glibc's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Watches the sluice configuration in etcd and proxies HTTP traffic.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// etcd client URLs, comma-separated.
    #[arg(long, env = "SLUICE_ETCD_ENDPOINTS", value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    etcd_endpoints: Vec<String>,
    /// How long connecting to an etcd endpoint may take, in milliseconds.
    #[arg(long, env = "SLUICE_ETCD_DIAL_TIMEOUT_MS", default_value_t = 3000)]
    etcd_dial_timeout_ms: u64,
    /// Limit on one etcd call (a list, a watch's creation, a lease call), in milliseconds.
    #[arg(long, env = "SLUICE_ETCD_REQUEST_TIMEOUT_MS", default_value_t = 3000)]
    etcd_request_timeout_ms: u64,
    /// How often the etcd connection is pinged, in milliseconds, so that a silently dead member is noticed.
    #[arg(long, env = "SLUICE_ETCD_KEEPALIVE_INTERVAL_MS", default_value_t = 2000)]
    etcd_keepalive_interval_ms: u64,
    /// How long a ping may go unanswered before the connection is dropped and another member tried, in ms.
    #[arg(long, env = "SLUICE_ETCD_KEEPALIVE_TIMEOUT_MS", default_value_t = 2000)]
    etcd_keepalive_timeout_ms: u64,
    /// CA bundle (PEM) to verify the etcd servers; use https:// endpoints with it.
    #[arg(long, env = "SLUICE_ETCD_CA_FILE")]
    etcd_ca_file: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS with etcd.
    #[arg(long, env = "SLUICE_ETCD_CERT_FILE")]
    etcd_cert_file: Option<std::path::PathBuf>,
    /// Client key (PEM) for mutual TLS with etcd.
    #[arg(long, env = "SLUICE_ETCD_KEY_FILE")]
    etcd_key_file: Option<std::path::PathBuf>,
    /// Address blocks upstream nodes may not be in (comma-separated addresses or CIDR blocks), besides the
    /// built-in link-local ones (169.254.0.0/16, fe80::/10, fd00:ec2::254), the etcd endpoints and the admin listener.
    #[arg(long, env = "SLUICE_UPSTREAM_DENY", value_delimiter = ',')]
    upstream_deny: Vec<String>,
    /// Address blocks upstream nodes may be in even when denied (comma-separated).
    #[arg(long, env = "SLUICE_UPSTREAM_ALLOW", value_delimiter = ',')]
    upstream_allow: Vec<String>,
    /// CA bundle (PEM) trusted, besides the system's, by `https` upstreams that set `tls.verify`.
    #[arg(long, env = "SLUICE_UPSTREAM_CA_FILE")]
    upstream_ca_file: Option<std::path::PathBuf>,
    /// The key prefix the configuration lives under.
    #[arg(long, env = "SLUICE_ETCD_PREFIX", default_value = sluice_model::DEFAULT_PREFIX)]
    etcd_prefix: String,
    /// Address of the proxy listener.
    #[arg(long, env = "SLUICE_HTTP_ADDR", default_value = "0.0.0.0:9080")]
    http_addr: SocketAddr,
    /// Address of the HTTPS proxy listener (certificates from the ssls in etcd, chosen by SNI); `off` for none.
    #[arg(long, env = "SLUICE_HTTPS_ADDR", default_value = "0.0.0.0:9443")]
    https_addr: String,
    /// The port clients reach HTTPS on, named by redirects to HTTPS (behind a Service mapping 443 to the
    /// listener, 443); default: the HTTPS listener's port.
    #[arg(long, env = "SLUICE_HTTPS_PUBLIC_PORT")]
    https_public_port: Option<u16>,
    /// The id of the ssl object served to clients whose server name matches no other ssl (or who send none);
    /// without one, such handshakes are refused.
    #[arg(long, env = "SLUICE_DEFAULT_SSL")]
    default_ssl: Option<String>,
    /// Address of the admin listener (/healthz, /readyz, /metrics).
    #[arg(long, env = "SLUICE_ADMIN_ADDR", default_value = "127.0.0.1:9091")]
    admin_addr: SocketAddr,
    /// A file holding the token the admin listener requires (`Authorization: Bearer`) for everything but
    /// /healthz and /readyz; read on each request, so a rotated Secret takes effect without a restart.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<std::path::PathBuf>,
    /// The keyring file (`<id> <base64 key>` lines, the current key first) consumers' sealed credentials are
    /// opened with; read again when a credential names a key it lacks.
    #[arg(long, env = "SLUICE_CREDENTIAL_KEYRING")]
    credential_keyring: Option<std::path::PathBuf>,
    /// Tokio worker threads; defaults to the number of cores.
    #[arg(long, env = "SLUICE_WORKERS")]
    workers: Option<usize>,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG wins when set.
    #[arg(long, env = "SLUICE_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// The plugins this data plane runs, comma-separated (APISIX's `plugins` list); default: all. A route using
    /// another answers 503.
    #[arg(long, env = "SLUICE_PLUGINS", value_delimiter = ',')]
    plugins: Option<Vec<String>>,
    /// Writes an access log, one JSON object per request: `stdout` or a file path.
    #[arg(long, env = "SLUICE_ACCESS_LOG")]
    access_log: Option<String>,
    /// The fields of each access log line, comma-separated (log variables such as status, route_id,
    /// request_time, upstream_addr, consumer_name, http_user_agent).
    #[arg(long, env = "SLUICE_ACCESS_LOG_FIELDS", value_delimiter = ',')]
    access_log_fields: Option<Vec<String>>,
    /// Seconds in-flight requests may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "SLUICE_SHUTDOWN_GRACE", default_value_t = 10.0)]
    shutdown_grace: f64,
    /// Seconds after SIGTERM/SIGINT during which /readyz fails while the listeners still accept, before they close
    /// (endpoint removal takes time to reach kube-proxy and load balancers; the chart's preStop sleep does the
    /// same before the signal).
    #[arg(long, env = "SLUICE_DRAIN_DELAY", default_value_t = 0.0)]
    drain_delay: f64,
    /// The largest request head in bytes (request line and header fields; HTTP/2's header list), at least 8192;
    /// larger is answered 431.
    #[arg(long, env = "SLUICE_MAX_HEADER_BYTES", default_value_t = 65_536)]
    max_header_bytes: usize,
    /// The most header fields in one request; more is answered 431.
    #[arg(long, env = "SLUICE_MAX_HEADERS", default_value_t = 100)]
    max_headers: usize,
    /// The longest request target (path and query) in bytes; longer is answered 414.
    #[arg(long, env = "SLUICE_MAX_URI_BYTES", default_value_t = 8192)]
    max_uri_bytes: usize,
    /// The largest request body in bytes (declared by Content-Length, or counted as a chunked body arrives);
    /// larger is answered 413. 0: no limit (APISIX's default).
    #[arg(long, env = "SLUICE_MAX_BODY_BYTES", default_value_t = 0)]
    max_body_bytes: u64,
    /// Seconds a client may take to send a request head; also how long an idle keep-alive connection is kept.
    #[arg(long, env = "SLUICE_CLIENT_HEADER_TIMEOUT", default_value_t = 30.0)]
    client_header_timeout: f64,
    /// Seconds a client may pause while sending a request body; longer is answered 408 (not counted against the
    /// node).
    #[arg(long, env = "SLUICE_CLIENT_BODY_TIMEOUT", default_value_t = 60.0)]
    client_body_timeout: f64,
    /// Every connection to the proxy listeners starts with a PROXY protocol header (v1 or v2) from a load balancer,
    /// which gives the client's address; connections without one are closed. Only behind such a balancer.
    #[arg(long, env = "SLUICE_PROXY_PROTOCOL")]
    proxy_protocol: bool,
    /// Client connections served at once per proxy listener; beyond, new connections wait to be accepted.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", default_value_t = 65_536)]
    max_connections: usize,
    /// This data plane's id in etcd's registry of live data planes (`<prefix>/data_plane/server_info/<id>`);
    /// default: the host name (in Kubernetes, the pod's) and the process id.
    #[arg(long, env = "SLUICE_NODE_ID")]
    node_id: Option<String>,
    /// Seconds a data plane's registration outlives its last renewal (a data plane that dies still counts this
    /// long in cluster-wide limits; one that shuts down leaves at once).
    #[arg(long, env = "SLUICE_REGISTRATION_TTL", default_value_t = 15)]
    registration_ttl: u64,
    /// The zone this data plane runs in (the chart sets the node's topology.kubernetes.io/zone): upstream nodes in
    /// the same zone (from their EndpointSlices) are preferred while any of them is healthy.
    #[arg(long, env = "SLUICE_ZONE")]
    zone: Option<String>,
    /// Keeps the last known good configuration in this file, and starts from it when etcd cannot be reached at
    /// start (the chart mounts an emptyDir there).
    #[arg(long, env = "SLUICE_SNAPSHOT_FILE")]
    snapshot_file: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&args.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    // One worker needs no work stealing: a current-thread runtime skips the multi-thread scheduler's atomics,
    // shared queues and parking, which cost measurably per request.
    let mut runtime = match args.workers {
        Some(1) | Some(0) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            rt.worker_threads(workers);
            rt
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = runtime.enable_all().build().context("starting the tokio runtime")?;
    let grace =
        Duration::try_from_secs_f64(args.shutdown_grace).context("--shutdown-grace must be seconds, 0 or more")?;
    let drain_delay =
        Duration::try_from_secs_f64(args.drain_delay).context("--drain-delay must be seconds, 0 or more")?;
    let etcd_tls = sluice_etcd::TlsFiles { ca: args.etcd_ca_file, cert: args.etcd_cert_file, key: args.etcd_key_file }
        .options()
        .context("etcd TLS settings")?;
    let plugins = match &args.plugins {
        None => sluice_dataplane::plugins::Enabled::all(),
        Some(names) => sluice_dataplane::plugins::Enabled::only(names.iter().map(String::as_str))
            .map_err(anyhow::Error::msg)
            .context("--plugins")?,
    };
    let access_log = args.access_log.as_deref().map(|target| AccessLog {
        target: if target == "stdout" { Target::Stdout } else { Target::File(target.into()) },
        fields: args
            .access_log_fields
            .clone()
            .unwrap_or_else(|| DEFAULT_FIELDS.iter().map(|f| f.to_string()).collect()),
    });
    let https_addr = match args.https_addr.as_str() {
        "off" | "" => None,
        addr => Some(addr.parse::<SocketAddr>().context("--https-addr must be host:port or off")?),
    };
    let limits = sluice_dataplane::listener::Limits {
        max_header_bytes: args.max_header_bytes.max(sluice_dataplane::listener::limits::MIN_HEADER_BYTES),
        max_headers: args.max_headers,
        max_uri_bytes: args.max_uri_bytes,
        max_body_bytes: (args.max_body_bytes > 0).then_some(args.max_body_bytes),
        header_timeout: Duration::try_from_secs_f64(args.client_header_timeout)
            .ok()
            .filter(|t| !t.is_zero())
            .context("--client-header-timeout must be a positive number of seconds")?,
        body_timeout: Duration::try_from_secs_f64(args.client_body_timeout)
            .ok()
            .filter(|t| !t.is_zero())
            .context("--client-body-timeout must be a positive number of seconds")?,
        max_connections: args.max_connections.max(1),
    };
    if let Some(id) = &args.node_id {
        sluice_model::data_plane::check_id(id).context("--node-id")?;
    }
    let opts = Options {
        node_id: args.node_id,
        registration_ttl: Duration::from_secs(args.registration_ttl.max(2)),
        zone: args.zone.filter(|z| !z.is_empty()),
        snapshot_file: args.snapshot_file,
        limits,
        proxy_protocol: args.proxy_protocol,
        https_addr,
        https_public_port: args.https_public_port,
        default_ssl: args.default_ssl,
        access_log,
        plugins,
        etcd_tls,
        etcd_endpoints: args.etcd_endpoints,
        etcd_timeouts: sluice_dataplane::source::EtcdTimeouts {
            dial: Duration::from_millis(args.etcd_dial_timeout_ms.max(1)),
            request: Duration::from_millis(args.etcd_request_timeout_ms.max(1)),
            keep_alive_interval: Duration::from_millis(args.etcd_keepalive_interval_ms.max(1)),
            keep_alive_timeout: Duration::from_millis(args.etcd_keepalive_timeout_ms.max(1)),
        },
        etcd_prefix: args.etcd_prefix,
        http_addr: args.http_addr,
        admin_addr: args.admin_addr,
        grace,
        drain_delay,
        upstream_ca_file: args.upstream_ca_file,
        upstream_deny: args.upstream_deny,
        upstream_allow: args.upstream_allow,
        admin_token_file: args.admin_token_file,
        credential_keyring: args.credential_keyring,
    };
    runtime.block_on(sluice_dataplane::run(opts, shutdown_signal()))?;
    Ok(())
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
