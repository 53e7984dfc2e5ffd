//! A real Redis server (Debian's `redis-server`, which `scripts/setup.sh tests` installs) on a free loopback port,
//! without persistence, a one-node Redis cluster, and a Sentinel watching a server. Commands go over a plain RESP connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::process::Child;

/// A running `redis-server`; killed when dropped.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    sentinel_of: Option<u16>,
    cluster: bool,
    /// Listening on TLS only (the testkit's server certificate), on `port`.
    tls: bool,
}

/// The `redis-server` binary: `$SLUICE_REDIS_BIN`, else `redis-server` on PATH.
fn binary() -> String {
    std::env::var("SLUICE_REDIS_BIN").unwrap_or_else(|_| "redis-server".into())
}

impl Redis {
    /// A server not started yet, in a directory of its own.
    fn new(port: u16, sentinel_of: Option<u16>, cluster: bool, tls: bool) -> anyhow::Result<Redis> {
        Ok(Redis { child: None, port, dir: tempfile::tempdir()?, sentinel_of, cluster, tls })
    }

    /// Starts a server on a free port and waits until it answers `PING`.
    pub async fn start() -> anyhow::Result<Redis> {
        let mut last = None;
        for _ in 0..3 {
            let mut redis = Redis::new(crate::free_port(), None, false, false)?;
            match redis.spawn().await {
                Ok(()) => return Ok(redis),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    /// Starts a server on `port` and waits until it answers; fails if the port is taken.
    pub async fn start_on(port: u16) -> anyhow::Result<Redis> {
        let mut redis = Redis::new(port, None, false, false)?;
        redis.spawn().await?;
        Ok(redis)
    }

    /// Starts a Sentinel that monitors the server on `master_port` under the name `master`.
    pub async fn sentinel(master_port: u16) -> anyhow::Result<Redis> {
        let mut redis = Redis::new(crate::free_port(), Some(master_port), false, false)?;
        redis.spawn().await?;
        Ok(redis)
    }

    /// Starts a Redis cluster of one node that serves every slot, and waits until the cluster is up.
    pub async fn cluster() -> anyhow::Result<Redis> {
        let mut redis = Redis::new(crate::free_port(), None, true, false)?;
        redis.spawn().await?;
        redis.command(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !redis.command(&["CLUSTER", "INFO"])?.contains("cluster_state:ok") {
            if std::time::Instant::now() > deadline {
                bail!("the one-node Redis cluster did not come up within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(redis)
    }

    /// Starts a server that speaks TLS only (the testkit's certificate for `localhost` and 127.0.0.1, signed by
    /// [`crate::CA_PEM`]), without client certificates. [`Redis::command`] does not work on it.
    pub async fn start_tls() -> anyhow::Result<Redis> {
        let mut redis = Redis::new(crate::free_port(), None, false, true)?;
        redis.spawn().await?;
        Ok(redis)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (as a crash would: no shutdown).
    pub fn kill(&mut self) {
        self.child = None;
    }

    /// Starts it again on the same port (empty: nothing is persisted).
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        self.spawn().await
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(binary());
        match self.sentinel_of {
            None if self.tls => {
                let (cert, key) = (self.dir.path().join("server.crt"), self.dir.path().join("server.key"));
                std::fs::write(&cert, crate::SERVER_CERT_PEM)?;
                std::fs::write(&key, crate::SERVER_KEY_PEM)?;
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string(), "--tls-auth-clients", "no"]);
                cmd.arg("--tls-cert-file").arg(&cert).arg("--tls-key-file").arg(&key);
                cmd.args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]);
            }
            None => {
                cmd.arg("--port").arg(self.port.to_string()).args(["--save", "", "--appendonly", "no"]);
                cmd.args(["--bind", "127.0.0.1"]);
                if self.cluster {
                    cmd.args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]);
                }
            }
            Some(master) => {
                // A Sentinel rewrites its file, so it gets one of its own.
                let conf = self.dir.path().join("sentinel.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "port {}\nbind 127.0.0.1\nsentinel monitor master 127.0.0.1 {master} 1\n\
                         sentinel down-after-milliseconds master 1000\n",
                        self.port
                    ),
                )?;
                cmd.arg(&conf).arg("--sentinel");
            }
        }
        cmd.current_dir(self.dir.path()).stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = Child::spawn("redis-server", cmd).context("starting redis-server (scripts/setup.sh tests)")?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.exited() {
                bail!("redis-server exited at start: {status}");
            }
            // A TLS server is up once it accepts connections; the others once they answer.
            let up = if self.tls {
                std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            } else {
                self.command(&["PING"]).is_ok_and(|r| r == "PONG")
            };
            if up {
                self.child = Some(child);
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("redis-server on port {} did not answer within 10 s", self.port);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs one command and returns its answer as text (an integer as digits, an array as its items joined by
    /// newlines, nil as the empty string); an error answer is an error.
    pub fn command(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(out.as_bytes())?;
        read_value(&mut BufReader::new(stream))
    }
}

fn read_value(r: &mut BufReader<TcpStream>) -> anyhow::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end();
    let (kind, rest) = line.split_at(line.len().min(1));
    Ok(match kind {
        "+" | ":" => rest.to_string(),
        "-" => bail!("redis: {rest}"),
        "$" => {
            let Ok(len) = rest.parse::<usize>() else { return Ok(String::new()) };
            let mut buf = vec![0; len + 2];
            r.read_exact(&mut buf)?;
            String::from_utf8_lossy(&buf[..len]).into_owned()
        }
        "*" => {
            let n = rest.parse::<i64>().unwrap_or(0).max(0);
            let mut items = Vec::new();
            for _ in 0..n {
                items.push(read_value(r)?);
            }
            items.join("\n")
        }
        _ => bail!("redis: unexpected answer {line:?}"),
    })
}
