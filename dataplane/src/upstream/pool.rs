//! Connections to upstream nodes: dialled on demand over TCP or TLS, handed back when a response has been read to
//! its end, and reused by the next request to the same node.
//!
//! Each node has a [`NodePool`] of idle HTTP/1.1 connections. Pools live in [`Pools`], keyed by node address and
//! connection settings, so they outlive the upstream objects that use them: when an upstream changes (endpoint
//! churn), its unchanged nodes keep their warm connections. A request takes the most recently used idle connection
//! (the one least likely to have been closed by the node), sends on it directly, and returns it from the response
//! body once the body has ended; nothing on this path goes through a shared client or a per-request task.
//!
//! Nodes of `scheme: grpc` and `grpcs` speak HTTP/2 instead ([`super::http2`]): one connection per node carries every
//! request as a stream. Both transports sit behind [`NodePool::send`] and [`UpstreamBody`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::uri::Authority;
use http::{Method, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tracing::debug;

use super::http1::{self, Connection, Framing, Head, RequestBody, Stream, Upload};
use super::policy::{self, AddressPolicy, DialError};
use super::tls::{TlsClient, TlsSettings, Trust};

/// How long an idle connection to a node is kept by default (APISIX: 60 s).
const POOL_IDLE: Duration = Duration::from_secs(60);

/// An upstream's `keepalive_pool`: how many idle connections each node keeps, for how long, and how many requests
/// one connection carries before it is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pool {
    /// Idle connections kept per node.
    pub size: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
    /// Requests one connection carries; it is closed after the last.
    pub requests: u64,
}

impl Default for Pool {
    /// APISIX's defaults: 320 connections, 60 seconds, 1,000 requests.
    fn default() -> Self {
        Pool { size: 320, idle_timeout: POOL_IDLE, requests: 1000 }
    }
}

/// Why no connection to a node could be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect and TLS handshake did not finish within the connect timeout.
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    /// The TCP connection failed.
    #[error("{0}")]
    Tcp(std::io::Error),
    /// The TLS handshake failed (certificate rejected, protocol error).
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    /// The name sent as SNI is not a valid DNS name or address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// The node closed a new connection before it could carry the request.
    #[error("the node closed the connection at once")]
    Closed,
    /// The HTTP/2 connection preface or settings exchange failed.
    #[error("HTTP/2 handshake: {0}")]
    Http2(String),
    /// The node's address is refused by the upstream address policy: it was not dialled.
    #[error("{0} is refused by the upstream address policy")]
    Refused(SocketAddr),
}

impl From<DialError> for ConnectError {
    fn from(e: DialError) -> Self {
        match e {
            DialError::Refused(addr) => ConnectError::Refused(addr),
            DialError::Io(e) => ConnectError::Tcp(e),
        }
    }
}

/// When an attempt started and how long its parts may take.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The caller's reading of the clock as the attempt started; idle connections are checked against it.
    pub started: Instant,
    /// How long opening a connection may take.
    pub connect: Duration,
    /// When the response head must have arrived, for a request sent at once (no body, or one already read).
    pub deadline: Instant,
    /// While a request body is uploaded: how long the node may take to accept more of it.
    pub send: Duration,
    /// While a request body is uploaded: how long the client may take to send more of it.
    pub client_body: Duration,
    /// Once an upload has ended: how long the node may take to answer.
    pub read: Duration,
}

/// Why a request could not be exchanged on a connection.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened: the request was never sent, so another node may be tried.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The request was sent (or partly sent) and the exchange failed.
    #[error(transparent)]
    Http(http1::Error),
    /// No response head came before the deadline, or the node stopped taking the request body.
    #[error("timed out waiting for the response")]
    Timeout,
    /// The client stopped sending its request body for longer than the client body timeout: not the node's fault.
    #[error("the client stopped sending its request body")]
    ClientTimeout,
}

/// Why an exchange on one connection ended without a response head.
enum Failure {
    /// Reading or writing failed.
    Error(http1::Error),
    /// The node took too long: to answer, or to take the request body.
    NodeTimeout,
    /// The client took too long to send its request body.
    ClientTimeout,
}

