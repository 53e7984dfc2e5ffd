//! The whole sluice stack on one machine: a real etcd, the controller binary in manifest-directory mode, the
//! data plane binary, wired together on loopback. Used by the end-to-end tests and by `sluice-stack`, the
//! local stack of the README.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use sluice_testkit::{Child, Etcd, eventually, free_port, workspace_bin};

/// Ports and paths for one stack.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// The manifest directory the controller reads.
    pub manifests: PathBuf,
    /// Where the child processes write their logs.
    pub log_dir: PathBuf,
    /// etcd client and peer ports.
    pub etcd_ports: (u16, u16),
    /// The data plane's proxy port.
    pub http_port: u16,
    /// The data plane's HTTPS proxy port.
    pub https_port: u16,
    /// The data plane's admin port.
    pub dataplane_admin_port: u16,
    /// The controller's admin port.
    pub controller_admin_port: u16,
    /// Serve etcd's clients over TLS and require their certificates; both components present one.
    pub etcd_tls: bool,
    /// The credential keyring file both components get (`--credential-keyring`).
    pub keyring: Option<PathBuf>,
}

impl StackConfig {
    /// A configuration on free ports, logging into `log_dir`.
    pub fn on_free_ports(manifests: PathBuf, log_dir: PathBuf) -> StackConfig {
        StackConfig {
            manifests,
            log_dir,
            etcd_ports: (free_port(), free_port()),
            http_port: free_port(),
            https_port: free_port(),
            dataplane_admin_port: free_port(),
            controller_admin_port: free_port(),
            etcd_tls: false,
            keyring: None,
        }
    }
}

/// A running stack; every process stops when it is dropped.
pub struct Stack {
    /// The etcd server.
    pub etcd: Etcd,
    /// The controller process.
    pub controller: Child,
    /// The data plane process.
    pub dataplane: Child,
    /// The Redis of the example's Redis-backed limit, when this stack started it (another stack's may hold the
    /// port; without `redis-server` the limit counts locally, as it does whenever Redis is down).
    pub redis: Option<sluice_testkit::Redis>,
    /// Its configuration.
    pub config: StackConfig,
    /// The controller's flags, to start it again.
    controller_args: Vec<String>,
}

/// The port of the Redis that `config/examples/30-apiroute.yaml`'s `/quota` rule counts in.
pub const EXAMPLE_REDIS_PORT: u16 = 6390;

/// The path of a workspace binary, with a clear error when it has not been built.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = workspace_bin(name);
    if !path.exists() {
        bail!("{} is missing: build it first with `cargo build --workspace --bins`", path.display());
    }
    Ok(path)
}

/// Starts a workspace binary with `args`, its output going to `<log_dir>/<name>.log`.
pub fn spawn(name: &str, args: &[String], log_dir: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log_dir.join(format!("{name}.log")))?;
    let mut cmd = Command::new(binary(name)?);
    cmd.args(args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    Ok(Child::spawn(name, cmd)?)
}

impl Stack {
    /// Starts etcd, the controller and the data plane, and waits until both report ready.
    pub async fn start(config: StackConfig) -> anyhow::Result<Stack> {
        std::fs::create_dir_all(&config.log_dir)?;
        let (client_port, peer_port) = config.etcd_ports;
        let etcd = if config.etcd_tls {
            Etcd::start_tls_on(client_port, peer_port).await
        } else {
            Etcd::start_on(client_port, peer_port).await
        }
        .context("starting etcd")?;
        let endpoint = etcd.endpoint();
        // Both components take the same etcd flags.
        let mut etcd_args = vec![format!("--etcd-endpoints={endpoint}")];
        if let Some(tls) = etcd.tls() {
            etcd_args.push(format!("--etcd-ca-file={}", tls.ca.display()));
            etcd_args.push(format!("--etcd-cert-file={}", tls.cert.display()));
            etcd_args.push(format!("--etcd-key-file={}", tls.key.display()));
        }
        if let Some(keyring) = &config.keyring {
            etcd_args.push(format!("--credential-keyring={}", keyring.display()));
        }
        let controller_args = [
            format!("--manifests={}", config.manifests.display()),
            format!("--admin-addr=127.0.0.1:{}", config.controller_admin_port),
            "--publish-status-address=127.0.0.1".to_string(),
            "--debounce-ms=50".to_string(),
        ];
        let controller_args = [&etcd_args[..], &controller_args].concat();
        let controller = spawn("sluice-controller", &controller_args, &config.log_dir)?;
        let dataplane_args = [
            format!("--http-addr=127.0.0.1:{}", config.http_port),
            format!("--https-addr=127.0.0.1:{}", config.https_port),
            format!("--admin-addr=127.0.0.1:{}", config.dataplane_admin_port),
        ];
        let dataplane = spawn("sluice-dataplane", &[&etcd_args[..], &dataplane_args].concat(), &config.log_dir)?;
        let redis = sluice_testkit::Redis::start_on(EXAMPLE_REDIS_PORT).await.ok();
        let stack = Stack { etcd, controller, dataplane, redis, config, controller_args };
        stack.wait_ready(Duration::from_secs(30)).await?;
        Ok(stack)
    }

