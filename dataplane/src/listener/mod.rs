//! Listeners: accept loops with graceful shutdown (the plain and HTTPS proxy listeners and the admin listener),
//! the TLS handshake with certificates chosen by SNI, and HTTP/1.1 and HTTP/2 serving over either.
//!
//! Every connection task holds a clone of the shutdown receiver; when shutdown is signalled, accept loops stop and
//! tell their connections (through a `StopSignal`), and each connection finishes its in-flight requests (HTTP/1
//! closes once idle, HTTP/2 sends GOAWAY) before it drops its receiver. The owner waits for `Sender::closed`, i.e.
//! for every receiver to be gone, up to a grace period.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::task::AtomicWaker;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, warn};

pub mod certs;
pub mod limits;
pub mod proxy_protocol;
pub mod tls;

pub use limits::Limits;

/// HTTP/2 streams a client may have open on one connection.
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// HTTP/2 streams a client may reset before the server has accepted them; more is a rapid-reset attack
/// (CVE-2023-44487) and ends the connection.
const MAX_PENDING_RESETS: usize = 20;

/// How a connection reached the data plane, known once its handshake is done.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// Whether it is TLS.
    pub tls: bool,
    /// The server name the client asked for (TLS only), lowercase.
    pub sni: Option<Box<str>>,
    /// Whether the client presented a verified certificate (downstream mutual TLS).
    pub client_verified: bool,
    /// The client's address from a PROXY protocol header, when the TCP peer is a load balancer.
    pub client: Option<SocketAddr>,
    /// The port the client connected to on that load balancer (`X-Forwarded-Port`).
    pub port: Option<u16>,
}

/// What happens between accepting a TCP connection and serving HTTP on it.
pub(crate) trait Handshake: Send + Sync + 'static {
    /// The stream HTTP is served on.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Completes the handshake; `None` drops the connection (the handshake failed and was logged).
    fn handshake(
        &self,
        tcp: TcpStream,
        remote: SocketAddr,
    ) -> impl Future<Output = Option<(Self::Stream, Transport)>> + Send;
}

/// Plain TCP: HTTP/1.1, or HTTP/2 with prior knowledge (h2c).
pub(crate) struct Plain;

impl Handshake for Plain {
    type Stream = TcpStream;

    async fn handshake(&self, tcp: TcpStream, _: SocketAddr) -> Option<(TcpStream, Transport)> {
        Some((tcp, Transport::default()))
    }
}

/// Serves HTTP/1.1 and HTTP/2 on `listener`, after `handshake`, until `shutdown` becomes true. `connection` is
/// called once per connection, after its handshake, with the client's address and the transport, and returns that
/// connection's request handler, so per-client work (such as formatting its address) is done once, not per request.
pub(crate) async fn serve<T, M, H, Fut, B>(
    listener: TcpListener,
    handshake: T,
    connection: M,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) where
    T: Handshake,
    M: Fn(SocketAddr, &Transport) -> H + Send + Sync + 'static,
    H: Fn(Request<Incoming>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(limits::MIN_HEADER_BYTES))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS);
    let builder = Arc::new(builder);
    let (handshake, connection) = (Arc::new(handshake), Arc::new(connection));
    let signal = Arc::new(StopSignal::default());
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        // At the connection limit, accepting waits for a slot: new clients queue in the kernel's backlog instead
        // of being taken on and starved.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = stopped(&mut shutdown) => break,
        };
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
        let (builder, handshake, connection, held) =
            (builder.clone(), handshake.clone(), connection.clone(), shutdown.clone());
        let (signal, waker) = (signal.clone(), signal.subscribe());
        tokio::spawn(async move {
            let _slot = slot;
            // In the connection's own task, so a slow handshake never holds up the accept loop.
            let Some((stream, transport)) = handshake.handshake(stream, remote).await else { return };
            // Whether a request has arrived: a connection stopped before its first request would be closed with
            // that request unread (it may already be on its way), so it gets a moment to send it first.
            let asked = Arc::new(AtomicBool::new(false));
            let handler = connection(remote, &transport);
            let svc = service_fn({
                let asked = asked.clone();
                move |req| {
                    asked.store(true, Ordering::Release);
                    handler(req)
                }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let mut stopping = false;
            let mut first_request_wait: Option<Pin<Box<tokio::time::Sleep>>> = None;
            let result = std::future::poll_fn(|cx| {
                if !stopping {
                    // Registered before the flag is read, so a stop in between still wakes this task.
                    waker.register(cx.waker());
                    if signal.is_stopped() {
                        let waited = first_request_wait
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(FIRST_REQUEST_GRACE)))
                            .as_mut()
                            .poll(cx)
                            .is_ready();
                        if asked.load(Ordering::Acquire) || waited {
                            stopping = true;
                            conn.as_mut().graceful_shutdown();
                        }
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
    take_the_backlog(listener, handshake, connection, &limits, &shutdown);
}

/// Serves, one request each, the connections the kernel has already completed into `listener`'s queue, then
/// closes it. Closing a listener resets the connections still queued on it; with SO_REUSEPORT another process may
/// be taking over the port, and those clients must not see a reset. Only the instant between the last accept and
/// the close is left open (Linux's `net.ipv4.tcp_migrate_req=1` moves even those to the other listener).
fn take_the_backlog<T, M, H, Fut, B>(
    listener: TcpListener,
    handshake: Arc<T>,
    connection: Arc<M>,
    limits: &Limits,
    held: &watch::Receiver<bool>,
) where
    T: Handshake,
    M: Fn(SocketAddr, &Transport) -> H + Send + Sync + 'static,
    H: Fn(Request<Incoming>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // A direct accept(2) on the socket: the runtime's readiness may not have seen the last arrivals yet.
    let Ok(std_listener) = listener.into_std() else { return };
    let mut once = Builder::new(TokioExecutor::new());
    once.http1()
        .timer(TokioTimer::new())
        .keep_alive(false)
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(limits::MIN_HEADER_BYTES))
        .max_headers(limits.max_headers);
    let once = Arc::new(once);
    while let Ok((stream, remote)) = std_listener.accept() {
        let Ok(tcp) = stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream)) else { continue };
        let _ = tcp.set_nodelay(true);
        let (once, handshake, connection, held) = (once.clone(), handshake.clone(), connection.clone(), held.clone());
        tokio::spawn(async move {
            let Some((stream, transport)) = handshake.handshake(tcp, remote).await else { return };
            let svc = service_fn(connection(remote, &transport));
            let _ = once.serve_connection_with_upgrades(TokioIo::new(stream), svc).await;
            drop(held);
        });
    }
    debug!("listener closed after taking its queued connections");
}

/// How long a connection that has not sent a request yet may still send one once the listener stops.
const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(500);

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