/// The HTTP version spoken to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// HTTP/1.1 on pooled connections (`scheme: http`, `https`).
    #[default]
    Http1,
    /// HTTP/2 streams on one shared connection (`scheme: grpc`, `grpcs`).
    Http2,
}

/// Identifies a node pool: the address, the pool settings, the TLS settings (none for plain HTTP) and the protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    authority: Authority,
    pool: Pool,
    tls: Option<TlsSettings>,
    protocol: Protocol,
}

/// Every node pool in use, and the TLS client configurations they share.
#[derive(Clone, Default)]
pub struct Pools {
    inner: Arc<Registry>,
}

#[derive(Default)]
struct Registry {
    pools: Mutex<HashMap<PoolKey, Weak<NodePool>>>,
    /// Weak, like the pools: a client whose settings no upstream uses any more (a rotated key) is forgotten.
    tls: Mutex<HashMap<TlsSettings, Weak<TlsClient>>>,
    trust: Trust,
    policy: Arc<AddressPolicy>,
}

impl Pools {
    /// The certificate authorities nodes are verified against.
    pub fn trust(&self) -> &Trust {
        &self.inner.trust
    }

    /// Pools whose TLS connections verify nodes against `trust` when an upstream asks for verification, and which
    /// dial only the addresses `policy` admits.
    pub fn new(trust: Trust, policy: AddressPolicy) -> Pools {
        Pools { inner: Arc::new(Registry { trust, policy: Arc::new(policy), ..Registry::default() }) }
    }

    /// The addresses nodes may be dialled at.
    pub fn policy(&self) -> &Arc<AddressPolicy> {
        &self.inner.policy
    }

    /// The TLS client for `settings`, built on first use (certificates and keys are parsed here, off the request
    /// path); the error says what is wrong with the settings.
    pub fn tls(&self, settings: &TlsSettings) -> Result<Arc<TlsClient>, String> {
        let mut cache = self.inner.tls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = cache.get(settings).and_then(Weak::upgrade) {
            return Ok(client);
        }
        let client = Arc::new(TlsClient::new(settings, &self.inner.trust)?);
        cache.insert(settings.clone(), Arc::downgrade(&client));
        Ok(client)
    }

    /// The pool of `authority` with these settings: the existing one while any upstream still uses it, else a new
    /// one.
    pub fn node(
        &self,
        authority: &Authority,
        pool: Pool,
        tls: Option<Arc<TlsClient>>,
        protocol: Protocol,
    ) -> Arc<NodePool> {
        let tls_settings = tls.as_ref().map(|t| t.settings().clone());
        let key = PoolKey { authority: authority.clone(), pool, tls: tls_settings, protocol };
        let mut pools = self.inner.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = pools.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let node = Arc::new(NodePool::new(authority, pool, tls, protocol, self.inner.policy.clone()));
        pools.insert(key, Arc::downgrade(&node));
        node
    }

    /// Closes idle connections past their idle timeout and forgets pools and TLS clients no upstream uses any more.
    pub fn sweep(&self) {
        self.inner.tls.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, weak| weak.strong_count() > 0);
        let live: Vec<Arc<NodePool>> = {
            let mut pools = self.inner.pools.lock().unwrap_or_else(|e| e.into_inner());
            pools.retain(|_, weak| weak.strong_count() > 0);
            pools.values().filter_map(Weak::upgrade).collect()
        };
        let now = Instant::now();
        for pool in live {
            pool.expire(now);
        }
    }

    /// The number of node pools in use.
    pub fn len(&self) -> usize {
        self.inner.pools.lock().unwrap_or_else(|e| e.into_inner()).values().filter(|w| w.strong_count() > 0).count()
    }

    /// Whether no node pool is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools").field("nodes", &self.len()).finish()
    }
}

/// Where a node is dialled: a parsed address when the node is an IP (no resolver involved), else a name.
#[derive(Debug)]
enum Dial {
    Addr(SocketAddr),
    Name(String, u16),
}

