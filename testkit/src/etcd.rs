//! A real etcd server in a temporary directory, on free loopback ports.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::process::Child;

/// A running etcd; killed (and its data removed) when dropped.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    tls: Option<EtcdTls>,
}

/// The files of an etcd that serves clients over TLS and requires their certificates: the CA that signed the
/// server's and the client's certificates (the fixtures of [`crate::tls`]), and the client's certificate and key.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The CA bundle clients verify the server against (PEM).
    pub ca: PathBuf,
    /// A client certificate etcd accepts (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl EtcdTls {
    fn write(dir: &std::path::Path) -> anyhow::Result<EtcdTls> {
        let file = |name: &str, pem: &str| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, pem)?;
            Ok(path)
        };
        Ok(EtcdTls {
            ca: file("ca.crt", crate::tls::CA_PEM)?,
            cert: file("client.crt", crate::tls::CLIENT_CERT_PEM)?,
            key: file("client.key", crate::tls::CLIENT_KEY_PEM)?,
            server_cert: file("server.crt", crate::tls::SERVER_CERT_PEM)?,
            server_key: file("server.key", crate::tls::SERVER_KEY_PEM)?,
        })
    }

    /// Client options that present the client certificate and trust the CA.
    pub fn options(&self) -> anyhow::Result<etcd_client::ConnectOptions> {
        let identity = etcd_client::Identity::from_pem(std::fs::read(&self.cert)?, std::fs::read(&self.key)?);
        let ca = etcd_client::Certificate::from_pem(std::fs::read(&self.ca)?);
        let tls = etcd_client::TlsOptions::new().ca_certificate(ca).identity(identity);
        Ok(etcd_client::ConnectOptions::new().with_tls(tls))
    }
}

/// The etcd binary: `$SLUICE_ETCD_BIN`, else the one the `etcd-bin-vendored` crate ships, else `etcd` on PATH.
pub fn etcd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_ETCD_BIN") {
        return path.into();
    }
    match etcd_bin_vendored::etcd_bin_path() {
        Ok(path) => path.to_path_buf(),
        Err(_) => "etcd".into(),
    }
}

impl Etcd {
    /// Starts etcd on free ports and waits until it answers. A port found free can be taken by another test
    /// before etcd binds it; etcd then exits at once, and is started again on other ports.
    pub async fn start() -> anyhow::Result<Etcd> {
        let mut last = None;
        for _ in 0..3 {
            match Etcd::start_on(crate::free_port(), crate::free_port()).await {
                Ok(etcd) => return Ok(etcd),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("etcd did not start")))
    }

    /// Starts etcd on the given loopback ports and waits until it answers.
    pub async fn start_on(client_port: u16, peer_port: u16) -> anyhow::Result<Etcd> {
        Etcd::start_with(client_port, peer_port, false).await
    }

    /// Starts etcd on the given loopback ports serving clients over TLS with client certificate authentication
    /// (`--client-cert-auth`), and waits until it answers; [`Etcd::tls`] has the files clients need.
    pub async fn start_tls_on(client_port: u16, peer_port: u16) -> anyhow::Result<Etcd> {
        Etcd::start_with(client_port, peer_port, true).await
    }

    async fn start_with(client_port: u16, peer_port: u16, tls: bool) -> anyhow::Result<Etcd> {
        let dir = tempfile::tempdir()?;
        let tls = if tls { Some(EtcdTls::write(dir.path())?) } else { None };
        let mut etcd = Etcd { child: None, dir, client_port, peer_port, tls };
        etcd.spawn().await?;
        Ok(etcd)
    }

    /// The client endpoint, `http://127.0.0.1:<port>` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The files TLS clients need, when it serves TLS.
    pub fn tls(&self) -> Option<&EtcdTls> {
        self.tls.as_ref()
    }

    /// A connected client (with the client certificate when it serves TLS).
    pub async fn client(&self) -> anyhow::Result<etcd_client::Client> {
        let options = self.tls.as_ref().map(EtcdTls::options).transpose()?;
        Ok(etcd_client::Client::connect([self.endpoint()], options).await?)
    }

