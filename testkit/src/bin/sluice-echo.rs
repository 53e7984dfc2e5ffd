//! `sluice-echo NAME=ADDR...`: example backends for the local stack; each answers every request with a JSON
//! description of it (backend name, method, path, headers, body).

use std::net::SocketAddr;

use sluice_testkit::EchoServer;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let specs: Vec<String> = std::env::args().skip(1).collect();
    if specs.is_empty() {
        anyhow::bail!("usage: sluice-echo NAME=ADDR [NAME=ADDR...]   e.g. sluice-echo web-1=127.0.0.2:18080");
    }
    let mut servers = Vec::new();
    for spec in specs {
        let (name, addr) = spec.split_once('=').ok_or_else(|| anyhow::anyhow!("{spec:?} is not NAME=ADDR"))?;
        let addr: SocketAddr = addr.parse()?;
        let server = EchoServer::bind(name, addr).await?;
        eprintln!("echo backend {name} listening on {}", server.addr());
        servers.push(server);
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
