//! The admin listener with `admin_token_file`: the probes answer anyone, `/metrics` only the token's holder, and
//! a rotated token takes effect at once.

mod common;

use common::*;
use sluice_testkit::{Etcd, get, request};

/// `GET /metrics` with `authorization`.
async fn metrics(admin: std::net::SocketAddr, authorization: &str) -> sluice_testkit::Reply {
    let headers = [("authorization", authorization)];
    request(admin, http::Method::GET, "localhost", "/metrics", &headers, bytes::Bytes::new()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_token_and_probes_do_not() {
    let etcd = Etcd::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first-token\n").unwrap();
    let opts = sluice_dataplane::Options { admin_token_file: Some(token.clone()), ..loopback(&etcd.endpoint(), false) };
    let dp = sluice_dataplane::start(opts).await.unwrap();
    assert!(sluice_testkit::eventually(SETTLE, || async { dp.is_ready() }).await);
    let admin = dp.admin_addr();

    assert_eq!(get(admin, "localhost", "/healthz").await.unwrap().status, 200);
    assert_eq!(get(admin, "localhost", "/readyz").await.unwrap().status, 200);
    let refused = get(admin, "localhost", "/metrics").await.unwrap();
    assert_eq!(refused.status, 401);
    assert_eq!(refused.headers["www-authenticate"], "Bearer");
    assert!(!refused.body.contains("sluice_"), "no metric leaks: {}", refused.body);
    assert_eq!(metrics(admin, "Bearer nope").await.status, 401);
    let right = metrics(admin, "Bearer first-token").await;
    assert_eq!(right.status, 200);
    assert!(right.body.contains("sluice_"));

    // A rotated Secret: the new token works and the old one no longer does, without a restart.
    std::fs::write(&token, "second-token").unwrap();
    assert_eq!(metrics(admin, "Bearer first-token").await.status, 401);
    assert_eq!(metrics(admin, "Bearer second-token").await.status, 200);

    // A token file that is gone refuses everything but the probes.
    std::fs::remove_file(&token).unwrap();
    assert_eq!(metrics(admin, "Bearer second-token").await.status, 401);
    assert_eq!(get(admin, "localhost", "/healthz").await.unwrap().status, 200);
    dp.shutdown().await;
}