/// The idle connections of one node.
#[derive(Debug)]
pub struct NodePool {
    dial: Dial,
    /// The node's host as written, the SNI fallback for TLS.
    pub(super) host: String,
    settings: Pool,
    pub(super) tls: Option<Arc<TlsClient>>,
    protocol: Protocol,
    /// HTTP/1.1: oldest first; requests take from the back (most recently used).
    /// Boxed, so a connection moving between the pool and a response body is a pointer.
    idle: Mutex<VecDeque<Box<Conn>>>,
    /// HTTP/2: the shared connections, one per TLS server name.
    pub(super) shared: super::http2::Shared,
    /// The addresses it may be dialled at (shared by every pool).
    policy: Arc<AddressPolicy>,
}

/// One HTTP/1.1 connection to a node, owned by a request while it is in use.
#[derive(Debug)]
pub struct Conn {
    connection: Connection,
    /// Requests sent on it so far.
    served: u64,
    /// The TLS server name it was opened with; a connection is reused only for the same name.
    server_name: Option<Arc<str>>,
    /// When it was last handed back.
    idle_since: Instant,
    /// Whether it came from the pool (a reused connection may have been closed by the node meanwhile).
    reused: bool,
    /// The response deadline, kept with the connection: moving a registered timer's deadline later is one atomic
    /// operation, where a new timer per request costs a registration and a removal in the timer wheel.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl Conn {
    /// Sets the deadline for the next response head.
    fn arm(&mut self, deadline: Instant) {
        match &mut self.deadline {
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.deadline = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }
}

impl NodePool {
    fn new(
        authority: &Authority,
        settings: Pool,
        tls: Option<Arc<TlsClient>>,
        protocol: Protocol,
        policy: Arc<AddressPolicy>,
    ) -> NodePool {
        let host = authority.host().trim_matches(['[', ']']).to_string();
        let port = authority.port_u16().unwrap_or(if tls.is_some() { 443 } else { 80 });
        let dial = match host.parse::<IpAddr>() {
            Ok(ip) => Dial::Addr(SocketAddr::new(ip, port)),
            Err(_) => Dial::Name(host.clone(), port),
        };
        let (idle, shared) = (Mutex::new(VecDeque::new()), super::http2::Shared::default());
        NodePool { dial, host, settings, tls, protocol, idle, shared, policy }
    }

