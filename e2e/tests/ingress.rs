//! End to end, with the real binaries: etcd, `sluice-controller --manifests`, `sluice-dataplane` and echo
//! backends on loopback. Checks the Ingress conformance behaviours through HTTP, then edits the manifests while a
//! load loop runs and checks routing follows within a second with no failed request.
//!
//! Needs the binaries: `cargo build --workspace --bins` (the README's test command does it).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_e2e::{Stack, StackConfig};
use sluice_testkit::{EchoServer, Reply, eventually, get};

fn service(name: &str, port: u16, addresses: &[&str]) -> String {
    let endpoints: String = addresses.iter().map(|a| format!("  - addresses: [\"{a}\"]\n")).collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: e2e}}\nspec:\n  ports: [{{port: 80}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: e2e\n  \
         labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{port: {port}}}]\nendpoints:\n{endpoints}---\n"
    )
}

fn path(p: &str, kind: &str, svc: &str) -> String {
    format!(
        "          - {{path: {p}, pathType: {kind}, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}\n"
    )
}

const INGRESS_HEAD: &str = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: conformance, namespace: e2e}\n\
    spec:\n  ingressClassName: sluice\n";

fn ingress(extra_spec: &str, extra_paths: &str) -> String {
    let paths = [
        path("/foo", "Exact", "exact"),
        path("/foo", "Prefix", "prefix"),
        path("/aaa", "Prefix", "aaa"),
        path("/aaa/bbb", "Prefix", "long"),
        path("/trail/", "Prefix", "prefix"),
        path("/spread", "Prefix", "spread"),
        path("/missing", "Prefix", "ghost"),
    ]
    .concat();
    format!(
        "{INGRESS_HEAD}{extra_spec}  rules:\n    - http:\n        paths:\n{paths}{extra_paths}\
         \x20   - host: host.example.test\n      http:\n        paths:\n{}\
         \x20   - host: \"*.wild.example.test\"\n      http:\n        paths:\n{}",
        path("/", "Prefix", "host"),
        path("/", "Prefix", "wild"),
    )
}

