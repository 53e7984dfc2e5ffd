//! The request path: match a route in the current snapshot, pick a node, forward the request on a pooled
//! connection and stream the response back. Bodies are streamed in both directions, never buffered.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use sluice_model::PassHost;
use tokio::time::{Instant, Sleep};
use tracing::{debug, warn};

use crate::Shared;
use crate::error::{ProxyError, Unresolved};
use crate::listener::Transport;
use crate::plugins::{Ctx, Reply, Session};
use crate::router::normalize::{InvalidPath, normalize};
use crate::router::{RequestInfo, normalize_host};
use crate::tunnel;
use crate::upstream::UpstreamRuntime;
use crate::upstream::health::Observed;
use crate::upstream::http1::{BodyError, RequestBody, is_hop_by_hop};
use crate::upstream::pool::{SendError, Timing, UpstreamBody};
use crate::upstream::tls::server_name;

pub use crate::upstream::pool::Pool;

/// The body returned to clients: a node's stream, or an error the data plane wrote.
pub type ResponseBody = Either<ReadTimeoutBody, Full<Bytes>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client end of a connection, computed once per connection rather than per request.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Its IP as a header value (`X-Real-IP`, the last `X-Forwarded-For` hop).
    pub ip: HeaderValue,
    /// The proxy listener's port (`X-Forwarded-Port`).
    pub port: HeaderValue,
    /// Whether the connection is TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
    /// The server name its TLS handshake asked for, lowercase.
    pub sni: Option<Box<str>>,
    /// Whether its TLS handshake verified a client certificate.
    pub client_verified: bool,
}

impl Peer {
    /// The peer `addr` on a listener bound to `port`, connected as `transport` says.
    pub fn new(addr: SocketAddr, port: HeaderValue, transport: &Transport) -> Peer {
        let Transport { tls, sni, client_verified, client, port: forwarded_port } = transport.clone();
        // Behind a load balancer speaking the PROXY protocol, the client and the port it reached come from it.
        let addr = client.unwrap_or(addr);
        let port = forwarded_port.map_or(port, HeaderValue::from);
        Peer { addr, ip: ip_value(addr), port, tls, sni, client_verified }
    }

    /// The same connection, with the client found at `addr` (behind a trusted proxy).
    fn moved_to(&self, addr: SocketAddr) -> Peer {
        Peer { addr, ip: ip_value(addr), ..self.clone() }
    }
}

fn ip_value(addr: SocketAddr) -> HeaderValue {
    HeaderValue::try_from(addr.ip().to_canonical().to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Serves one client request; never fails (errors become JSON responses).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let mut session = None;
    // Read before the request moves: a gRPC client gets the data plane's own errors as gRPC statuses.
    let grpc = crate::error::is_grpc(req.headers());
    let http1 = req.version() <= http::Version::HTTP_11;
    let mut resp = match proxy(&shared, &peer, req, &mut session).await {
        Ok(resp) => resp,
        Err(err) => {
            if err.blames_node() {
                warn!(client = %peer.addr, error = %err, "proxying failed");
            }
            // Plugins see the data plane's own answers too; their log phase runs as `session` drops here.
            let answer = if grpc { err.grpc_reply() } else { err.reply() };
            let reply = match session.as_mut() {
                Some(s) => s.reply(answer),
                None => answer,
            };
            full(reply)
        }
    };
    // While draining, HTTP/1.1 clients are asked to take their next request elsewhere (HTTP/2 ones get GOAWAY
    // when the listener closes).
    if http1 && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS && shared.draining.load(Ordering::Relaxed) {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    shared.metrics.request(resp.status().as_u16());
    Ok(resp)
}

/// The most of a request body read into memory for plugins that need it whole.
const MAX_PLUGIN_BODY: usize = 64 * 1024 * 1024;

/// Reads a request body whole, up to `limit` bytes; beyond, the 413 to answer with.
async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, Reply> {
    let too_large = |size: u64| {
        let text = format!("request size {size} is greater than the maximum size {limit} allowed");
        crate::plugins::message(http::StatusCode::PAYLOAD_TOO_LARGE, &text)
    };
    if let Some(size) = body.size_hint().exact().filter(|s| *s > limit as u64) {
        return Err(too_large(size));
    }
    let limited = http_body_util::Limited::new(body, limit);
    match http_body_util::BodyExt::collect(limited).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large(limit as u64 + 1)),
        Err(_) => Err(crate::plugins::message(http::StatusCode::BAD_REQUEST, "failed to read the request body")),
    }
}

