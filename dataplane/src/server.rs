//! Accept loops with graceful shutdown, shared by the proxy and admin listeners.
//!
//! Every connection task holds a clone of the shutdown receiver; when shutdown is signalled, accept loops stop and
//! each connection finishes its in-flight requests (HTTP/1 closes once idle, HTTP/2 sends GOAWAY) before it drops
//! its receiver. The owner waits for `Sender::closed`, i.e. for every receiver to be gone, up to a grace period.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

/// How long a client may take to send request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves HTTP/1.1 and h2c on `listener` until `shutdown` becomes true. `connection` is called once per accepted
/// connection with the client's address and returns that connection's request handler, so per-client work (such
/// as formatting its address) is done once, not per request.
pub(crate) async fn serve<M, H, Fut, B>(listener: TcpListener, connection: M, mut shutdown: watch::Receiver<bool>)
where
    M: Fn(SocketAddr) -> H + Send + Sync + 'static,
    H: Fn(Request<Incoming>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let (builder, handler, mut stop) = (builder.clone(), connection(remote), shutdown.clone());
        tokio::spawn(async move {
            let svc = service_fn(handler);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                debug!(client = %remote, error = %e, "connection ended with an error");
            }
            drop(stop);
        });
    }
}

/// Resolves once shutdown is signalled, or the owner is gone (a dropped [`crate::Dataplane`] stops serving too).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}
