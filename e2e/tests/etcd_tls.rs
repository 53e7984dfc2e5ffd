//! End to end with etcd locked: etcd serves clients over TLS only and requires their certificates
//! (`--client-cert-auth`); the controller (manifest mode) and the data plane connect with `--etcd-ca-file`,
//! `--etcd-cert-file` and `--etcd-key-file`, and an Ingress is routed. A client without a certificate is refused.
//!
//! Needs the binaries: `cargo build --workspace --bins` (the README's test command does it).

use std::time::Duration;

use sluice_e2e::{Stack, StackConfig};
use sluice_testkit::{EchoServer, eventually, get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_runs_on_an_etcd_that_requires_client_certificates() {
    let backend = EchoServer::start("web").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let manifest = format!(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: sluice}}\n\
         spec: {{controller: sluice.dev/ingress-controller}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: tls}}\nspec:\n  ports: [{{port: 80}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: tls\n  \
         labels: {{kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{{port: {port}}}]\n\
         endpoints:\n  - addresses: [\"127.0.0.1\"]\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web, namespace: tls}}\n\
         spec:\n  ingressClassName: sluice\n  rules:\n    - host: locked.example.test\n      http:\n        paths:\n\
         \x20         - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}\n",
        port = backend.addr().port()
    );
    std::fs::write(manifests.join("web.yaml"), manifest).unwrap();
    let config = StackConfig { etcd_tls: true, ..StackConfig::on_free_ports(manifests, dir.path().join("logs")) };
    let stack = Stack::start(config).await.expect("the stack starts on a TLS etcd");
    assert!(stack.etcd.endpoint().starts_with("https://"));

    let routed = eventually(Duration::from_secs(20), || async {
        get(stack.http(), "locked.example.test", "/").await.is_ok_and(|r| r.backend().as_deref() == Some("web"))
    })
    .await;
    assert!(routed, "the Ingress is routed through a TLS etcd; logs:\n{}", stack.logs());

    // The controller wrote through TLS with its certificate: the route is in etcd.
    let mut client = stack.etcd.client().await.unwrap();
    let routes = client.get("/sluice/routes/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    assert!(!routes.kvs().is_empty());

    // Without a client certificate etcd answers nothing, with or without the CA.
    let tls = stack.etcd.tls().unwrap();
    let ca = etcd_client::Certificate::from_pem(std::fs::read(&tls.ca).unwrap());
    let options = etcd_client::ConnectOptions::new()
        .with_tls(etcd_client::TlsOptions::new().ca_certificate(ca))
        .with_timeout(Duration::from_secs(3))
        .with_connect_timeout(Duration::from_secs(3));
    let anonymous = async {
        let mut c = etcd_client::Client::connect([stack.etcd.endpoint()], Some(options)).await?;
        c.get("/sluice/routes/", None).await
    };
    let refused = tokio::time::timeout(Duration::from_secs(10), anonymous).await;
    assert!(!matches!(refused, Ok(Ok(_))), "a client without a certificate read etcd");
    let plain = stack.etcd.endpoint().replace("https://", "http://");
    let plain = async {
        let options = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(3));
        let mut c = etcd_client::Client::connect([plain], Some(options)).await?;
        c.get("/sluice/routes/", None).await
    };
    assert!(!matches!(tokio::time::timeout(Duration::from_secs(10), plain).await, Ok(Ok(_))), "plain text read etcd");
}