/// A data plane answer as a response to the client.
fn full(reply: Reply) -> Response<ResponseBody> {
    let (head, body) = reply.into_parts();
    Response::from_parts(head, Either::Right(Full::new(body)))
}

/// The `Host` a request names: its header, else the authority of an absolute URI (HTTP/2's `:authority`).
fn request_host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> &'a str {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// Proxies one request. When plugins run for it (the route's, or global rules), `session` receives their state,
/// so the caller can run the late phases on error answers; on success it moves into the response body.
async fn proxy(
    shared: &Shared,
    peer: &Peer,
    mut req: Request<Incoming>,
    session: &mut Option<Box<Session>>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let remote = peer.addr;
    let limits = &shared.limits;
    if req.uri().path_and_query().map_or(0, |pq| pq.as_str().len()) > limits.max_uri_bytes {
        return Err(ProxyError::UriTooLong(limits.max_uri_bytes));
    }
    // Matched, seen by plugins and sent to the node in one normal form.
    normalize_target(req.uri_mut())?;
    let (entry, global, consumers) = {
        let config = shared.config.load();
        let host = normalize_host(request_host(req.headers(), req.uri()));
        let info = RequestInfo {
            method: req.method(),
            host: &host,
            path: req.uri().path(),
            query: req.uri().query(),
            headers: req.headers(),
            remote_addr: remote.ip(),
            tls: peer.tls,
        };
        if peer.tls && !config.certificates.admits(&host, peer.sni.as_deref(), peer.client_verified) {
            return Err(ProxyError::Misdirected);
        }
        // Clone the entry out so the snapshot guard is not held while the request is in flight.
        let entry = config.router.find(&info).cloned();
        let global = match &config.global {
            Ok(chain) if chain.is_empty() => None,
            Ok(chain) => Some(chain.clone()),
            Err(reason) => return Err(ProxyError::Unresolved(reason.clone())),
        };
        let plugins = global.is_some() || entry.as_ref().is_some_and(|e| !e.value.chain.is_empty());
        (entry, global, plugins.then(|| config.consumers.clone()))
    };
    // A WebSocket (or other protocol switch) on a route that allows it: the client's connection is taken over once
    // the node agrees. Everywhere else the `Upgrade` field is dropped with the other hop-by-hop fields.
    let upgrade =
        entry.as_ref().filter(|e| e.value.websocket).and_then(|_| tunnel::requested(req.version(), req.headers()));
    let on_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    // Before the plugins run: a client's `Connection` field must not be able to remove what they add (identity
    // headers, proxy-rewrite's headers, trace context).
    strip_hop_by_hop(&mut parts.headers);
    if let Some(consumers) = consumers {
        let meta = entry.as_ref().map(|e| e.value.meta.clone());
        let chain = entry.as_ref().map(|e| e.value.chain.clone()).unwrap_or_default();
        let mut ctx = Ctx::new(meta, remote, &parts, consumers);
        ctx.tls = peer.tls;
        let s = session.insert(Session::new(ctx, global.unwrap_or_default(), chain));
        // Boxed: the plugin phases' state stays out of every request's future, plugins or not.
        if let Some(reply) = Box::pin(s.request(&mut parts)).await {
            return Ok(full(s.reply(reply)));
        }
    }
    // The body limit: the route's own (client-control; 0 lifts it), else the listener's.
    let body_limit = match session.as_ref().and_then(|s| s.ctx.max_body_size) {
        Some(0) => None,
        Some(size) => Some(size),
        None => limits.max_body_bytes,
    };
    // A declared length (Content-Length, or an HTTP/2 content-length) is known before any byte is read.
    if let Some(max) = body_limit.filter(|max| body.size_hint().lower() > *max) {
        return Err(ProxyError::BodyTooLarge(max));
    }
    // A plugin that needs the body whole (hmac-auth's digest) gets it read into memory; it is then sent from there.
    let body = match session.as_mut().filter(|s| s.wants_request_body()) {
        None => match body_limit {
            Some(limit) => RequestBody::Limited { body, left: limit, limit },
            None => RequestBody::Stream(body),
        },
        Some(s) => {
            // The body limit, when there is one, caps what is read into memory too.
            let cap =
                body_limit.map_or(MAX_PLUGIN_BODY, |m| usize::try_from(m).unwrap_or(usize::MAX).min(MAX_PLUGIN_BODY));
            let bytes = match Box::pin(read_body(body, cap)).await {
                Ok(bytes) => bytes,
                Err(reply) => return Ok(full(s.reply(reply))),
            };
            if let Some(reply) = s.request_body(&mut parts, &bytes) {
                return Ok(full(s.reply(reply)));
            }
            RequestBody::Buffered(Some(bytes))
        }
    };
    let entry = entry.ok_or(ProxyError::RouteNotFound)?;
    let target = &entry.value;
    // traffic-split's choice, when it made one, replaces the route's own upstream.
    let destination = match session.as_ref().and_then(|s| s.ctx.split) {
        None => None,
        Some(n) => Some(target.splits.get(n).ok_or(ProxyError::Unresolved(Unresolved::NoUpstream))?),
    };
    let (upstream, timeouts) = match destination {
        Some(d) => (&d.upstream, d.timeouts),
        None => (&target.upstream, target.timeouts),
    };
    let upstream = match upstream {
        Ok(upstream) => upstream,
        Err(reason) => {
            if target.first_warning() {
                warn!(route = %target.route_id, %reason, "route cannot be served; answering 503");
            }
            return Err(ProxyError::Unresolved(reason.clone()));
        }
    };
    if let Some(s) = session.as_mut() {
        s.ctx.upstream = Some(upstream.name.clone());
    }
    let hash = if upstream.hashes() {
        // Hashed after the plugins' rewrite and access phases, as APISIX's balancer phase sees the request.
        let host = normalize_host(request_host(&parts.headers, &parts.uri));
        let info = RequestInfo {
            method: &parts.method,
            host: &host,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            remote_addr: remote.ip(),
            tls: peer.tls,
        };
        upstream.hash(&info, session.as_ref().and_then(|s| s.ctx.consumer_name()))
    } else {
        0
    };
    let Some(mut node) = upstream.balancer.pick(hash, &[]) else {
        if target.first_warning() {
            warn!(route = %target.route_id, upstream = %upstream.name, "upstream has no node with a positive weight");
        }
        return Err(ProxyError::NoNodes(upstream.name.clone()));
    };

    let original_host = match parts.headers.get(header::HOST) {
        Some(h) => Some(h.clone()),
        None => parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    // proxy-rewrite's `host` replaces what `pass_host` would send.
    let host_override = session.as_mut().and_then(|s| s.ctx.upstream_host.take());
    // real-ip may have found the client behind a trusted proxy: the node is told about that one.
    let moved = session.as_ref().map(|s| s.ctx.client).filter(|c| *c != peer.addr).map(|c| peer.moved_to(c));
    let forwarded = Forwarded::take(&mut parts.headers, moved.as_ref().unwrap_or(peer), original_host.as_ref());
    // When a plugin has a before-proxy phase, the forwarding fields go into the map, where it sees them; otherwise
    // they are written straight into the request head, which spares the map from growing by five fields.
    let (extra, used) = if session.as_ref().is_some_and(|s| s.has(crate::plugins::Phases::BEFORE_PROXY)) {
        forwarded.insert_into(&mut parts.headers);
        ([("", &b""[..]); 5], 0)
    } else {
        forwarded.fields()
    };
    // Nodes get the origin form (`/path?query`), whatever form the client used.
    if parts.uri.authority().is_some() || parts.uri.path_and_query().is_none() {
        parts.uri = Uri::from(parts.uri.path_and_query().cloned().unwrap_or(PathAndQuery::from_static("/")));
    }
    if let Some(protocol) = &upgrade {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }
    // A request without a body can be sent again to another node if the first cannot be reached.
    let replayable = body.is_end_stream();
    let max_tries = if replayable { upstream.max_tries } else { 1 };
    let mut body = Some(body).filter(|b| !b.is_end_stream());
    let mut tried: Vec<usize> = Vec::new();
    let mut first_attempt = None;
    let limit = timeouts.connect + timeouts.read;
    loop {
        let sni = match &host_override {
            Some(host) => {
                parts.headers.insert(header::HOST, host.clone());
                upstream.nodes[node].pool.is_tls().then(|| server_name(host)).flatten()
            }
            None => prepare_attempt(&mut parts, upstream, node, original_host.as_ref()),
        };
        if let Some(s) = session.as_mut() {
            s.before_proxy(&mut parts);
        }
        let target_node = &upstream.nodes[node];
        // Created before the await so a client that goes away still releases the node's in-flight count.
        let in_flight = InFlight::start(upstream, node);
        // One clock read serves the deadline, the pool's idle check and the latency. The deadline covers opening a
        // connection too; the connect timeout alone bounds that part.
        let sent = Instant::now();
        let first_attempt = *first_attempt.get_or_insert(sent);
        let timing = Timing {
            started: sent,
            connect: timeouts.connect,
            deadline: sent + limit,
            send: timeouts.send,
            client_body: limits.body_timeout,
            read: timeouts.read,
        };
        let exchange =
            target_node.pool.send(&parts, body.take(), &extra[..used], sni.as_deref(), timing, upgrade.is_some());
        match exchange.await {
            Ok(resp) => {
                let latency = sent.elapsed();
                upstream.balancer.observe(node, latency);
                upstream.metrics.latency.observe(latency.as_secs_f64());
                upstream.observe(node, Observed::Status(resp.status().as_u16()));
                if let Some(s) = session.as_mut() {
                    s.ctx.node = Some(target_node.address.clone());
                    s.ctx.upstream_status = Some(resp.status());
                    s.ctx.upstream_latency = Some(latency);
                }
                if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                    return switched(resp, on_upgrade, timeouts.read, session.take(), in_flight);
                }
                return Ok(response(resp, timeouts.read, session.take(), in_flight));
            }
            Err(SendError::Connect(e)) => {
                debug!(node = %target_node.authority, error = %e, "cannot connect to node");
                if matches!(e, crate::upstream::pool::ConnectError::Refused(_)) {
                    upstream.metrics.refused.inc();
                }
                upstream.observe(node, Observed::ConnectFailure);
                tried.push(node);
                // `retry_timeout` bounds when a new attempt may start, not how long it may take.
                let expired = upstream.retry_timeout.is_some_and(|limit| first_attempt.elapsed() >= limit);
                // Checked before picking: a pick advances the round-robin position.
                let last = tried.len() >= max_tries;
                let next = if last || expired { None } else { upstream.balancer.pick(hash, &tried) };
                match next {
                    Some(n) => {
                        upstream.metrics.retries.inc();
                        node = n;
                    }
                    None => {
                        if let Some(s) = session.as_mut() {
                            s.ctx.node = Some(target_node.address.clone());
                        }
                        return Err(ProxyError::Connect {
                            upstream: upstream.name.clone(),
                            tried: tried.len(),
                            reason: error_chain(&e),
                        });
                    }
                }
            }
            Err(SendError::Http(crate::upstream::http1::Error::Client(BodyError::TooLarge(limit)))) => {
                return Err(ProxyError::BodyTooLarge(limit));
            }
            Err(SendError::Http(crate::upstream::http1::Error::Client(e))) => {
                debug!(client = %peer.addr, error = %e, "the client's request body broke off");
                return Err(ProxyError::ClientBody(e.to_string()));
            }
            Err(SendError::Http(e)) => {
                if let Some(s) = session.as_mut() {
                    s.ctx.node = Some(target_node.address.clone());
                }
                return Err(ProxyError::Upstream { node: target_node.authority.to_string(), reason: error_chain(&e) });
            }
            Err(SendError::ClientTimeout) => {
                debug!(client = %peer.addr, "the client stopped sending its request body");
                return Err(ProxyError::ClientTimeout);
            }
            Err(SendError::Timeout) => {
                upstream.observe(node, Observed::Timeout);
                if let Some(s) = session.as_mut() {
                    s.ctx.node = Some(target_node.address.clone());
                }
                return Err(ProxyError::Timeout {
                    node: target_node.authority.to_string(),
                    seconds: timeouts.read.as_secs_f64(),
                });
            }
        }
    }
}

