//! The request path: match a route in the current snapshot, pick a node, forward the request and stream the
//! response back. Bodies are streamed in both directions, never buffered.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sluice_model::PassHost;
use tokio::time::{Instant, Sleep};
use tracing::{debug, warn};

use crate::Shared;
use crate::config::{Target, UpstreamRuntime};
use crate::error::ProxyError;
use crate::health::Observed;
use crate::pipeline::{Ctx, Finish, Flow};
use crate::router::{RequestInfo, normalize_host};

/// The body sent to nodes: the client's stream, or nothing for a body-less request (so it can be replayed).
pub type ProxyBody = Either<Incoming, Empty<Bytes>>;
/// The pooled HTTP client used to talk to nodes.
pub type HttpClient = Client<HttpConnector, ProxyBody>;
/// The body returned to clients: a node's stream, or an error the data plane wrote.
pub type ResponseBody = Either<ReadTimeoutBody, Full<Bytes>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long an idle pooled connection to a node is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// HTTP clients by connect timeout and connection-pool settings: the connector owns the timeout and the client
/// its pool, so routes that differ in either need different clients. Kept for the life of the data plane so
/// connection pools survive config changes; there are as many as distinct combinations in the configuration.
#[derive(Default)]
pub struct Clients {
    by_settings: HashMap<(Duration, Pool), HttpClient>,
}

/// An upstream's `keepalive_pool`: idle connections kept per node and how long they may stay idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pool {
    /// Idle connections kept per node.
    pub size: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
}

impl Default for Pool {
    /// APISIX's defaults: 320 connections, 60 seconds.
    fn default() -> Self {
        Pool { size: 320, idle_timeout: POOL_IDLE }
    }
}

impl Clients {
    /// The client for `connect` and `pool`, built on first use.
    pub fn get(&mut self, connect: Duration, pool: Pool) -> HttpClient {
        self.by_settings.entry((connect, pool)).or_insert_with(|| build_client(connect, pool)).clone()
    }
}

fn build_client(connect: Duration, pool: Pool) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(pool.idle_timeout)
        .pool_max_idle_per_host(pool.size)
        .build(connector)
}

/// Serves one client request; never fails (errors become JSON responses).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    remote: SocketAddr,
    port: HeaderValue,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let mut finish = None;
    let resp = match proxy(&shared, remote, port, req, &mut finish).await {
        Ok(resp) => resp,
        Err(err) => {
            match &err {
                ProxyError::RouteNotFound | ProxyError::Unresolved(_) | ProxyError::NoNodes(_) => {}
                e @ (ProxyError::Connect { .. } | ProxyError::Timeout { .. } | ProxyError::Upstream { .. }) => {
                    warn!(client = %remote, error = %e, "proxying failed")
                }
            }
            let (mut head, body) = err.response().into_parts();
            // Plugins see the data plane's own answers too; their log phase runs as `finish` drops here.
            if let Some(f) = finish.as_mut() {
                f.pipeline.response_header(&mut f.ctx, &mut head);
            }
            Response::from_parts(head, Either::Right(body))
        }
    };
    shared.metrics.request(resp.status().as_u16());
    Ok(resp)
}

