//! End to end, with the real binaries: an Ingress with `spec.tls` and its Secret in the manifest directory is served
//! over HTTPS with the Secret's certificate (checked by a real TLS client against the issuing CA), its host's plain
//! HTTP is redirected to HTTPS, and replacing the Secret (as a cert-manager renewal does) serves the new
//! certificate to new connections while an open connection keeps working.

use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use sluice_e2e::{Stack, StackConfig};
use sluice_testkit::{EchoServer, TlsClient, TlsClientOptions, eventually, get};

const HOST: &str = "secure.e2e.test";

fn secret(cert: &str, key: &str) -> String {
    let indent = |pem: &str| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: secure-tls, namespace: e2e}}\ntype: kubernetes.io/tls\n\
         stringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert),
        indent(key)
    )
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_tls_is_served_redirected_and_rotated() {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let issue = || {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![HOST.to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    };
    let (first_cert, first_key, first_der) = issue();
    let (second_cert, second_key, second_der) = issue();

    let echo = EchoServer::start("secure").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let port = echo.addr().port();
    let objects = format!(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: sluice}}\n\
         spec: {{controller: sluice.dev/ingress-controller}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: secure, namespace: e2e}}\nspec:\n  ports: [{{port: 80}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: secure-1\n  namespace: e2e\n  \
         labels: {{kubernetes.io/service-name: secure}}\naddressType: IPv4\nports: [{{port: {port}}}]\n\
         endpoints:\n  - addresses: [\"127.0.0.1\"]\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: secure, namespace: e2e}}\nspec:\n  \
         ingressClassName: sluice\n  tls:\n    - hosts: [{HOST}]\n      secretName: secure-tls\n  rules:\n    \
         - host: {HOST}\n      http:\n        paths:\n          \
         - {{path: /, pathType: Prefix, backend: {{service: {{name: secure, port: {{number: 80}}}}}}}}\n"
    );
    std::fs::write(manifests.join("objects.yaml"), objects).unwrap();
    std::fs::write(manifests.join("secret.yaml"), secret(&first_cert, &first_key)).unwrap();
    // The private key is sealed in etcd (as the chart does by default) and opened by the data plane.
    let keyring = dir.path().join("keyring");
    std::fs::write(&keyring, "k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
    let config = StackConfig {
        keyring: Some(keyring),
        ..StackConfig::on_free_ports(manifests.clone(), dir.path().join("logs"))
    };
    let stack = Stack::start(config).await.unwrap();
    let client = TlsClient::new(TlsClientOptions { roots: vec![ca_pem], ..Default::default() }).unwrap();
    let https = stack.https();

    // Served with the Secret's certificate, verified against its CA, and routed to the Ingress's backend.
    let served = eventually(Duration::from_secs(10), || async {
        match client.connect(https, Some(HOST)).await {
            Ok(mut conn) => conn.leaf == first_der && conn.get(HOST, "/").await.is_ok_and(|r| r.status == 200),
            Err(_) => false,
        }
    })
    .await;
    assert!(served, "the Ingress's certificate was never served; logs:\n{}", stack.logs());
    let mut etcd = stack.etcd.client().await.unwrap();
    let ssls = etcd.get("/sluice/ssls/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    let stored: String = ssls.kvs().iter().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()).collect();
    assert!(stored.contains("$sealed$v1$k1$") && !stored.contains("PRIVATE KEY"), "{stored}");
    let mut open = client.connect(https, Some(HOST)).await.unwrap();
    let reply = open.get(HOST, "/hello").await.unwrap();
    assert_eq!(reply.backend().as_deref(), Some("secure"), "{reply:?}");
    assert_eq!(reply.json()["headers"]["x-forwarded-proto"], "https", "{reply:?}");

    // Plain HTTP for the TLS host goes to HTTPS, on the listener's port.
    let plain = get(stack.http(), HOST, "/hello?x=1").await.unwrap();
    assert_eq!(plain.status, 301, "{plain:?}");
    let location = plain.headers["location"].to_str().unwrap().to_string();
    assert_eq!(location, format!("https://{HOST}:{}/hello?x=1", https.port()));

    // A renewal: the Secret changes, new connections get the new certificate, the open one keeps serving.
    write_atomically(&manifests.join("secret.yaml"), &secret(&second_cert, &second_key));
    let rotated = eventually(Duration::from_secs(10), || async {
        client.connect(https, Some(HOST)).await.is_ok_and(|c| c.leaf == second_der)
    })
    .await;
    assert!(rotated, "the renewed certificate was never served; logs:\n{}", stack.logs());
    let reply = open.get(HOST, "/after-rotation").await.unwrap();
    assert_eq!(reply.backend().as_deref(), Some("secure"), "the open connection outlives the rotation");
    let log = stack.log("sluice-controller");
    assert!(!log.contains("InvalidSpec") && !log.contains("RefNotFound"), "no problem reported:\n{log}");
    drop(echo);
}