    /// Kills the server; its data stays so that [`Etcd::resume`] brings the same state back.
    pub fn kill(&mut self) {
        self.child = None;
    }

    /// Starts the server again on the same ports with the same data.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        self.spawn().await
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(etcd_binary());
        cmd.arg("--name=test")
            .arg(format!("--data-dir={}", self.dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
        }
        let child = Child::spawn("etcd", cmd).context("starting etcd (set SLUICE_ETCD_BIN to override)")?;
        self.child = Some(child);
        for _ in 0..500 {
            if let Some(status) = self.child.as_mut().and_then(Child::exited) {
                bail!("etcd exited at start ({status}); port {} or {} may be taken", self.client_port, self.peer_port)
            }
            if let Ok(mut c) = self.client().await
                && c.status().await.is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        bail!("etcd did not answer on {client} within 20 s")
    }
}

/// One member of an [`EtcdCluster`].
struct Member {
    name: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

impl Member {
    fn client(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// A real etcd cluster of several members on loopback, each of which can be killed and resumed with its data.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial: String,
}

impl EtcdCluster {
    /// Starts `n` members on free ports and waits until every one answers and the cluster takes a write.
    pub async fn start(n: usize) -> anyhow::Result<EtcdCluster> {
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            members.push(Member {
                name: format!("m{i}"),
                child: None,
                dir: tempfile::tempdir()?,
                client_port: crate::free_port(),
                peer_port: crate::free_port(),
            });
        }
        let initial = members.iter().map(|m| format!("{}={}", m.name, m.peer())).collect::<Vec<_>>().join(",");
        let mut cluster = EtcdCluster { members, initial };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        for i in 0..n {
            cluster.wait(i).await?;
        }
        let mut client = cluster.client().await?;
        client.put("/testkit/ready", "1", None).await.context("the new cluster takes no write")?;
        Ok(cluster)
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client).collect()
    }

    /// A client of every member.
    pub async fn client(&self) -> anyhow::Result<etcd_client::Client> {
        Ok(etcd_client::Client::connect(self.endpoints(), None).await?)
    }

    /// Kills member `i` (its data stays for [`EtcdCluster::resume`]).
    pub fn kill(&mut self, i: usize) {
        self.members[i].child = None;
    }

    /// Starts the given members again with their data, and waits until each answers (which needs a quorum of
    /// members up, those resumed here included).
    pub async fn resume(&mut self, members: &[usize]) -> anyhow::Result<()> {
        for &i in members {
            self.spawn(i)?;
        }
        for &i in members {
            self.wait(i).await?;
        }
        Ok(())
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &self.members[i];
        let mut cmd = Command::new(etcd_binary());
        cmd.arg(format!("--name={}", m.name))
            .arg(format!("--data-dir={}", m.dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={}", m.client()))
            .arg(format!("--advertise-client-urls={}", m.client()))
            .arg(format!("--listen-peer-urls={}", m.peer()))
            .arg(format!("--initial-advertise-peer-urls={}", m.peer()))
            .arg(format!("--initial-cluster={}", self.initial))
            .arg("--initial-cluster-token=testkit")
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = Child::spawn("etcd", cmd).context("starting an etcd member")?;
        self.members[i].child = Some(child);
        Ok(())
    }

    async fn wait(&mut self, i: usize) -> anyhow::Result<()> {
        let client = self.members[i].client();
        for _ in 0..750 {
            if let Some(status) = self.members[i].child.as_mut().and_then(Child::exited) {
                bail!("etcd member {i} exited at start ({status})");
            }
            // A member answers status once it has a leader: only then can it serve reads and writes.
            if let Ok(mut c) = etcd_client::Client::connect([client.as_str()], None).await
                && c.status().await.is_ok_and(|s| s.leader() != 0)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        bail!("etcd member {i} did not answer on {client} within 30 s")
    }
}
