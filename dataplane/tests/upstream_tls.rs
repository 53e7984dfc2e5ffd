//! `scheme: https` upstreams against real TLS backends: certificate verification on and off, SNI, client
//! certificates (upstream mutual TLS), connection reuse, and bad `tls` settings rejected alone.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use sluice_dataplane::{Dataplane, Options};
use sluice_testkit::{
    CA_PEM, CLIENT_CERT_PEM, CLIENT_KEY_PEM, ClientAuth, Etcd, OTHER_CA_PEM, TlsEchoServer, eventually, get,
};

/// A data plane whose `tls.verify` trusts the system's CAs plus `ca` (written to a file, as an operator would).
async fn dataplane_trusting(etcd: &Etcd, ca: &str) -> (Dataplane, tempfile::NamedTempFile) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), ca).unwrap();
    let opts = Options {
        etcd_endpoints: vec![etcd.endpoint()],
        http_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        grace: Duration::from_secs(2),
        upstream_ca_file: Some(file.path().to_path_buf()),
        ..Options::default()
    };
    let dp = sluice_dataplane::start(opts).await.unwrap();
    assert!(eventually(SETTLE, || async { dp.is_ready() }).await, "data plane never became ready");
    (dp, file)
}

/// An https upstream on `server` whose nodes get `Host: backend.test` (and so SNI `backend.test`).
fn upstream(server: &TlsEchoServer, tls: Value) -> Value {
    json!({
        "scheme": "https",
        "pass_host": "rewrite",
        "upstream_host": "backend.test",
        "nodes": {server.addr().to_string(): 1},
        "tls": tls,
    })
}

