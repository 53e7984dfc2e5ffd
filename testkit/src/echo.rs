//! Echo backends: real HTTP servers on loopback that describe each request they receive in a JSON body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A running echo server; stops accepting when dropped.
pub struct EchoServer {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    /// Starts a server named `name` on a free loopback port.
    pub async fn start(name: &str) -> anyhow::Result<EchoServer> {
        Self::bind(name, "127.0.0.1:0".parse()?).await
    }

    /// Starts a server named `name` on `addr`.
    pub async fn bind(name: &str, addr: SocketAddr) -> anyhow::Result<EchoServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicU64::new(0));
        let name: Arc<str> = name.into();
        let task = tokio::spawn({
            let hits = hits.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (name, hits) = (name.clone(), hits.clone());
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| echo(name.clone(), hits.clone(), req));
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            }
        });
        Ok(EchoServer { addr, hits, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests it has answered.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn echo(
    name: Arc<str>,
    hits: Arc<AtomicU64>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    hits.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    // A repeated field is reported once, its values joined with ", " in the order they came.
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .keys()
        .map(|k| {
            let values: Vec<String> =
                parts.headers.get_all(k).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
            (k.as_str().to_string(), values.join(", ").into())
        })
        .collect();
    let reply = serde_json::json!({
        "backend": &*name,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut resp = Response::new(Full::new(Bytes::from(reply.to_string())));
    resp.headers_mut().insert("content-type", "application/json".parse().expect("static header"));
    resp.headers_mut().insert("x-backend", name.parse().unwrap_or_else(|_| "invalid".parse().expect("static")));
    Ok(resp)
}