    /// Whether connections to this node use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Sends the request `parts` and `body` on an idle connection, or on a new one opened within the connect
    /// timeout, and reads the response head by the deadline.
    /// `server_name` is the TLS SNI (the `Host` sent to the node, without port); ignored for plain HTTP. `extra`
    /// are fields written after the request's own. A pooled
    /// connection the node closed meanwhile is replaced by a fresh one transparently when nothing of the request
    /// could have been acted on: it was not sent, or it has no body and an idempotent method (as nginx retries).
    /// `upgrade` says the request asks to switch protocols: a 101 answer then hands the connection to the caller
    /// ([`UpstreamBody::into_upgraded`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        self: &Arc<Self>,
        parts: &http::request::Parts,
        body: Option<RequestBody>,
        extra: &[(&'static str, &[u8])],
        server_name: Option<&str>,
        timing: Timing,
        upgrade: bool,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let Timing { started: now, connect, deadline, .. } = timing;
        let server_name = self.tls.as_ref().map(|_| server_name.filter(|n| !n.is_empty()).unwrap_or(&self.host));
        if self.protocol == Protocol::Http2 {
            return self.send_http2(parts, body, extra, server_name, timing).await;
        }
        let head_request = parts.method == Method::HEAD;
        let mut conn = match self.take(server_name, now) {
            Some(conn) => conn,
            None => Box::pin(self.connect(connect, server_name)).await?,
        };
        let framed = conn.connection.encode_head(parts, extra, body.as_ref());
        let mut upload = Upload::new(body, framed);
        loop {
            let mut received = false;
            conn.arm(deadline);
            conn.connection.set_upgrading(upgrade);
            let error = match exchange_head(&mut conn, &mut upload, head_request, &mut received, &timing).await {
                Ok(head) => {
                    conn.served += 1;
                    if head.parts.status == StatusCode::SWITCHING_PROTOCOLS {
                        let body = Http1Body::switched(self.clone(), conn, upload);
                        return Ok(Response::from_parts(head.parts, UpstreamBody::Http1(body)));
                    }
                    let body = Http1Body::new(self.clone(), conn, upload, head.framing, head.keep_alive);
                    return Ok(Response::from_parts(head.parts, UpstreamBody::Http1(body)));
                }
                Err(Failure::NodeTimeout) => return Err(SendError::Timeout),
                Err(Failure::ClientTimeout) => return Err(SendError::ClientTimeout),
                Err(Failure::Error(e)) => e,
            };
            if received || matches!(error, http1::Error::Client(_)) {
                return Err(SendError::Http(error));
            }
            let unsent = !upload.head_written(&conn.connection);
            if !conn.reused {
                // A fresh connection the node closed at once: this node is not taking requests.
                return Err(if unsent { SendError::Connect(ConnectError::Closed) } else { SendError::Http(error) });
            }
            if !(upload.is_replayable() && (unsent || parts.method.is_idempotent())) {
                return Err(SendError::Http(error));
            }
            debug!(node = ?self.dial, %error, "pooled connection was closed; sending again on a new one");
            let mut fresh = Box::pin(self.connect(connect, server_name)).await?;
            conn.connection.hand_head_to(&mut fresh.connection);
            upload.restart();
            conn = fresh;
        }
    }

    /// Hands a connection back after its response has been read to the end.
    fn put(&self, mut conn: Box<Conn>) {
        if conn.served >= self.settings.requests {
            return;
        }
        conn.idle_since = Instant::now();
        conn.reused = true;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Full: the oldest idle connection goes, as in nginx's keepalive cache.
        if idle.len() >= self.settings.size {
            idle.pop_front();
        }
        idle.push_back(conn);
    }

    /// The most recently used idle connection for `server_name` that is still usable.
    fn take(&self, server_name: Option<&str>, now: Instant) -> Option<Box<Conn>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(at) = idle.iter().rposition(|c| c.server_name.as_deref() == server_name) {
            let mut conn = idle.remove(at)?;
            if now.duration_since(conn.idle_since) < self.settings.idle_timeout && conn.connection.is_idle_usable() {
                return Some(conn);
            }
        }
        None
    }

    fn expire(&self, now: Instant) {
        let timeout = self.settings.idle_timeout;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain_mut(|c| now.duration_since(c.idle_since) < timeout && c.connection.is_idle_usable());
    }

    /// Opens a connection: TCP, then TLS when configured, both within `limit`.
    async fn connect(&self, limit: Duration, server_name: Option<&str>) -> Result<Box<Conn>, ConnectError> {
        let opened = self.open(limit, server_name).await?;
        Ok(Box::new(Conn {
            connection: Connection::new(opened),
            served: 0,
            server_name: server_name.map(Arc::from),
            idle_since: Instant::now(),
            reused: false,
            deadline: None,
        }))
    }

    /// Opens a TCP connection to the node (on `port` instead of its own, for health probes), when the address
    /// policy admits where it resolves to.
    pub(super) async fn tcp(&self, port: Option<u16>) -> Result<TcpStream, ConnectError> {
        Ok(match &self.dial {
            Dial::Addr(addr) => {
                policy::connect_addr(&self.policy, SocketAddr::new(addr.ip(), port.unwrap_or(addr.port()))).await?
            }
            Dial::Name(host, own) => policy::connect(&self.policy, host, port.unwrap_or(*own)).await?,
        })
    }

