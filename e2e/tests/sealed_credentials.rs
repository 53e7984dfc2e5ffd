//! End to end with a credential keyring: the controller seals the consumer's key before writing it, the raw etcd
//! value holds no plaintext, the data plane opens it and authenticates with it; a rotation to a new key (the new
//! key first in the file, the old one kept) re-seals the consumer with the new key while it keeps working, and the
//! old key can then go.
//!
//! Needs the binaries: `cargo build --workspace --bins` (the README's test command does it).

use std::time::Duration;

use sluice_e2e::{Stack, StackConfig};
use sluice_testkit::{EchoServer, eventually, request};

const K1: &str = "k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const K2: &str = "k2 HxwdGhsYGRYXFBUSExAREA8ODQwLCgkIBwYFBAMCAQA=";
const KEY: &str = "carol-secret-key-1234";

async fn status(stack: &Stack, key: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = key.map(|k| ("apikey", k)).into_iter().collect();
    let reply = request(stack.http(), http::Method::GET, "vault.example.test", "/vault", &headers, bytes::Bytes::new());
    reply.await.map(|r| r.status.as_u16()).unwrap_or(0)
}

async fn stored(stack: &Stack) -> String {
    let mut client = stack.etcd.client().await.unwrap();
    let kvs = client.get("/sluice/consumers/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    kvs.kvs().iter().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_sealed_in_etcd_and_survive_a_key_rotation() {
    let backend = EchoServer::start("vault").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let manifest = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: vault, namespace: sec}}\nspec:\n  ports: [{{port: 80}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: vault-1\n  namespace: sec\n  \
         labels: {{kubernetes.io/service-name: vault}}\naddressType: IPv4\nports: [{{port: {port}}}]\n\
         endpoints:\n  - addresses: [\"127.0.0.1\"]\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: sluice}}\n\
         spec: {{controller: sluice.dev/ingress-controller}}\n---\n\
         apiVersion: sluice.dev/v1alpha1\nkind: ApiRoute\nmetadata: {{name: vault, namespace: sec}}\nspec:\n  \
         ingressClassName: sluice\n  http:\n    - name: vault\n      match: {{hosts: [vault.example.test], paths: [/vault]}}\n      \
         backends: [{{serviceName: vault, servicePort: 80}}]\n      plugins:\n        - {{name: key-auth, config: {{header: apikey}}}}\n---\n\
         apiVersion: sluice.dev/v1alpha1\nkind: Consumer\nmetadata: {{name: carol, namespace: sec}}\nspec:\n  \
         authParameter:\n    keyAuth:\n      value: {{key: {KEY}}}\n",
        port = backend.addr().port()
    );
    std::fs::write(manifests.join("vault.yaml"), manifest).unwrap();
    let keyring = dir.path().join("keyring");
    std::fs::write(&keyring, format!("{K1}\n")).unwrap();
    let config = StackConfig {
        keyring: Some(keyring.clone()),
        ..StackConfig::on_free_ports(manifests, dir.path().join("logs"))
    };
    let mut stack = Stack::start(config).await.expect("the stack starts");

    let served = eventually(Duration::from_secs(20), || async { status(&stack, Some(KEY)).await == 200 }).await;
    assert!(served, "the sealed key authenticates; logs:\n{}", stack.logs());
    assert_eq!(status(&stack, None).await, 401);
    assert_eq!(status(&stack, Some("wrong")).await, 401);
    let raw = stored(&stack).await;
    assert!(!raw.contains(KEY), "plaintext credential in etcd: {raw}");
    assert!(raw.contains("$sealed$v1$k1$"), "{raw}");

    // Rotation: k2 becomes current, k1 stays to open what it sealed. The controller re-seals on its next sync
    // (a restart here, as after a Secret update); the data plane reads the file again when it meets k2.
    std::fs::write(&keyring, format!("{K2}\n{K1}\n")).unwrap();
    stack.restart_controller().unwrap();
    let resealed =
        eventually(Duration::from_secs(20), || async { stored(&stack).await.contains("$sealed$v1$k2$") }).await;
    assert!(resealed, "re-sealed with k2; logs:\n{}", stack.logs());
    assert!(!stored(&stack).await.contains(KEY));
    let served = eventually(Duration::from_secs(20), || async { status(&stack, Some(KEY)).await == 200 }).await;
    assert!(served, "the consumer keeps working after the rotation; logs:\n{}", stack.logs());

    // The old key can go: nothing is sealed with it any more.
    std::fs::write(&keyring, format!("{K2}\n")).unwrap();
    stack.restart_controller().unwrap();
    stack.wait_ready(Duration::from_secs(20)).await.unwrap();
    assert_eq!(status(&stack, Some(KEY)).await, 200);
    assert_eq!(status(&stack, None).await, 401);
}
