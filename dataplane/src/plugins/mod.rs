//! Plugins: the phase hooks a request runs through, in APISIX's order, and one file per plugin.
//!
//! A plugin is built once, on the configuration thread, from its typed configuration in `sluice-model`
//! ([`registry`] maps each name to its factory and default priority); the instance is kept across configuration
//! updates that do not change it, so counters and caches survive. Per request, the proxy drives a route's
//! [`Chain`] through a [`Session`]: global rules first, then the route's plugins (its own, its plugin config's and
//! its service's, merged by name), with the authenticated consumer's plugins merged in after the rewrite phase.
//!
//! Phases: rewrite → access (may wait on something asynchronous) → request body (buffered, for plugins that ask)
//! → before-proxy (once per attempt) → response header → response body (a filter per request) → log (when the
//! response is done). A [`Plugin`] implements only the hooks it needs and says which in [`Plugin::phases`], so a
//! chain skips the rest without calling them.

mod chain;
mod ctx;
pub mod registry;
mod session;

pub mod access_log;
mod api_breaker;
mod auth;
mod basic_auth;
mod brotli;
mod client_control;
mod compress;
mod consumer_restriction;
mod cors;
mod fault_injection;
mod forward_auth;
mod gzip;
mod hmac_auth;
mod http_logger;
mod ip_restriction;
pub mod jwt_auth;
mod key_auth;
mod limit;
mod limit_conn;
mod limit_count;
mod limit_req;
mod log;
mod mocking;
mod opentelemetry;
mod outbound;
mod prometheus;
mod proxy_mirror;
mod proxy_rewrite;
mod real_ip;
mod redirect;
mod redis_count;
mod referer_restriction;
mod request_id;
mod response_rewrite;
mod traffic_split;
mod ua_restriction;
mod uri_blocker;
mod values;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode, request, response};

pub use chain::{Chain, Slot};
pub use ctx::{Consumer, Consumers, Ctx, RouteMeta};
pub use jwt_auth::keys as jwt_keys;
pub use registry::{BuildError, Built, Enabled, Registry};
pub use session::Session;

/// The phases a plugin takes part in, as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Phases(u8);

impl Phases {
    /// [`Plugin::rewrite`].
    pub const REWRITE: Phases = Phases(1);
    /// [`Plugin::access`].
    pub const ACCESS: Phases = Phases(1 << 1);
    /// [`Plugin::request_body`].
    pub const REQUEST_BODY: Phases = Phases(1 << 2);
    /// [`Plugin::before_proxy`].
    pub const BEFORE_PROXY: Phases = Phases(1 << 3);
    /// [`Plugin::response_header`].
    pub const RESPONSE_HEADER: Phases = Phases(1 << 4);
    /// [`Plugin::response_body`].
    pub const RESPONSE_BODY: Phases = Phases(1 << 5);
    /// [`Plugin::log`].
    pub const LOG: Phases = Phases(1 << 6);

    /// Whether every phase of `other` is in this set.
    pub fn has(self, other: Phases) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Phases {
    type Output = Phases;
    fn bitor(self, other: Phases) -> Phases {
        Phases(self.0 | other.0)
    }
}

impl std::ops::BitOrAssign for Phases {
    fn bitor_assign(&mut self, other: Phases) {
        self.0 |= other.0;
    }
}

/// A response a plugin answers with instead of proxying.
pub type Reply = Response<Bytes>;

/// What happens after an asynchronous step of the access phase completes: it may still change the request.
pub type Resume = Box<dyn FnOnce(&mut Ctx, &mut request::Parts) -> Flow + Send>;

/// An asynchronous step of the access phase (an external authorisation call, say); the worker is not blocked.
pub type Pending = Pin<Box<dyn Future<Output = Resume> + Send>>;

/// What a request-side phase decided.
pub enum Flow {
    /// Go on with the next plugin and phase.
    Continue,
    /// Answer the client now (authentication failures, redirects, mocks, ...).
    Respond(Reply),
    /// Wait for this, then apply its result.
    Wait(Pending),
}

impl fmt::Debug for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Flow::Continue => f.write_str("Continue"),
            Flow::Respond(r) => write!(f, "Respond({})", r.status()),
            Flow::Wait(_) => f.write_str("Wait"),
        }
    }
}

