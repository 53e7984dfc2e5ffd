//! The whole sluice stack on one machine: a real etcd, the controller binary in manifest-directory mode, the
//! data plane binary, wired together on loopback. Used by the end-to-end tests and by `sluice-stack`, the
//! local stack of the README.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
    /// Its configuration.
    pub config: StackConfig,
}

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
        let etcd = Etcd::start_on(config.etcd_ports.0, config.etcd_ports.1).await.context("starting etcd")?;
        let endpoint = etcd.endpoint();
        let controller = spawn(
            "sluice-controller",
            &[
                format!("--manifests={}", config.manifests.display()),
                format!("--etcd-endpoints={endpoint}"),
                format!("--admin-addr=127.0.0.1:{}", config.controller_admin_port),
                "--publish-status-address=127.0.0.1".to_string(),
                "--debounce-ms=50".to_string(),
            ],
            &config.log_dir,
        )?;
        let dataplane = spawn(
            "sluice-dataplane",
            &[
                format!("--etcd-endpoints={endpoint}"),
                format!("--http-addr=127.0.0.1:{}", config.http_port),
                format!("--https-addr=127.0.0.1:{}", config.https_port),
                format!("--admin-addr=127.0.0.1:{}", config.dataplane_admin_port),
            ],
            &config.log_dir,
        )?;
        let stack = Stack { etcd, controller, dataplane, config };
        stack.wait_ready(Duration::from_secs(30)).await?;
        Ok(stack)
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
