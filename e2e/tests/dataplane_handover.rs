//! A rolling restart of the data plane on one machine: two data plane binaries share the proxy port
//! (SO_REUSEPORT); each round starts a new one, waits until it is ready, and sends SIGTERM to the old one, which
//! drains (readiness off, `Connection: close`, in-flight requests finished) and exits. A load loop runs through
//! the port the whole time: no request may fail.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_e2e::{Load, spawn};
use sluice_testkit::{Child, EchoServer, Etcd, eventually, free_port, get};

fn dataplane(etcd: &str, port: u16, logs: &std::path::Path, name: &str) -> (Child, SocketAddr) {
    let admin = free_port();
    let dir = logs.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let child = spawn(
        "sluice-dataplane",
        &[
            format!("--etcd-endpoints={etcd}"),
            format!("--http-addr=127.0.0.1:{port}"),
            format!("--admin-addr=127.0.0.1:{admin}"),
            "--https-addr=off".into(),
            "--drain-delay=1".into(),
            "--shutdown-grace=5".into(),
        ],
        &dir,
    )
    .unwrap();
    (child, SocketAddr::from(([127, 0, 0, 1], admin)))
}

async fn ready(admin: SocketAddr) -> bool {
    eventually(Duration::from_secs(30), || async {
        get(admin, "localhost", "/readyz").await.is_ok_and(|r| r.status == 200)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_on_one_port_drops_no_request() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let echo = EchoServer::start("echo").await.unwrap();
    let route = json!({"uri": "/x", "upstream": {"nodes": {echo.addr().to_string(): 1}}});
    client.put("/sluice/routes/x", route.to_string(), None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut old, admin) = dataplane(&etcd.endpoint(), port, dir.path(), "dp-0");
    assert!(ready(admin).await, "the first data plane never became ready");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let load = Load::start(addr);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for round in 1..=3 {
        let (new, admin) = dataplane(&etcd.endpoint(), port, dir.path(), &format!("dp-{round}"));
        assert!(ready(admin).await, "round {round}: the new data plane never became ready");
        let stopping = Instant::now();
        let term = std::process::Command::new("kill").args(["-TERM", &old.pid().to_string()]).status().unwrap();
        assert!(term.success());
        let exited = eventually(Duration::from_secs(15), || {
            let gone = old.exited().is_some();
            async move { gone }
        })
        .await;
        assert!(exited, "round {round}: the old data plane did not exit within 15 s of SIGTERM");
        eprintln!("round {round}: SIGTERM to exit {:?}", stopping.elapsed());
        load.none_failed(&format!("round {round}"));
        old = new;
    }
    let sent = load.stop().await;
    eprintln!("{sent} requests through three handovers, none failed");
}