/// A streaming transformation of one response body (compression, replacement), created per request.
pub trait BodyFilter: Send {
    /// Transforms one data chunk; may return an empty chunk while it buffers.
    fn data(&mut self, chunk: Bytes) -> Bytes;
    /// The end of the body: anything still buffered.
    fn end(&mut self) -> Bytes;
}

/// A plugin instance: built once per configuration, shared by every request that runs it.
pub trait Plugin: Send + Sync + fmt::Debug {
    /// The phases this plugin implements; the others are never called.
    fn phases(&self) -> Phases;

    /// Before anything else: may change the request or answer it. Authentication plugins run here.
    fn rewrite(&self, _ctx: &mut Ctx, _req: &mut request::Parts) -> Flow {
        Flow::Continue
    }

    /// Access control, after the consumer's plugins are merged in: may answer, or wait on something.
    fn access(&self, _ctx: &mut Ctx, _req: &mut request::Parts) -> Flow {
        Flow::Continue
    }

    /// The whole request body (read into memory, up to a limit) for plugins that need it.
    fn request_body(&self, _ctx: &mut Ctx, _req: &mut request::Parts, _body: &Bytes) -> Flow {
        Flow::Continue
    }

    /// Just before the request goes to a node (once per attempt).
    fn before_proxy(&self, _ctx: &mut Ctx, _req: &mut request::Parts) {}

    /// The response head, from a node or from the data plane.
    fn response_header(&self, _ctx: &mut Ctx, _resp: &mut response::Parts) {}

    /// Whether this plugin's body filter compresses: those are created after (and run after) every other
    /// plugin's, so that rewrites see the body as it came and compression sees the final one.
    fn compresses(&self) -> bool {
        false
    }

    /// A filter for this response's body, or `None` to leave it alone. Called after every response-header hook.
    fn response_body(&self, _ctx: &Ctx, _resp: &mut response::Parts) -> Option<Box<dyn BodyFilter>> {
        None
    }

    /// After the response is complete (or the client went away). Must not block: loggers queue.
    fn log(&self, _ctx: &Ctx) {}
}

/// A copy of a prepared answer (responses are not `Clone`; the body is shared, not copied).
pub fn clone_reply(reply: &Reply) -> Reply {
    let mut copy = Response::new(reply.body().clone());
    *copy.status_mut() = reply.status();
    *copy.headers_mut() = reply.headers().clone();
    copy
}

/// A JSON answer in APISIX's plugin shape, `{"message":"..."}`.
pub fn message(status: StatusCode, text: &str) -> Reply {
    json_reply(status, serde_json::json!({ "message": text }).to_string())
}

/// A JSON answer with `body` as written.
pub fn json_reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A plain text answer (APISIX sends `rejected_msg` strings and plugin bodies as given).
pub fn text_reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

#[cfg(test)]
mod tests;

/// Feeds arbitrary bytes through plugin configuration: decoded as a `plugins` map and as a consumer's, built
/// with every factory, and a request run through the resulting chain (each step bounded in time). Never panics
/// on any input; the fuzz target and the corpus replay test call it.
pub fn exercise(data: &[u8]) {
    let Ok(map) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data) else { return };
    let _ = sluice_model::ConsumerPlugins::from_json(map.clone());
    let Ok(plugins) = sluice_model::Plugins::from_json(map) else { return };
    let registry = Registry::new(Enabled::all(), crate::metrics::Metrics::new());
    let Ok(built) = registry.build_all(&plugins, &[], "routes/fuzz") else { return };
    let chain = Chain::new(registry::slots(&built));
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_time().build() else { return };
    runtime.block_on(async move {
        let req = http::Request::get("/a/b?x=1")
            .header("host", "example.com")
            .header("authorization", "Basic Zm9vOmJhcg==")
            .header("apikey", "k")
            .body(())
            .map(|r| r.into_parts().0);
        let Ok(mut req) = req else { return };
        let ctx = Ctx::new(None, std::net::SocketAddr::from(([10, 0, 0, 1], 5000)), &req, Arc::default());
        let mut session = Session::new(ctx, Chain::default(), chain);
        let limit = std::time::Duration::from_millis(50);
        let answered = tokio::time::timeout(limit, session.request(&mut req)).await.ok().flatten();
        let reply = answered
            .unwrap_or_else(|| text_reply(StatusCode::OK, "a body long enough to be compressed, and rewritten"));
        let _ = session.request_body(&mut req, &Bytes::from_static(b"{}"));
        session.before_proxy(&mut req);
        std::hint::black_box(session.reply(reply));
    });
}