/// One request in flight on a node, for the load-aware balancers; ends when dropped (with the response body, so
/// `least_conn` counts a streaming response as busy until it is done).
#[derive(Debug)]
pub struct InFlight {
    upstream: Arc<UpstreamRuntime>,
    node: usize,
}

impl InFlight {
    /// Counts a request on `node`; `None` when the upstream's balancer does not track load.
    fn start(upstream: &Arc<UpstreamRuntime>, node: usize) -> Option<InFlight> {
        upstream.balancer.tracks_load().then(|| {
            upstream.balancer.start(node);
            InFlight { upstream: upstream.clone(), node }
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.upstream.balancer.end(self.node);
    }
}

/// Sets the `Host` sent to `node` and returns the TLS server name for it (that `Host` without its port, as APISIX's
/// `proxy_ssl_name`).
fn prepare_attempt<'u>(
    parts: &mut http::request::Parts,
    upstream: &'u UpstreamRuntime,
    node: usize,
    original_host: Option<&'u HeaderValue>,
) -> Option<Cow<'u, str>> {
    let target = &upstream.nodes[node];
    let host = match upstream.pass_host() {
        PassHost::Pass => original_host,
        PassHost::Node => Some(&target.host_header),
        PassHost::Rewrite => upstream.rewrite_host.as_ref(),
    };
    // HTTP/1.1 requires a Host; a client without one (HTTP/1.0) gets the node's.
    parts.headers.insert(header::HOST, host.unwrap_or(&target.host_header).clone());
    // Only a client's Host is read here (borrowed, not parsed into an owned authority); node and rewrite names were
    // worked out with the configuration. A Host that is no valid TLS name (a client's `a..b`) falls back to the
    // node's own name rather than failing the handshake and counting it against the node.
    if !target.pool.is_tls() {
        return None;
    }
    let chosen = match upstream.pass_host() {
        PassHost::Pass => original_host.and_then(server_name),
        PassHost::Node => None,
        PassHost::Rewrite => upstream.rewrite_tls_name.as_deref().map(Cow::Borrowed),
    };
    chosen.or_else(|| target.tls_name.as_deref().map(Cow::Borrowed))
}

