//! Connections to upstream nodes: dialled on demand over TCP or TLS, handed back when a response has been read to
//! its end, and reused by the next request to the same node.
//!
//! Each node has a [`NodePool`] of idle HTTP/1.1 connections. Pools live in [`Pools`], keyed by node address and
//! connection settings, so they outlive the upstream objects that use them: when an upstream changes (endpoint
//! churn), its unchanged nodes keep their warm connections. A request takes the most recently used idle connection
//! (the one least likely to have been closed by the node), sends on it directly, and returns it from the response
//! body once the body has ended; nothing on this path goes through a shared client or a per-request task.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use crate::tls::{TlsClient, TlsSettings, Trust};

/// The body sent to nodes: the client's stream, or nothing for a body-less request (so it can be replayed).
pub type ProxyBody = Either<UploadBody, Empty<Bytes>>;

/// A client's request body on its way to a node, noting when it has been sent to the end: until then the
/// connection is still busy with this request even after the response ends (a node may answer early, say 413),
/// and must not carry another.
#[derive(Debug)]
pub struct UploadBody {
    inner: Incoming,
    sent: Arc<AtomicBool>,
}

impl UploadBody {
    /// Wraps `inner`; the flag turns true once its last frame has been taken.
    pub fn new(inner: Incoming) -> (UploadBody, Arc<AtomicBool>) {
        let sent = Arc::new(AtomicBool::new(false));
        (UploadBody { inner, sent: sent.clone() }, sent)
    }
}

impl Body for UploadBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(f) = &frame
            && (f.is_none() || (matches!(f, Some(Ok(_))) && this.inner.is_end_stream()))
        {
            this.sent.store(true, Ordering::Release);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

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
    /// hyper refused the connection (should not happen for a fresh socket).
    #[error("HTTP/1.1 handshake: {0}")]
    Handshake(hyper::Error),
}

/// Why a request could not be exchanged on a connection.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened: the request was never sent, so another node may be tried.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The request was sent (or partly sent) and the exchange failed.
    #[error(transparent)]
    Http(hyper::Error),
}

/// Identifies a node pool: the address, the pool settings and the TLS settings (none for plain HTTP).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    authority: Authority,
    pool: Pool,
    tls: Option<TlsSettings>,
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
}