/// Waits until `path` stops answering 404 (the route is in the table), then returns its status and body.
async fn routed(dp: &Dataplane, path: &str) -> (u16, Value) {
    let addr = dp.http_addr();
    assert!(
        eventually(SETTLE, || async { get(addr, "client.test", path).await.is_ok_and(|r| r.status != 404) }).await,
        "{path} never routed"
    );
    let reply = get(addr, "client.test", path).await.unwrap();
    let body = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
    (reply.status.as_u16(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_to_https_nodes_with_sni_verification_and_reuse() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let server = TlsEchoServer::start("tls-backend", ClientAuth::None).await.unwrap();
    let (dp, _ca) = dataplane_trusting(&etcd, CA_PEM).await;

    // Not verified (APISIX's default): any certificate is accepted, the name sent is the Host the node receives.
    put(&mut client, "/sluice/routes/plain", json!({"uri": "/plain", "upstream": upstream(&server, json!({}))})).await;
    let (status, body) = routed(&dp, "/plain").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backend"], "tls-backend");
    assert_eq!(body["headers"]["x-tls-sni"], "backend.test");
    assert_eq!(body["headers"]["host"], "backend.test");
    assert_eq!(body["headers"]["x-tls-client-cert"], "absent");

    // Verified against the CA the data plane was given: the certificate names backend.test.
    let verified = upstream(&server, json!({"verify": true}));
    put(&mut client, "/sluice/routes/verified", json!({"uri": "/verified", "upstream": verified})).await;
    let (status, body) = routed(&dp, "/verified").await;
    assert_eq!(status, 200, "{body}");

    // Verified, but the Host (and so the name checked) is not in the certificate: the handshake fails, 502.
    let mut wrong_name = upstream(&server, json!({"verify": true}));
    wrong_name["upstream_host"] = json!("elsewhere.test");
    put(&mut client, "/sluice/routes/wrong-name", json!({"uri": "/wrong-name", "upstream": wrong_name})).await;
    let (status, _) = routed(&dp, "/wrong-name").await;
    assert_eq!(status, 502);

    // With `pass_host: pass` the client's Host is the name sent; one that is no valid TLS name falls back to the
    // node's (an IP address here, so no name at all) instead of failing the node.
    let mut passed = upstream(&server, json!({}));
    passed["pass_host"] = json!("pass");
    put(&mut client, "/sluice/routes/passed", json!({"uri": "/passed", "upstream": passed})).await;
    let (status, body) = routed(&dp, "/passed").await;
    assert_eq!((status, &body["headers"]["x-tls-sni"]), (200, &json!("client.test")));
    let odd = get(dp.http_addr(), "a..b", "/passed").await.unwrap();
    assert_eq!(odd.status, 200, "{}", odd.body);
    assert_eq!(odd.json()["headers"]["x-tls-sni"], "-");

    // Connections are pooled: many requests, few handshakes.
    let before = server.handshakes();
    for _ in 0..30 {
        assert_eq!(get(dp.http_addr(), "client.test", "/plain").await.unwrap().status, 200);
    }
    let opened = server.handshakes() - before;
    assert!(opened <= 2, "30 sequential requests opened {opened} TLS connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_node_certificate_fails_only_when_verified() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let server = TlsEchoServer::start("tls-backend", ClientAuth::None).await.unwrap();
    // This data plane trusts a CA that did not sign the node's certificate.
    let (dp, _ca) = dataplane_trusting(&etcd, OTHER_CA_PEM).await;

    let verified = upstream(&server, json!({"verify": true}));
    put(&mut client, "/sluice/routes/verified", json!({"uri": "/verified", "upstream": verified})).await;
    let (status, body) = routed(&dp, "/verified").await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error_msg"].as_str().unwrap_or("").contains("502"), "{body}");

    put(&mut client, "/sluice/routes/plain", json!({"uri": "/plain", "upstream": upstream(&server, json!({}))})).await;
    assert_eq!(routed(&dp, "/plain").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presents_a_client_certificate_to_nodes_that_require_one() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let server = TlsEchoServer::start("mtls-backend", ClientAuth::Required).await.unwrap();
    let (dp, _ca) = dataplane_trusting(&etcd, CA_PEM).await;

    put(
        &mut client,
        "/sluice/routes/anonymous",
        json!({"uri": "/anonymous", "upstream": upstream(&server, json!({}))}),
    )
    .await;
    assert_eq!(routed(&dp, "/anonymous").await.0, 502, "the node refuses a handshake without a certificate");

    let mtls = upstream(&server, json!({"client_cert": CLIENT_CERT_PEM, "client_key": CLIENT_KEY_PEM, "verify": true}));
    put(&mut client, "/sluice/upstreams/mtls", mtls).await;
    put(&mut client, "/sluice/routes/mtls", json!({"uri": "/mtls", "upstream_id": "mtls"})).await;
    let (status, body) = routed(&dp, "/mtls").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["headers"]["x-tls-client-cert"], "present");

    // A key that does not parse rejects that upstream alone: its route answers 503, the other keeps working.
    let broken = upstream(&server, json!({"client_cert": CLIENT_CERT_PEM, "client_key": "not a key"}));
    put(&mut client, "/sluice/upstreams/broken", broken).await;
    put(&mut client, "/sluice/routes/broken", json!({"uri": "/broken", "upstream_id": "broken"})).await;
    let (status, body) = routed(&dp, "/broken").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        metric(dp.admin_addr(), r#"sluice_config_rejected_total{kind="upstream"}"#).await,
        Some(1.0),
        "the bad key is counted once"
    );
    assert_eq!(routed(&dp, "/mtls").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_active_checks_probe_over_tls() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let server = TlsEchoServer::start("tls-backend", ClientAuth::None).await.unwrap();
    let (dp, _ca) = dataplane_trusting(&etcd, CA_PEM).await;
    let live = server.addr().to_string();
    // A plain-HTTP listener: the TLS handshake of an https probe fails against it, like a broken node.
    let plain = sluice_testkit::EchoServer::start("plain").await.unwrap();
    let broken = plain.addr().to_string();
    let checks = json!({"active": {"type": "https", "host": "backend.test", "https_verify_certificate": true,
        "healthy": {"interval": 1, "successes": 1}, "unhealthy": {"interval": 1, "tcp_failures": 1}}});
    let up = json!({"scheme": "https", "nodes": {live.clone(): 1, broken.clone(): 1}, "checks": checks});
    put(&mut client, "/sluice/upstreams/checked", up).await;
    put(&mut client, "/sluice/routes/checked", json!({"uri": "/checked", "upstream_id": "checked"})).await;
    let admin = dp.admin_addr();
    let gauge = |node: &str| format!(r#"sluice_upstream_node_healthy{{node="{node}",upstream="checked"}}"#);
    assert!(eventually(SETTLE, || async { metric(admin, &gauge(&broken)).await == Some(0.0) }).await, "not ejected");
    assert_eq!(metric(admin, &gauge(&live)).await, Some(1.0), "the TLS node passes its https probe");
    assert_eq!(routed(&dp, "/checked").await.0, 200);
    for _ in 0..6 {
        assert_eq!(get(dp.http_addr(), "client.test", "/checked").await.unwrap().status, 200);
    }
}
