//! Real parts for sluice's tests: an etcd server, a Redis server, echo backends, an HTTP client, and child processes that are
//! stopped when dropped. Nothing here is a stand-in: etcd is the real binary, backends are real sockets.

mod echo;
mod etcd;
mod gate;
pub mod grpc;
mod http;
mod process;
mod redis;
mod tls;
mod tls_client;

pub use echo::EchoServer;
pub use etcd::{Etcd, EtcdCluster, EtcdTls};
pub use gate::Gate;
pub use grpc::GrpcEchoServer;
pub use http::{Reply, get, request};
pub use process::{Child, workspace_bin};
pub use redis::Redis;
pub use tls::{
    CA_PEM, CLIENT_CERT_PEM, CLIENT_KEY_PEM, ClientAuth, OTHER_CA_PEM, SERVER_CERT_PEM, SERVER_KEY_PEM, TlsEchoServer,
};
pub use tls_client::{TlsClient, TlsClientOptions, TlsConnection};

use std::future::Future;
use std::net::TcpListener;
use std::time::Duration;

/// A TCP port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind 127.0.0.1:0")
}

/// Polls `check` every 20 ms until it returns true or `within` passes; returns whether it ever did.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