async fn expect(stack: &Stack, host: &str, p: &str, backend: Option<&str>) -> Reply {
    let reply = get(stack.http(), host, p).await.expect("request through the data plane");
    match backend {
        Some(b) => assert_eq!(reply.backend().as_deref(), Some(b), "{host}{p} -> {reply:?}"),
        None => {
            assert_eq!(reply.status.as_u16(), 404, "{host}{p} should not match: {reply:?}");
            assert_eq!(reply.body, r#"{"error_msg":"404 Route Not Found"}"#);
        }
    }
    reply
}

async fn routes_to(stack: &Stack, host: &str, p: &str, backend: &str) -> bool {
    get(stack.http(), host, p).await.is_ok_and(|r| r.backend().as_deref() == Some(backend))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_conformance_and_live_edits() {
    let names = ["exact", "prefix", "aaa", "long", "host", "wild", "default", "root"];
    let mut echoes = Vec::new();
    let mut services = String::new();
    for name in names {
        let echo = EchoServer::start(name).await.unwrap();
        services += &service(name, echo.addr().port(), &["127.0.0.1"]);
        echoes.push(echo);
    }
    // One Service with three endpoints on three loopback addresses sharing a port.
    let first = EchoServer::bind("spread-1", "127.0.0.2:0".parse().unwrap()).await.unwrap();
    let port = first.addr().port();
    let spread = vec![
        first,
        EchoServer::bind("spread-2", format!("127.0.0.3:{port}").parse().unwrap()).await.unwrap(),
        EchoServer::bind("spread-3", format!("127.0.0.4:{port}").parse().unwrap()).await.unwrap(),
    ];
    services += &service("spread", port, &["127.0.0.2", "127.0.0.3", "127.0.0.4"]);

    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let class = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: sluice}\n\
                 spec: {controller: sluice.dev/ingress-controller}\n";
    std::fs::write(manifests.join("class.yaml"), class).unwrap();
    std::fs::write(manifests.join("services.yaml"), &services).unwrap();
    std::fs::write(manifests.join("ingress.yaml"), ingress("", "")).unwrap();
    let stack = Stack::start(StackConfig::on_free_ports(manifests.clone(), dir.path().join("logs"))).await.unwrap();
    let synced = eventually(Duration::from_secs(10), || routes_to(&stack, "x", "/foo", "exact")).await;
    assert!(synced, "routes never appeared; logs:\n{}", stack.logs());

    // Exact vs Prefix, and prefix by path element.
    expect(&stack, "x", "/foo", Some("exact")).await;
    expect(&stack, "x", "/foo/", Some("prefix")).await;
    expect(&stack, "x", "/foo/bar", Some("prefix")).await;
    expect(&stack, "x", "/foobar", None).await;
    // Longest match.
    expect(&stack, "x", "/aaa/bbb", Some("long")).await;
    expect(&stack, "x", "/aaa/bbb/", Some("long")).await;
    expect(&stack, "x", "/aaa/bbb/ccc", Some("long")).await;
    expect(&stack, "x", "/aaa/bbbxyz", Some("aaa")).await;
    expect(&stack, "x", "/aaa/ccc", Some("aaa")).await;
    expect(&stack, "x", "/aaaa", None).await;
    // A Prefix path with a trailing slash also matches without it.
    expect(&stack, "x", "/trail", Some("prefix")).await;
    expect(&stack, "x", "/trail/", Some("prefix")).await;
    expect(&stack, "x", "/trail/x", Some("prefix")).await;
    // Hosts: exact (case-insensitive, port ignored) and one-label wildcards.
    expect(&stack, "host.example.test", "/any", Some("host")).await;
    expect(&stack, "HOST.Example.Test:8080", "/any", Some("host")).await;
    expect(&stack, "a.wild.example.test", "/any", Some("wild")).await;
    expect(&stack, "a.b.wild.example.test", "/any", None).await;
    expect(&stack, "wild.example.test", "/any", None).await;
    expect(&stack, "other.example.test", "/any", None).await;
    // A path whose Service is missing answers 503; the rules above were unaffected.
    let missing = get(stack.http(), "x", "/missing").await.unwrap();
    assert_eq!(missing.status.as_u16(), 503, "{missing:?}");
    // Requests spread over every endpoint of a Service.
    for _ in 0..30 {
        get(stack.http(), "x", "/spread").await.unwrap();
    }
    for echo in &spread {
        assert!(
            echo.hits() >= 5,
            "every endpoint gets a share: {:?}",
            spread.iter().map(|e| e.hits()).collect::<Vec<_>>()
        );
    }
    // The status the controller would write, and the missing Service, are in its log.
    let log = stack.log("sluice-controller");
    assert!(log.contains("Ingress e2e/conformance") && log.contains("127.0.0.1"), "status logged:\n{log}");
    assert!(log.contains("ServiceNotFound"), "missing Service logged:\n{log}");

    // Live edits while a load loop runs: a default backend, then a catch-all rule above it.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = tokio::spawn({
        let (stop, sent, failed, http) = (stop.clone(), sent.clone(), failed.clone(), stack.http());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = get(http, "x", "/foo").await.is_ok_and(|r| r.backend().as_deref() == Some("exact"));
                sent.fetch_add(1, Ordering::Relaxed);
                failed.fetch_add(u64::from(!ok), Ordering::Relaxed);
            }
        }
    });
    let edit = |spec: &str, paths: &str| write_atomically(&manifests.join("ingress.yaml"), &ingress(spec, paths));
    let started = Instant::now();
    edit("  defaultBackend: {service: {name: default, port: {number: 80}}}\n", "");
    assert!(eventually(Duration::from_secs(5), || routes_to(&stack, "x", "/nothing", "default")).await);
    let first_edit = started.elapsed();
    expect(&stack, "a.b.wild.example.test", "/any", Some("default")).await;
    let started = Instant::now();
    edit("  defaultBackend: {service: {name: default, port: {number: 80}}}\n", &path("/", "Prefix", "root"));
    assert!(eventually(Duration::from_secs(5), || routes_to(&stack, "x", "/nothing", "root")).await);
    let second_edit = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "manifest edit -> routed: {first_edit:?} and {second_edit:?}; load loop: {sent} requests, {failed} failed"
    );
    assert!(sent > 10, "the load loop ran");
    assert_eq!(failed, 0, "no request failed during the edits");
    assert!(
        first_edit < Duration::from_secs(1) && second_edit < Duration::from_secs(1),
        "edits took effect within a second"
    );
    drop(echoes);
}

/// Writes through a temporary file and a rename, as editors and GitOps tools do, so the controller never reads
/// a half-written file.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
