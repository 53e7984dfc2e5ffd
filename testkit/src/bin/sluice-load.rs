//! `sluice-load TARGET PATH SECONDS`: a bounded load loop for the kind suite's rollout test, run in a pod next to
//! the data plane's Service. Two clients send `GET PATH` to `TARGET` (`host:port`, resolved once a second, so a
//! Service name works) on a new connection each, with a short pause, for `SECONDS`; it prints how many requests
//! were sent and failed (not 200, an error, or no answer within 5 s), and exits 1 if any failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [target, path, seconds] = args.as_slice() else {
        anyhow::bail!("usage: sluice-load HOST:PORT PATH SECONDS   e.g. sluice-load sluice-dataplane:80 /echo 90");
    };
    let seconds: u64 = seconds.parse()?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let host = target.split(':').next().unwrap_or("load").to_string();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (sent, failed, target, path, host) =
            (sent.clone(), failed.clone(), target.clone(), path.clone(), host.clone());
        clients.push(tokio::spawn(async move {
            let mut resolved = None;
            let mut resolved_at = Instant::now();
            while Instant::now() < deadline {
                if resolved.is_none() || resolved_at.elapsed() > Duration::from_secs(1) {
                    resolved = tokio::net::lookup_host(target.as_str()).await.ok().and_then(|mut a| a.next());
                    resolved_at = Instant::now();
                }
                let outcome = match resolved {
                    None => Err("cannot resolve the target".to_string()),
                    Some(addr) => {
                        match tokio::time::timeout(Duration::from_secs(5), sluice_testkit::get(addr, &host, &path))
                            .await
                        {
                            Ok(Ok(r)) if r.status == 200 => Ok(()),
                            Ok(Ok(r)) => Err(format!("status {}", r.status)),
                            Ok(Err(e)) => Err(format!("error {e}")),
                            Err(_) => Err("no answer within 5 s".to_string()),
                        }
                    }
                };
                sent.fetch_add(1, Ordering::Relaxed);
                if let Err(why) = outcome
                    && failed.fetch_add(1, Ordering::Relaxed) < 5
                {
                    eprintln!("failed: {why}");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for c in clients {
        c.await?;
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("sluice-load: sent {sent} failed {failed}");
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
