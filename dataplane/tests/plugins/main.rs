#![allow(missing_docs)]
//! Black-box tests of every plugin through the real data plane and a real etcd, one module per plugin, with
//! APISIX's documented answers (its `t/plugin/<name>.t` cases are the specification).

#[path = "../common/mod.rs"]
mod common;

mod basic_auth;
mod breaker;
mod compression;
mod cors;
mod forward_auth;
mod hmac_auth;
mod jwt_auth;
mod key_auth;
mod limits;
mod mirror;
mod observability;
mod prometheus;
mod proxy_rewrite;
mod redis_limits;
mod restrictions;
mod runtime;
mod traffic_split;
mod transforms;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use sluice_testkit::{EchoServer, Etcd, Reply, eventually, get, request};

/// A data plane on a real etcd with one echo backend behind upstream `u`.
pub struct Stack {
    _etcd: Etcd,
    pub client: etcd_client::Client,
    pub dp: sluice_dataplane::Dataplane,
    pub echo: EchoServer,
    /// The backend of the marker routes [`Stack::sync`] writes, so no other route can answer for them.
    marker: EchoServer,
    marks: AtomicU64,
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::with(sluice_dataplane::plugins::Enabled::all()).await
    }

    /// A stack whose data plane runs only `enabled`.
    pub async fn with(enabled: sluice_dataplane::plugins::Enabled) -> Stack {
        Stack::with_options(enabled, None).await
    }

    /// A stack whose data plane writes `log`.
    pub async fn with_access_log(log: sluice_dataplane::plugins::access_log::AccessLog) -> Stack {
        Stack::with_options(sluice_dataplane::plugins::Enabled::all(), Some(log)).await
    }

    async fn with_options(
        enabled: sluice_dataplane::plugins::Enabled,
        access_log: Option<sluice_dataplane::plugins::access_log::AccessLog>,
    ) -> Stack {
        if std::env::var_os("SLUICE_TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt().with_env_filter("sluice_dataplane=debug").try_init();
        }
        let etcd = Etcd::start().await.unwrap();
        let mut client = etcd.client().await.unwrap();
        let echo = EchoServer::start("echo").await.unwrap();
        let marker = EchoServer::start("marker").await.unwrap();
        let upstream = json!({"nodes": {echo.addr().to_string(): 1}});
        client.put("/sluice/upstreams/u", upstream.to_string(), None).await.unwrap();
        // Plugins calling https:// services (forward-auth, proxy-mirror) verify them against the testkit's CA.
        let ca = std::env::temp_dir().join(format!("sluice-plugins-ca-{}.crt", std::process::id()));
        std::fs::write(&ca, sluice_testkit::CA_PEM).unwrap();
        let opts = sluice_dataplane::Options {
            etcd_endpoints: vec![etcd.endpoint()],
            upstream_ca_file: Some(ca),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            grace: std::time::Duration::from_secs(1),
            plugins: enabled,
            access_log,
            ..sluice_dataplane::Options::default()
        };
        let dp = sluice_dataplane::start(opts).await.unwrap();
        assert!(eventually(common::SETTLE, || async { dp.is_ready() }).await, "data plane never became ready");
        Stack { _etcd: etcd, client, dp, echo, marker, marks: AtomicU64::new(0) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.dp.http_addr()
    }

    /// Puts `value` under `<prefix>/<key>` without waiting.
    pub async fn put(&mut self, key: &str, value: Value) {
        self.client.put(format!("/sluice/{key}"), value.to_string(), None).await.unwrap();
    }

    pub async fn delete(&mut self, key: &str) {
        self.client.delete(format!("/sluice/{key}"), None).await.unwrap();
    }

    /// Waits until everything put so far is served: a marker route written after it is answered by the marker
    /// backend (the data plane applies etcd's changes in order). With `status`, until the marker's path gets that
    /// answer instead: for changes after which every request gets the same one.
    async fn mark(&mut self, status: Option<u16>) {
        let n = self.marks.fetch_add(1, Ordering::Relaxed);
        let path = format!("/__sync/{n}");
        let upstream = json!({"nodes": {self.marker.addr().to_string(): 1}});
        self.put(&format!("routes/sync-{n}"), json!({"uri": path, "upstream": upstream})).await;
        let addr = self.addr();
        let answered = eventually(common::SETTLE, || async {
            get(addr, "sync", &path).await.is_ok_and(|r| match status {
                None => r.backend().as_deref() == Some("marker"),
                Some(code) => r.status == code,
            })
        })
        .await;
        assert!(answered, "marker {path} never answered as expected ({status:?})");
    }

    /// Waits until everything put so far is served.
    pub async fn sync(&mut self) {
        self.mark(None).await;
    }

    /// Waits until the marker's path answers `status` (a change that gives every request the same answer).
    pub async fn sync_expecting(&mut self, status: u16) {
        self.mark(Some(status)).await;
    }

    /// Puts a route (upstream `u` unless it names one) and waits until it is served.
    pub async fn route(&mut self, id: &str, mut route: Value) {
        if route.get("upstream").is_none() && route.get("upstream_id").is_none() && route.get("service_id").is_none() {
            route["upstream_id"] = json!("u");
        }
        self.put(&format!("routes/{id}"), route).await;
        self.sync().await;
    }

    pub async fn consumer(&mut self, username: &str, plugins: Value) {
        self.put(&format!("consumers/{username}"), json!({"username": username, "plugins": plugins})).await;
        self.sync().await;
    }

    pub async fn get(&self, path: &str) -> Reply {
        get(self.addr(), "x", path).await.unwrap()
    }

    /// `GET path` with `headers`.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, path, headers).await
    }

    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        request(self.addr(), method, "x", path, headers, Bytes::new()).await.unwrap()
    }

    pub async fn metric(&self, sample: &str) -> Option<f64> {
        common::metric(self.dp.admin_addr(), sample).await
    }
}

/// The request as the echo backend saw it.
pub fn upstream_saw(reply: &Reply) -> Value {
    assert_eq!(reply.status, 200, "expected the backend's answer, got {} {}", reply.status, reply.body);
    reply.json()
}
