//! A rolling update in manifest mode: the endpoints of a backend are replaced one by one, the way a Deployment
//! rollout changes its EndpointSlice (new pod ready, old pod terminating, old pod gone), while a load loop runs
//! through the data plane. No request may fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sluice_e2e::{Stack, StackConfig};
use sluice_testkit::{EchoServer, eventually, get};

/// (address, condition) pairs as an EndpointSlice.
fn manifests(port: u16, endpoints: &[(&str, &str)]) -> String {
    let eps: String = endpoints
        .iter()
        .map(|(addr, state)| {
            let conditions = match *state {
                "terminating" => "{ready: false, serving: true, terminating: true}",
                _ => "{ready: true, serving: true, terminating: false}",
            };
            format!("  - {{addresses: [\"{addr}\"], conditions: {conditions}}}\n")
        })
        .collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: sluice}}\n\
         spec: {{controller: sluice.dev/ingress-controller}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: app}}\nspec: {{ports: [{{port: 80}}]}}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: app}}\n\
         spec: {{ingressClassName: sluice, defaultBackend: {{service: {{name: app, port: {{number: 80}}}}}}}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: app-1, labels: {{kubernetes.io/service-name: app}}}}\n\
         addressType: IPv4\nports: [{{port: {port}}}]\nendpoints:\n{eps}"
    )
}

fn write(dir: &std::path::Path, text: &str) {
    let tmp = dir.join("app.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join("app.yaml")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_drops_no_request() {
    // Old pods on 127.0.0.2-4, new pods on 127.0.0.12-14, all on one port as pods of one Deployment would be.
    let first = EchoServer::bind("old-2", "127.0.0.2:0".parse().unwrap()).await.unwrap();
    let port = first.addr().port();
    let mut old = vec![Some(first)];
    for i in 3..=4 {
        old.push(Some(
            EchoServer::bind(&format!("old-{i}"), format!("127.0.0.{i}:{port}").parse().unwrap()).await.unwrap(),
        ));
    }
    let mut new = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let manifests_dir = dir.path().join("manifests");
    std::fs::create_dir(&manifests_dir).unwrap();
    let mut endpoints: Vec<(String, &str)> = (2..=4).map(|i| (format!("127.0.0.{i}"), "ready")).collect();
    let render = |eps: &Vec<(String, &str)>| {
        let list: Vec<(&str, &str)> = eps.iter().map(|(a, s)| (a.as_str(), *s)).collect();
        manifests(port, &list)
    };
    write(&manifests_dir, &render(&endpoints));
    let stack = Stack::start(StackConfig::on_free_ports(manifests_dir.clone(), dir.path().join("logs"))).await.unwrap();
    let http = stack.http();
    let up =
        eventually(Duration::from_secs(10), || async move { get(http, "x", "/").await.is_ok_and(|r| r.status == 200) });
    assert!(up.await, "never routed:\n{}", stack.logs());

    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = get(http, "x", "/").await.is_ok_and(|r| r.status == 200);
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for (step, i) in (2..=4).enumerate() {
        // A new pod becomes ready.
        let addr = format!("127.0.0.{}", i + 10);
        new.push(
            EchoServer::bind(&format!("new-{}", i + 10), format!("{addr}:{port}").parse().unwrap()).await.unwrap(),
        );
        endpoints.push((addr, "ready"));
        write(&manifests_dir, &render(&endpoints));
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The old pod starts terminating: not ready, still serving.
        endpoints.retain(|(a, _)| a != &format!("127.0.0.{i}"));
        endpoints.push((format!("127.0.0.{i}"), "terminating"));
        write(&manifests_dir, &render(&endpoints));
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Its grace period ends: the endpoint goes away and the process exits.
        endpoints.retain(|(a, _)| a != &format!("127.0.0.{i}"));
        write(&manifests_dir, &render(&endpoints));
        tokio::time::sleep(Duration::from_millis(300)).await;
        old[step] = None;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("rolling update: {sent} requests, {failed} failed");
    assert!(sent > 100, "the load loop ran ({sent})");
    assert_eq!(failed, 0, "no request failed during the rollout:\n{}", stack.logs());
    assert!(new.iter().all(|e| e.hits() > 0), "every new pod took traffic");
}
