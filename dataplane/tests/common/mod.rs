//! Helpers shared by the integration tests: a data plane started in-process against a real etcd.

#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use sluice_dataplane::{Dataplane, Options};
use sluice_testkit::{eventually, get};

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

#[allow(unused_imports)] // not every test binary cuts etcd off
pub use sluice_testkit::Gate;
