//! Both binaries started before etcd exists: each says clearly that it cannot reach etcd, keeps retrying, and
//! syncs once etcd comes up.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_e2e::spawn;
use sluice_testkit::{EchoServer, Etcd, eventually, free_port, get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binaries_wait_for_etcd_and_then_sync() {
    let echo = EchoServer::start("late").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let text = format!(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: sluice}}\n\
         spec: {{controller: sluice.dev/ingress-controller}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: late}}\nspec: {{ports: [{{port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: late-1, labels: {{kubernetes.io/service-name: late}}}}\n\
         addressType: IPv4\nports: [{{port: {}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: late}}\n\
         spec: {{ingressClassName: sluice, defaultBackend: {{service: {{name: late, port: {{number: 80}}}}}}}}\n",
        echo.addr().port()
    );
    std::fs::write(manifests.join("all.yaml"), text).unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let (client_port, peer_port) = (free_port(), free_port());
    let endpoint = format!("--etcd-endpoints=http://127.0.0.1:{client_port}");
    let (http, admin, controller_admin) = (free_port(), free_port(), free_port());
    let _controller = spawn(
        "sluice-controller",
        &[
            format!("--manifests={}", manifests.display()),
            endpoint.clone(),
            format!("--admin-addr=127.0.0.1:{controller_admin}"),
        ],
        &logs,
    )
    .unwrap();
    let _dataplane = spawn(
        "sluice-dataplane",
        &[endpoint, format!("--http-addr=127.0.0.1:{http}"), format!("--admin-addr=127.0.0.1:{admin}")],
        &logs,
    )
    .unwrap();
    let read = |name: &str| std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();
    let admin_addr = SocketAddr::from(([127, 0, 0, 1], admin));
    let said = eventually(Duration::from_secs(10), || async {
        read("sluice-controller").contains("etcd") && read("sluice-dataplane").contains("etcd")
    })
    .await;
    assert!(said, "both name etcd in an error:\n{}\n{}", read("sluice-controller"), read("sluice-dataplane"));
    let not_ready = get(admin_addr, "localhost", "/readyz").await.unwrap();
    assert_eq!(not_ready.status.as_u16(), 503, "the data plane is not ready before its first sync");

    let _etcd = Etcd::start_on(client_port, peer_port).await.unwrap();
    let http_addr = SocketAddr::from(([127, 0, 0, 1], http));
    let routed = eventually(Duration::from_secs(30), || async move {
        get(http_addr, "any", "/x").await.is_ok_and(|r| r.backend().as_deref() == Some("late"))
    })
    .await;
    assert!(routed, "routing after etcd came up:\n{}\n{}", read("sluice-controller"), read("sluice-dataplane"));
    let ready = get(admin_addr, "localhost", "/readyz").await.unwrap();
    assert_eq!(ready.status.as_u16(), 200);
}