fn response(
    resp: Response<UpstreamBody>,
    read_timeout: Duration,
    mut session: Option<Box<Session>>,
    in_flight: Option<InFlight>,
) -> Response<ResponseBody> {
    // The exchange has left the node's hop-by-hop fields out already.
    let (mut parts, body) = resp.into_parts();
    if let Some(s) = session.as_mut() {
        s.response_header(&mut parts);
    }
    let body = ReadTimeoutBody::new(body, read_timeout, session, in_flight);
    Response::from_parts(parts, Either::Left(body))
}

/// Replaces the request's path with its normal form (see [`crate::router::normalize`]), keeping the query.
fn normalize_target(uri: &mut Uri) -> Result<(), InvalidPath> {
    let normal = match normalize(uri.path())? {
        Cow::Borrowed(_) => return Ok(()),
        Cow::Owned(path) => path,
    };
    let target = match uri.query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(target).map_err(|_| InvalidPath)?);
    *uri = Uri::from_parts(parts).map_err(|_| InvalidPath)?;
    Ok(())
}

/// Answers the client with the node's 101 and joins the two connections once hyper hands the client's over.
fn switched(
    resp: Response<UpstreamBody>,
    client: Option<hyper::upgrade::OnUpgrade>,
    read_timeout: Duration,
    mut session: Option<Box<Session>>,
    in_flight: Option<InFlight>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    // The pool accepts a 101 only for a request that asked to switch, which is when `client` is set.
    let (Some(client), Some((node, early))) = (client, body.into_upgraded()) else {
        let reason = "a 101 answer to a request that did not ask to switch protocols".to_string();
        return Err(ProxyError::Upstream { node: "unknown".into(), reason });
    };
    if let Some(s) = session.as_mut() {
        s.response_header(&mut parts);
    }
    parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    tunnel::spawn(client, node, early, read_timeout, in_flight);
    Ok(Response::from_parts(parts, Either::Right(Full::new(Bytes::new()))))
}