    /// Opens a stream to the node: TCP, then TLS when configured, both within `limit`.
    pub(super) async fn open(&self, limit: Duration, server_name: Option<&str>) -> Result<Stream, ConnectError> {
        tokio::time::timeout(limit, async {
            let tcp = self.tcp(None).await?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                Some(tls) => {
                    let name = server_name.unwrap_or(&self.host);
                    let sni =
                        ServerName::try_from(name.to_string()).map_err(|_| ConnectError::ServerName(name.into()))?;
                    let stream = tls.connector().connect(sni, tcp).await.map_err(ConnectError::Tls)?;
                    Ok(Stream::Tls(Box::new(stream)))
                }
                None => Ok(Stream::Tcp(tcp)),
            }
        })
        .await
        .map_err(|_| ConnectError::Timeout(limit))?
    }
}

/// Sends the request and reads the response head. A write failure does not end the exchange at once: a node that
/// answers early (413) and stops reading may have sent its answer already, and that answer is the one to pass on.
///
/// Deadlines: a request sent at once keeps the connection's deadline (armed by the caller). While a body is being
/// uploaded the deadline moves with the upload: each time bytes move it is set `send` ahead when the node is not
/// taking bytes, `client_body` ahead when the client is not sending them; once the upload ends, `read` ahead. So a
/// slow client upload is neither a node timeout nor counted against the node, and a node that stops reading is.
async fn exchange_head(
    conn: &mut Conn,
    upload: &mut Upload,
    head_request: bool,
    received: &mut bool,
    timing: &Timing,
) -> Result<Head, Failure> {
    let mut write_error = None;
    let (mut uploading, mut stalled_once, mut moved) = (true, false, upload.moved());
    let Conn { connection, deadline, .. } = conn;
    std::future::poll_fn(|cx| {
        if write_error.is_none() {
            match upload.poll(connection, cx) {
                Poll::Ready(Err(e @ http1::Error::Client(_))) => return Poll::Ready(Err(Failure::Error(e))),
                Poll::Ready(Err(e)) => {
                    upload.abandon();
                    write_error = Some(e);
                }
                _ => {}
            }
        }
        if uploading {
            let rearm = if upload.is_done() || write_error.is_some() {
                uploading = false;
                // Only an upload that had to wait moved the deadline; one sent at once keeps the caller's.
                stalled_once.then_some(timing.read)
            } else {
                let now_moved = upload.moved();
                let rearm = !stalled_once || now_moved != moved;
                (stalled_once, moved) = (true, now_moved);
                rearm.then(|| if upload.waiting_on_client() { timing.client_body } else { timing.send })
            };
            if let (Some(limit), Some(timer)) = (rearm, deadline.as_mut()) {
                timer.as_mut().reset(Instant::now() + limit);
            }
        }
        match connection.poll_head(cx, head_request, received) {
            Poll::Ready(Ok(head)) => Poll::Ready(Ok(head)),
            Poll::Ready(Err(http1::Error::ClosedBeforeResponse)) if write_error.is_some() => {
                Poll::Ready(Err(write_error.take().map_or(Failure::NodeTimeout, Failure::Error)))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(Failure::Error(e))),
            // Checked only while waiting, so an answer that is already here costs no look at the clock.
            Poll::Pending => match deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) if uploading && upload.waiting_on_client() => {
                    Poll::Ready(Err(Failure::ClientTimeout))
                }
                Some(Poll::Ready(())) => Poll::Ready(Err(Failure::NodeTimeout)),
                _ => Poll::Pending,
            },
        }
    })
    .await
}

/// A node's response body, from either transport.
#[derive(Debug)]
pub enum UpstreamBody {
    /// Read from an HTTP/1.1 connection.
    Http1(Http1Body),
    /// An HTTP/2 stream (trailers included).
    Http2(hyper::body::Incoming),
}

