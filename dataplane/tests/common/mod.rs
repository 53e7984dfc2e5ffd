//! Helpers shared by the integration tests: a data plane started in-process against a real etcd.

#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sluice_dataplane::{Dataplane, Options};
use sluice_testkit::{eventually, get};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// How long a change may take to show.
pub const SETTLE: Duration = Duration::from_secs(8);

/// Options for a data plane on free loopback ports against `endpoint`; with `https`, an HTTPS listener too.
pub fn loopback(endpoint: &str, https: bool) -> Options {
    Options {
        etcd_endpoints: vec![endpoint.to_string()],
        http_addr: "127.0.0.1:0".parse().unwrap(),
        https_addr: https.then(|| "127.0.0.1:0".parse().unwrap()),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        grace: Duration::from_secs(2),
        ..Options::default()
    }
}

/// Starts a data plane on loopback ports against `endpoint`.
pub async fn dataplane(endpoint: &str) -> Dataplane {
    sluice_dataplane::start(loopback(endpoint, false)).await.unwrap()
}

/// Starts a data plane and waits until it has synced.
pub async fn ready_dataplane(endpoint: &str) -> Dataplane {
    let dp = dataplane(endpoint).await;
    assert!(eventually(SETTLE, || async { dp.is_ready() }).await, "data plane never became ready");
    dp
}

pub async fn put(client: &mut etcd_client::Client, key: &str, value: Value) {
    client.put(key, value.to_string(), None).await.unwrap();
}

pub async fn put_raw(client: &mut etcd_client::Client, key: &str, value: &str) {
    client.put(key, value, None).await.unwrap();
}

pub async fn delete(client: &mut etcd_client::Client, key: &str) {
    client.delete(key, None).await.unwrap();
}

/// Waits until `GET host path` is answered by the echo backend `backend` (or, with `None`, gets a 404).
pub async fn wait_served(addr: SocketAddr, host: &str, path: &str, backend: Option<&str>) -> bool {
    eventually(SETTLE, || async {
        match get(addr, host, path).await {
            Ok(reply) => match backend {
                Some(b) => reply.backend().as_deref() == Some(b),
                None => reply.status == 404,
            },
            Err(_) => false,
        }
    })
    .await
}

/// The value of one sample in `/metrics`, e.g. `sluice_config_rejected_total{kind="route"}`.
pub async fn metric(admin: SocketAddr, sample: &str) -> Option<f64> {
    let reply = get(admin, "localhost", "/metrics").await.ok()?;
    reply.body.lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A TCP forwarder between the data plane and etcd that the test can cut: while closed it drops every
/// connection, so the data plane sees etcd as unreachable while the test still talks to etcd directly.
pub struct Gate {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Gate {
    pub async fn start(target: String) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = target.trim_start_matches("http://").to_string();
        let open = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = tokio::spawn({
            let (open, links) = (open.clone(), links.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let target = target.clone();
                    let link = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    links.lock().unwrap().push(link.abort_handle());
                }
            }
        })
        .abort_handle();
        Gate { addr, open, links, accept }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every open connection and refuses new ones.
    pub fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.accept.abort();
        self.close();
    }
}