/// Removes the fields meaningful only for the client's connection (RFC 9110 section 7.6.1), and those its
/// `Connection` field names, keeping `te: trailers`, the one TE value a proxy may pass on (gRPC needs it).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the few fields a request has usually finds none, where removing each name would hash it.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if let Some(named) = headers.get(header::CONNECTION).and_then(|v| v.to_str().ok()).map(str::to_owned) {
        for name in named.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                headers.remove(name);
            }
        }
    }
    let te_trailers = headers.get(header::TE).is_some_and(|v| v == "trailers");
    let present: Vec<HeaderName> = headers.keys().filter(|n| is_hop_by_hop(n)).cloned().collect();
    for name in present {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The fields a proxy adds for the node (X-Forwarded-For, -Proto, -Host, -Port and X-Real-IP); whatever the client
/// sent under these names is replaced, except that an earlier X-Forwarded-For chain is extended.
#[derive(Debug)]
struct Forwarded<'a> {
    xff: Cow<'a, [u8]>,
    ip: &'a [u8],
    host: Option<&'a [u8]>,
    port: &'a [u8],
    proto: &'static [u8],
}

/// The names [`Forwarded`] writes, in its order.
static FORWARDED: [HeaderName; 5] = [
    X_FORWARDED_FOR,
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
];