/// Proxies one request. When the route has plugins, `finish` receives the pipeline and its context, so the caller
/// can run the late phases on error answers; on success it moves into the response body.
async fn proxy(
    shared: &Shared,
    remote: SocketAddr,
    port: HeaderValue,
    req: Request<Incoming>,
    finish: &mut Option<Finish>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let entry = {
        let config = shared.config.load();
        let raw_host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("");
        let host = normalize_host(raw_host);
        let info = RequestInfo {
            method: req.method(),
            host: &host,
            path: req.uri().path(),
            query: req.uri().query(),
            headers: req.headers(),
            remote_addr: remote.ip(),
        };
        // Clone the entry out so the snapshot guard is not held while the request is in flight.
        config.router.find(&info).cloned().ok_or(ProxyError::RouteNotFound)?
    };
    let target = &entry.value;
    let (mut parts, body) = req.into_parts();
    if !target.pipeline.is_empty() {
        let f =
            finish.insert(Finish { pipeline: target.pipeline.clone(), ctx: Ctx::new(target.route_id.clone(), remote) });
        if let Flow::Respond(resp) = f.pipeline.request(&mut f.ctx, &mut parts) {
            let (mut head, bytes) = resp.into_parts();
            f.pipeline.response_header(&mut f.ctx, &mut head);
            return Ok(Response::from_parts(head, Either::Right(Full::new(bytes))));
        }
    }
    let upstream = match &target.upstream {
        Ok(upstream) => upstream,
        Err(reason) => {
            if target.first_warning() {
                warn!(route = %target.route_id, %reason, "route cannot be served; answering 503");
            }
            return Err(ProxyError::Unresolved(reason.clone()));
        }
    };
    if let Some(f) = finish.as_mut() {
        f.ctx.upstream = Some(upstream.name.clone());
    }
    let hash = if upstream.hashes() {
        // Hashed after the plugins' rewrite and access phases, as APISIX's balancer phase sees the request.
        let raw_host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or("");
        let host = normalize_host(raw_host);
        let info = RequestInfo {
            method: &parts.method,
            host: &host,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            remote_addr: remote.ip(),
        };
        upstream.hash(&info)
    } else {
        0
    };
    let Some(mut node) = upstream.balancer.pick(hash, &[]) else {
        if target.first_warning() {
            warn!(route = %target.route_id, upstream = %upstream.name, "upstream has no node with a positive weight");
        }
        return Err(ProxyError::NoNodes(upstream.name.clone()));
    };

    let original_host = parts
        .headers
        .get(header::HOST)
        .cloned()
        .or_else(|| parts.uri.authority().and_then(|a| a.as_str().parse().ok()));
    strip_hop_by_hop(&mut parts.headers);
    add_forwarded(&mut parts.headers, remote, original_host.as_ref(), port);
    let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    // A request without a body can be sent again to another node if the first cannot be reached.
    let replayable = body.is_end_stream();
    let max_tries = if replayable { upstream.max_tries } else { 1 };
    let mut body = Some(body);
    let mut tried: Vec<usize> = Vec::new();
    let first_attempt = Instant::now();
    loop {
        let last = tried.len() + 1 >= max_tries;
        let mut outgoing = build_request(&mut parts, &path, upstream, node, original_host.as_ref(), last, &mut body);
        if let Some(f) = finish.as_mut() {
            let (mut head, b) = outgoing.into_parts();
            f.pipeline.before_proxy(&mut f.ctx, &mut head);
            outgoing = Request::from_parts(head, b);
        }
        let node_addr = &upstream.nodes[node].authority;
        let limit = target.timeouts.connect + target.timeouts.read;
        // Created before the await so a client that goes away still releases the node's in-flight count.
        let in_flight = InFlight::start(upstream, node);
        let sent = Instant::now();
        match tokio::time::timeout(limit, target.client.request(outgoing)).await {
            Ok(Ok(resp)) => {
                let latency = sent.elapsed();
                upstream.balancer.observe(node, latency);
                upstream.metrics.latency.observe(latency.as_secs_f64());
                upstream.observe(node, Observed::Status(resp.status().as_u16()));
                return Ok(response(resp, target, finish.take(), in_flight));
            }
            Ok(Err(e)) if e.is_connect() => {
                debug!(node = %node_addr, error = %e, "cannot connect to node");
                upstream.observe(node, Observed::ConnectFailure);
                tried.push(node);
                // `retry_timeout` bounds when a new attempt may start, not how long it may take.
                let expired = upstream.retry_timeout.is_some_and(|limit| first_attempt.elapsed() >= limit);
                // Checked before picking: a pick advances the round-robin position.
                let next = if last || expired { None } else { upstream.balancer.pick(hash, &tried) };
                match next {
                    Some(n) => {
                        upstream.metrics.retries.inc();
                        node = n;
                    }
                    None => {
                        return Err(ProxyError::Connect {
                            upstream: upstream.name.clone(),
                            tried: tried.len(),
                            reason: error_chain(&e),
                        });
                    }
                }
            }
            Ok(Err(e)) => return Err(ProxyError::Upstream { node: node_addr.to_string(), reason: error_chain(&e) }),
            Err(_elapsed) => {
                upstream.observe(node, Observed::Timeout);
                return Err(ProxyError::Timeout {
                    node: node_addr.to_string(),
                    seconds: target.timeouts.read.as_secs_f64(),
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

/// The request for one attempt; the last attempt takes the headers instead of cloning them.
fn build_request(
    parts: &mut http::request::Parts,
    path: &PathAndQuery,
    upstream: &UpstreamRuntime,
    node: usize,
    original_host: Option<&HeaderValue>,
    last: bool,
    body: &mut Option<Incoming>,
) -> Request<ProxyBody> {
    let body = match body.take() {
        Some(b) if !b.is_end_stream() => Either::Left(b),
        _ => Either::Right(Empty::new()),
    };
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = if last { std::mem::take(&mut parts.headers) } else { parts.headers.clone() };
    let target = &upstream.nodes[node];
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(target.authority.clone());
    uri.path_and_query = Some(path.clone());
    *req.uri_mut() = Uri::from_parts(uri).unwrap_or_default();
    let host = match upstream.pass_host() {
        PassHost::Pass => original_host.cloned(),
        PassHost::Node => Some(target.host_header.clone()),
        PassHost::Rewrite => upstream.rewrite_host.clone(),
    };
    match host {
        Some(h) => req.headers_mut().insert(header::HOST, h),
        None => req.headers_mut().remove(header::HOST),
    };
    req
}

fn response(
    resp: Response<Incoming>,
    target: &Target,
    mut finish: Option<Finish>,
    in_flight: Option<InFlight>,
) -> Response<ResponseBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(f) = finish.as_mut() {
        f.pipeline.response_header(&mut f.ctx, &mut parts);
    }
    let body = ReadTimeoutBody::new(body, target.timeouts.read, finish.map(Box::new), in_flight);
    Response::from_parts(parts, Either::Left(body))
}

/// Headers meaningful only for one connection (RFC 9110 section 7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(named) = headers.get(header::CONNECTION).and_then(|v| v.to_str().ok()).map(str::to_owned) {
        for name in named.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                headers.remove(name);
            }
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    // `te: trailers` is the one TE value a proxy may pass on (gRPC needs it).
    if headers.get(header::TE).is_some_and(|v| v != "trailers") {
        headers.remove(header::TE);
    }
}

fn add_forwarded(headers: &mut HeaderMap, remote: SocketAddr, host: Option<&HeaderValue>, port: HeaderValue) {
    let ip = remote.ip().to_canonical().to_string();
    let ip_value = HeaderValue::try_from(ip.as_str()).ok();
    let xff_name = HeaderName::from_static("x-forwarded-for");
    let previous: Vec<&str> = headers.get_all(&xff_name).iter().filter_map(|v| v.to_str().ok()).collect();
    let xff = if previous.is_empty() { ip.clone() } else { format!("{}, {ip}", previous.join(", ")) };
    if let Ok(v) = HeaderValue::try_from(xff) {
        headers.insert(xff_name, v);
    }
    if let Some(v) = ip_value {
        headers.insert(HeaderName::from_static("x-real-ip"), v);
    }
    headers.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static("http"));
    if let Some(host) = host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    headers.insert(HeaderName::from_static("x-forwarded-port"), port);
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
    inner: Incoming,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    /// The pipeline and context; its log phase runs when the body is dropped.
    finish: Option<Box<Finish>>,
    /// Keeps the node counted as busy until the body is done.
    _in_flight: Option<InFlight>,
}

impl ReadTimeoutBody {
    fn new(
        inner: Incoming,
        timeout: Duration,
        finish: Option<Box<Finish>>,
        in_flight: Option<InFlight>,
    ) -> ReadTimeoutBody {
        let deadline = Box::pin(tokio::time::sleep(timeout));
        ReadTimeoutBody { inner, timeout, deadline, finish, _in_flight: in_flight }
    }
}

impl Body for ReadTimeoutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = Instant::now() + this.timeout;
                this.deadline.as_mut().reset(next);
                let end = this.inner.is_end_stream();
                let frame = match (&mut this.finish, frame) {
                    (Some(f), Some(Ok(frame))) if f.pipeline.wants_body() => match frame.into_data() {
                        Ok(mut chunk) => {
                            let Finish { pipeline, ctx } = &mut **f;
                            pipeline.response_body(ctx, &mut chunk, end);
                            Some(Ok(Frame::data(chunk)))
                        }
                        Err(other) => Some(Ok(other)),
                    },
                    (_, frame) => frame,
                };
                Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err("timed out reading the response body from the node".into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
        add_forwarded(&mut h, "10.0.0.9:5555".parse().unwrap(), Some(&host), HeaderValue::from_static("9080"));
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 10.0.0.9");
        assert_eq!(h["x-real-ip"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com:9080");
        assert_eq!(h["x-forwarded-port"], "9080");
    }
}