impl UpstreamBody {
    /// After a 101 answer: the connection's stream and what the node sent after the head, for the tunnel between
    /// client and node. `None` for any other answer.
    pub fn into_upgraded(self) -> Option<(Stream, BytesMut)> {
        match self {
            UpstreamBody::Http1(body) => body.into_upgraded(),
            UpstreamBody::Http2(_) => None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = http1::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, http1::Error>>> {
        match self.get_mut() {
            UpstreamBody::Http1(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::Http2(body) => Pin::new(body).poll_frame(cx).map_err(http1::Error::Http2),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Http1(body) => body.is_end_stream(),
            UpstreamBody::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Http1(body) => body.size_hint(),
            UpstreamBody::Http2(body) => body.size_hint(),
        }
    }
}

/// A node's response body, read from its HTTP/1.1 connection as the client takes it. The connection goes back to
/// its pool when the body has been read to its end and the request body was sent in full; otherwise it is closed
/// (as nginx does), since the node may still be reading or writing.
#[derive(Debug)]
pub struct Http1Body {
    pool: Arc<NodePool>,
    conn: Option<Box<Conn>>,
    upload: Upload,
    framing: Framing,
    keep_alive: bool,
    /// The whole body when it came with the head: the connection has gone back already.
    buffered: Option<Bytes>,
}

impl Http1Body {
    fn new(pool: Arc<NodePool>, mut conn: Box<Conn>, upload: Upload, mut framing: Framing, keep_alive: bool) -> Self {
        let buffered = framing.take_buffered(&mut conn.connection);
        let mut body = Http1Body { pool, conn: Some(conn), upload, framing, keep_alive, buffered };
        if body.framing.is_end() {
            body.finish();
        }
        body
    }

    /// The body of a 101 answer: none, and the connection is kept for [`UpstreamBody::into_upgraded`].
    fn switched(pool: Arc<NodePool>, conn: Box<Conn>, upload: Upload) -> Self {
        Http1Body { pool, conn: Some(conn), upload, framing: Framing::Done, keep_alive: false, buffered: None }
    }

    /// After a 101 answer: the connection's stream and what the node sent after the head.
    fn into_upgraded(mut self) -> Option<(Stream, BytesMut)> {
        self.conn.take().map(|conn| conn.connection.into_io())
    }

    /// The body has been read to its end: the connection is handed back if it can carry another request.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && self.upload.is_done()
        {
            self.pool.put(conn);
        }
    }
}

impl Body for Http1Body {
    type Data = Bytes;
    type Error = http1::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, http1::Error>>> {
        let this = &mut *self;
        if let Some(data) = this.buffered.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
        // The request body keeps going up while the response comes down: a node may read it as it answers.
        if let Poll::Ready(Err(e)) = this.upload.poll(&mut conn.connection, cx) {
            debug!(error = %e, "sending the request body stopped while the response streamed");
            this.upload.abandon();
            this.keep_alive = false;
        }
        let frame = ready!(this.framing.poll_frame(&mut conn.connection, cx));
        match &frame {
            Some(Err(_)) => this.conn = None,
            Some(Ok(_)) if !this.framing.is_end() => {}
            _ => this.finish(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_none() && self.framing.is_end()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.buffered {
            Some(data) => SizeHint::with_exact(data.len() as u64),
            None => self.framing.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_are_shared_while_in_use_and_forgotten_after() {
        let pools = Pools::default();
        let a: Authority = "127.0.0.1:1".parse().unwrap();
        let first = pools.node(&a, Pool::default(), None, Protocol::Http1);
        let again = pools.node(&a, Pool::default(), None, Protocol::Http1);
        assert!(Arc::ptr_eq(&first, &again));
        let other = pools.node(&a, Pool { size: 1, ..Pool::default() }, None, Protocol::Http1);
        assert!(!Arc::ptr_eq(&first, &other), "different settings, different pool");
        assert_eq!(pools.len(), 2);
        drop((first, again, other));
        pools.sweep();
        assert!(pools.is_empty());
    }

    #[test]
    fn tls_clients_are_shared_while_in_use_and_forgotten_after() {
        let pools = Pools::default();
        let settings = TlsSettings::default();
        let first = pools.tls(&settings).unwrap();
        let again = pools.tls(&settings).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let cached = || pools.inner.tls.lock().unwrap().len();
        pools.sweep();
        assert_eq!(cached(), 1, "kept while an upstream holds it");
        drop((first, again));
        pools.sweep();
        assert_eq!(cached(), 0, "forgotten once nothing holds it");
    }
}