impl<'a> Forwarded<'a> {
    /// Takes the client's own forwarding fields out of `headers` and works out the ones to send.
    fn take(headers: &mut HeaderMap, peer: &'a Peer, host: Option<&'a HeaderValue>) -> Forwarded<'a> {
        let mut xff = Cow::Borrowed(peer.ip.as_bytes());
        // Usually the client sent none of them: one scan instead of five removals by name.
        if headers.keys().any(|k| FORWARDED.contains(k)) {
            if headers.contains_key(X_FORWARDED_FOR) {
                let mut joined = Vec::new();
                for v in headers.get_all(X_FORWARDED_FOR) {
                    joined.extend_from_slice(v.as_bytes());
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(peer.ip.as_bytes());
                xff = Cow::Owned(joined);
            }
            for name in &FORWARDED {
                headers.remove(name);
            }
        }
        let proto: &'static [u8] = if peer.tls { b"https" } else { b"http" };
        Forwarded {
            xff,
            ip: peer.ip.as_bytes(),
            host: host.map(HeaderValue::as_bytes),
            port: peer.port.as_bytes(),
            proto,
        }
    }

    /// The fields as names and values, and how many of the slots are used.
    fn fields(&self) -> ([(&'static str, &[u8]); 5], usize) {
        let mut fields = [("", &b""[..]); 5];
        let values = [Some(&*self.xff), Some(self.ip), Some(self.proto), self.host, Some(self.port)];
        let mut used = 0;
        for (name, value) in FORWARDED.iter().zip(values) {
            if let Some(value) = value {
                fields[used] = (name.as_str(), value);
                used += 1;
            }
        }
        (fields, used)
    }

    /// Puts the fields into `headers`, where the route's plugins can see and change them.
    fn insert_into(&self, headers: &mut HeaderMap) {
        let (fields, used) = self.fields();
        for (name, value) in &fields[..used] {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A node's response body that fails when the node stays silent longer than the read timeout between two frames,
/// and runs the route's response-body and log phases when it has plugins.
#[derive(Debug)]
pub struct ReadTimeoutBody {
    inner: UpstreamBody,
    timeout: Duration,
    /// Armed only once the node keeps the body waiting, so a body that is already here costs no timer.
    deadline: Option<Pin<Box<Sleep>>>,
    /// When the last frame arrived, tracked only while `deadline` is armed (the deadline moves lazily).
    last_frame: Option<Instant>,
    /// The request's plugins; their log phase runs when the body is dropped.
    session: Option<Box<Session>>,
    /// The body filters' last output was sent (the end of the body has been reported).
    ended: bool,
    /// Keeps the node counted as busy until the body is done.
    _in_flight: Option<InFlight>,
}

impl ReadTimeoutBody {
    fn new(
        inner: UpstreamBody,
        timeout: Duration,
        session: Option<Box<Session>>,
        in_flight: Option<InFlight>,
    ) -> ReadTimeoutBody {
        ReadTimeoutBody {
            inner,
            timeout,
            deadline: None,
            last_frame: None,
            session,
            ended: false,
            _in_flight: in_flight,
        }
    }

    /// Whether the read timeout has passed since the last frame; re-arms the deadline when it has not.
    fn poll_timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = self.timeout;
        let deadline = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        loop {
            if deadline.as_mut().poll(cx).is_pending() {
                return false;
            }
            match self.last_frame.take() {
                // Frames came in since the deadline was set: it really is `timeout` after the last one.
                Some(at) if at.checked_add(timeout).is_some_and(|d| d > Instant::now()) => {
                    deadline.as_mut().reset(at + timeout)
                }
                _ => return true,
            }
        }
    }
}

impl Body for ReadTimeoutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(frame) => {
                    if this.deadline.is_some() {
                        this.last_frame = Some(Instant::now());
                    }
                    let Some(session) = this.session.as_mut() else {
                        return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
                    };
                    if !session.filters_body() {
                        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(|f| f.data_ref())) {
                            session.sent(data.map_or(0, Bytes::len));
                        }
                        return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
                    }
                    // Filtered: data goes through the filters; the end flushes them; trailers pass after that.
                    match frame {
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(chunk) => {
                                let out = session.body_chunk(chunk);
                                if !out.is_empty() {
                                    return Poll::Ready(Some(Ok(Frame::data(out))));
                                }
                            }
                            Err(other) => {
                                // Trailers are the last frame: the filters are flushed first. When they still
                                // held data, the trailers are dropped (rare over HTTP/1.1, and the body changed).
                                this.ended = true;
                                let tail = session.body_end();
                                if !tail.is_empty() {
                                    return Poll::Ready(Some(Ok(Frame::data(tail))));
                                }
                                return Poll::Ready(Some(Ok(other)));
                            }
                        },
                        Some(Err(e)) => return Poll::Ready(Some(Err(BoxError::from(e)))),
                        None => {
                            this.ended = true;
                            let tail = session.body_end();
                            return Poll::Ready((!tail.is_empty()).then(|| Ok(Frame::data(tail))));
                        }
                    }
                }
                Poll::Pending if this.poll_timed_out(cx) => {
                    return Poll::Ready(Some(Err("timed out reading the response body from the node".into())));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // A filtered body may still owe the filters' tail after the node's end.
        self.ended || (self.inner.is_end_stream() && self.session.as_ref().is_none_or(|s| !s.filters_body()))
    }

    fn size_hint(&self) -> SizeHint {
        if self.session.as_ref().is_some_and(|s| s.filters_body()) {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("te", "gzip".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
        let mut h = HeaderMap::new();
        h.insert("te", "trailers".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.contains_key("te"));
    }

    #[test]
    fn appends_forwarding_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.1.1.1".parse().unwrap());
        let host = HeaderValue::from_static("example.com:9080");
        let peer = Peer::new("10.0.0.9:5555".parse().unwrap(), HeaderValue::from_static("9080"), &Transport::default());
        Forwarded::take(&mut h, &peer, Some(&host)).insert_into(&mut h);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 10.0.0.9");
        assert_eq!(h["x-real-ip"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com:9080");
        assert_eq!(h["x-forwarded-port"], "9080");
        // Over TLS, with a client that claims another scheme.
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", "http".parse().unwrap());
        let tls = Transport { tls: true, ..Transport::default() };
        let peer = Peer::new("10.0.0.9:5555".parse().unwrap(), HeaderValue::from_static("9443"), &tls);
        Forwarded::take(&mut h, &peer, Some(&host)).insert_into(&mut h);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-port"], "9443");
    }
}