impl Pools {
    /// Pools whose TLS connections verify nodes against `trust` when an upstream asks for verification.
    pub fn new(trust: Trust) -> Pools {
        Pools { inner: Arc::new(Registry { trust, ..Registry::default() }) }
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
    pub fn node(&self, authority: &Authority, pool: Pool, tls: Option<Arc<TlsClient>>) -> Arc<NodePool> {
        let key = PoolKey { authority: authority.clone(), pool, tls: tls.as_ref().map(|t| t.settings().clone()) };
        let mut pools = self.inner.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = pools.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let node = Arc::new(NodePool::new(authority, pool, tls));
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
    host: String,
    settings: Pool,
    tls: Option<Arc<TlsClient>>,
    /// Oldest first; requests take from the back (most recently used).
    idle: Mutex<VecDeque<Conn>>,
}

/// One HTTP/1.1 connection to a node, owned by a request while it is in use.
#[derive(Debug)]
pub struct Conn {
    sender: http1::SendRequest<ProxyBody>,
    /// Requests sent on it so far.
    served: u64,
    /// The TLS server name it was opened with; a connection is reused only for the same name.
    server_name: Option<Arc<str>>,
    /// When it was last handed back.
    idle_since: Instant,
    /// Whether it came from the pool (a reused connection may have been closed by the node meanwhile).
    reused: bool,
}

impl NodePool {
    fn new(authority: &Authority, settings: Pool, tls: Option<Arc<TlsClient>>) -> NodePool {
        let host = authority.host().trim_matches(['[', ']']).to_string();
        let port = authority.port_u16().unwrap_or(if tls.is_some() { 443 } else { 80 });
        let dial = match host.parse::<IpAddr>() {
            Ok(ip) => Dial::Addr(SocketAddr::new(ip, port)),
            Err(_) => Dial::Name(host.clone(), port),
        };
        NodePool { dial, host, settings, tls, idle: Mutex::new(VecDeque::new()) }
    }

    /// Whether connections to this node use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Sends `req` on an idle connection, or on a new one opened within `connect`. `server_name` is the TLS SNI
    /// (the `Host` sent to the node, without port); ignored for plain HTTP. A pooled connection the node closed
    /// meanwhile is replaced by a fresh one transparently when the request had not been sent yet.
    pub async fn send(
        &self,
        mut req: Request<ProxyBody>,
        connect: Duration,
        server_name: Option<&str>,
    ) -> Result<(Response<Incoming>, Conn), SendError> {
        let server_name = self.tls.as_ref().map(|_| server_name.filter(|n| !n.is_empty()).unwrap_or(&self.host));
        let mut conn = match self.take(server_name) {
            Some(conn) => conn,
            None => self.connect(connect, server_name).await?,
        };
        loop {
            if conn.sender.ready().await.is_err() {
                if !conn.reused {
                    // A fresh connection the node closed at once: this node is not taking requests.
                    return Err(SendError::Connect(ConnectError::Closed));
                }
                // Closed while idle: the request has not been sent.
                debug!(node = ?self.dial, "pooled connection was closed; opening another");
                conn = self.connect(connect, server_name).await?;
                continue;
            }
            match conn.sender.try_send_request(req).await {
                Ok(resp) => {
                    conn.served += 1;
                    return Ok((resp, conn));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if conn.reused => {
                        debug!(node = ?self.dial, error = %e.error(), "pooled connection failed before sending; retrying");
                        req = unsent;
                        conn = self.connect(connect, server_name).await?;
                    }
                    // Never sent on a new connection: the node is not taking requests; another may be tried.
                    Some(_) => return Err(SendError::Connect(ConnectError::Closed)),
                    None => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }

    /// Hands a connection back after its response has been read to the end.
    pub fn put(&self, mut conn: Conn) {
        if conn.served >= self.settings.requests || conn.sender.is_closed() {
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
    fn take(&self, server_name: Option<&str>) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        while let Some(at) = idle.iter().rposition(|c| c.server_name.as_deref() == server_name) {
            let conn = idle.remove(at)?;
            if !conn.sender.is_closed() && now.duration_since(conn.idle_since) < self.settings.idle_timeout {
                return Some(conn);
            }
        }
        None
    }

    fn expire(&self, now: Instant) {
        let timeout = self.settings.idle_timeout;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|c| !c.sender.is_closed() && now.duration_since(c.idle_since) < timeout);
    }

    /// Opens a connection: TCP, then TLS when configured, then the HTTP/1.1 handshake, all within `limit`.
    async fn connect(&self, limit: Duration, server_name: Option<&str>) -> Result<Conn, ConnectError> {
        let opened = tokio::time::timeout(limit, async {
            let tcp = match &self.dial {
                Dial::Addr(addr) => TcpStream::connect(addr).await,
                Dial::Name(host, port) => TcpStream::connect((host.as_str(), *port)).await,
            }
            .map_err(ConnectError::Tcp)?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                Some(tls) => {
                    let name = server_name.unwrap_or(&self.host);
                    let sni =
                        ServerName::try_from(name.to_string()).map_err(|_| ConnectError::ServerName(name.into()))?;
                    let stream = tls.connector().connect(sni, tcp).await.map_err(ConnectError::Tls)?;
                    handshake(TokioIo::new(stream)).await
                }
                None => handshake(TokioIo::new(tcp)).await,
            }
        })
        .await
        .map_err(|_| ConnectError::Timeout(limit))??;
        Ok(Conn {
            sender: opened,
            served: 0,
            server_name: server_name.map(Arc::from),
            idle_since: Instant::now(),
            reused: false,
        })
    }
}

/// Runs the HTTP/1.1 client handshake on `io` and spawns the task that drives the connection.
async fn handshake<T>(io: TokioIo<T>) -> Result<http1::SendRequest<ProxyBody>, ConnectError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new().handshake(io).await.map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// A connection on loan to a response body: handed back to its pool when the body ends, closed if dropped early.
#[derive(Debug)]
pub struct Loan {
    pool: Arc<NodePool>,
    conn: Option<Conn>,
    /// For a request with a body, whether that body has been sent in full.
    upload: Option<Arc<AtomicBool>>,
}

impl Loan {
    /// Lends `conn` of `pool` to a response body; `upload` is the request body's flag ([`UploadBody`]), if any.
    pub fn new(pool: Arc<NodePool>, conn: Conn, upload: Option<Arc<AtomicBool>>) -> Loan {
        Loan { pool, conn: Some(conn), upload }
    }

    /// The response was read to its end: the connection can carry another request, unless the request body is
    /// still being sent (then it is closed, as nginx does).
    pub fn finish(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.upload.as_ref().is_none_or(|sent| sent.load(Ordering::Acquire))
        {
            self.pool.put(conn);
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
        let first = pools.node(&a, Pool::default(), None);
        let again = pools.node(&a, Pool::default(), None);
        assert!(Arc::ptr_eq(&first, &again));
        let other = pools.node(&a, Pool { size: 1, ..Pool::default() }, None);
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