    /// Stops the controller and starts it again with the same flags (its log starts over).
    pub fn restart_controller(&mut self) -> anyhow::Result<()> {
        // Stopped first: two controllers in manifest mode would both write.
        self.controller.stop();
        self.controller = spawn("sluice-controller", &self.controller_args, &self.config.log_dir)?;
        Ok(())
    }

    /// The data plane's proxy address.
    pub fn http(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.config.http_port))
    }

    /// The data plane's HTTPS proxy address.
    pub fn https(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.config.https_port))
    }

    /// Waits until the controller has synced and the data plane has loaded its configuration.
    pub async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        for (what, port) in
            [("controller", self.config.controller_admin_port), ("data plane", self.config.dataplane_admin_port)]
        {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let ready = eventually(within, || async move {
                sluice_testkit::get(addr, "localhost", "/readyz").await.is_ok_and(|r| r.status.is_success())
            })
            .await;
            if !ready {
                bail!("{what} did not become ready within {within:?}; logs:\n{}", self.logs());
            }
        }
        Ok(())
    }

    /// The contents of every process log, for failure messages.
    pub fn logs(&self) -> String {
        ["sluice-controller", "sluice-dataplane"]
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.config.log_dir.join(format!("{name}.log"))).unwrap_or_default();
                format!("===== {name} =====\n{text}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// One process's log.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.config.log_dir.join(format!("{name}.log"))).unwrap_or_default()
    }
}

/// A bounded load loop: requests sent through the data plane (`GET /x`, a new connection each) by a few
/// clients until stopped, and those that did not answer 200.
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    first_failures: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Two clients, each sending `GET /x` one after another with a short pause (a bounded load: a few hundred
    /// requests a second, so that etcd's members keep their heartbeats on two cores).
    pub fn start(addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let first_failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..2)
            .map(|_| {
                let (stop, sent, failed, first) = (stop.clone(), sent.clone(), failed.clone(), first_failures.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let answer =
                            tokio::time::timeout(Duration::from_secs(5), sluice_testkit::get(addr, "load", "/x")).await;
                        sent.fetch_add(1, Ordering::Relaxed);
                        let what = match answer {
                            Ok(Ok(r)) if r.status == 200 => None,
                            Ok(Ok(r)) => Some(format!("status {}", r.status)),
                            Ok(Err(e)) => Some(format!("error {e}")),
                            Err(_) => Some("no answer within 5 s".to_string()),
                        };
                        if let Some(what) = what {
                            failed.fetch_add(1, Ordering::Relaxed);
                            let mut first = first.lock().unwrap();
                            if first.len() < 5 {
                                first.push(what);
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(4)).await;
                    }
                })
            })
            .collect();
        Load { stop, sent, failed, first_failures, tasks }
    }

    /// Asserts that nothing failed so far, naming the phase.
    pub fn none_failed(&self, phase: &str) {
        let (sent, failed) = (self.sent.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed));
        let first = self.first_failures.lock().unwrap().clone();
        assert_eq!(failed, 0, "{phase}: {failed} of {sent} requests failed, first: {first:?}");
        eprintln!("{phase}: {sent} requests so far, none failed");
    }

    /// Stops the clients; returns how many requests were sent.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        self.sent.load(Ordering::Relaxed)
    }
}
