//! Accept loops with graceful shutdown, shared by the proxy and admin listeners.
//!
//! Every connection task holds a clone of the shutdown receiver; when shutdown is signalled, accept loops stop and
//! tell their connections (through a [`StopSignal`]), and each connection finishes its in-flight requests (HTTP/1
//! closes once idle, HTTP/2 sends GOAWAY) before it drops its receiver. The owner waits for `Sender::closed`, i.e.
//! for every receiver to be gone, up to a grace period.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::task::AtomicWaker;
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
    let signal = Arc::new(StopSignal::default());
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
        let (builder, handler, held) = (builder.clone(), connection(remote), shutdown.clone());
        let (signal, waker) = (signal.clone(), signal.subscribe());
        tokio::spawn(async move {
            let svc = service_fn(handler);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let mut stopping = false;
            let result = std::future::poll_fn(|cx| {
                if !stopping {
                    // Registered before the flag is read, so a stop in between still wakes this task.
                    waker.register(cx.waker());
                    if signal.is_stopped() {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
                conn.as_mut().poll(cx)
            })
            .await;
            if let Err(e) = result {
                debug!(client = %remote, error = %e, "connection ended with an error");
            }
            // Dropped last: the owner counts connections still draining by these receivers.
            drop(held);
        });
    }
    signal.stop();
}

/// Tells an accept loop's connections to finish up. Each connection registers its task's waker once and checks one
/// flag per poll; a watch receiver's `changed()` would take a lock on every poll of every connection.
#[derive(Debug, Default)]
struct StopSignal {
    stopped: AtomicBool,
    wakers: Mutex<Wakers>,
}

#[derive(Debug, Default)]
struct Wakers {
    list: Vec<Weak<AtomicWaker>>,
    /// The length at which closed connections' entries are next swept out.
    sweep_at: usize,
}

impl StopSignal {
    /// A waker slot for one connection; it is forgotten once the connection drops it.
    fn subscribe(&self) -> Arc<AtomicWaker> {
        let waker = Arc::new(AtomicWaker::new());
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if wakers.list.len() >= wakers.sweep_at {
            wakers.list.retain(|w| w.strong_count() > 0);
            wakers.sweep_at = (wakers.list.len() * 2).max(64);
        }
        wakers.list.push(Arc::downgrade(&waker));
        waker
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Sets the flag, then wakes every connection still open.
    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        for waker in wakers.list.iter().filter_map(Weak::upgrade) {
            waker.wake();
        }
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
