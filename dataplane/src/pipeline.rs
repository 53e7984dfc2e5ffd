//! The request pipeline as phase hooks, in APISIX's order: rewrite → access → before-proxy (once per attempt) →
//! response-header → response-body (per data frame) → log.
//!
//! A [`Plugin`] implements only the phases it cares about; every hook has a default body that does nothing. The
//! proxy drives a route's [`Pipeline`] with one [`Ctx`] per request. A route's pipeline is resolved when the route
//! is compiled (route, plugin config and service plugins), so the request path only iterates a slice; with no
//! plugins every phase is skipped at the cost of one length check.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Extensions, Response, StatusCode, request, response};

/// Per-request state handed to every phase.
#[derive(Debug)]
pub struct Ctx {
    /// The matched route.
    pub route_id: Arc<str>,
    /// The client's address.
    pub client: SocketAddr,
    /// When the request arrived.
    pub started: Instant,
    /// The status sent to the client, once known.
    pub status: Option<StatusCode>,
    /// The upstream the request went to, once chosen.
    pub upstream: Option<Arc<str>>,
    /// Values plugins hand to later phases or to other plugins (consumer, rate-limit state, ...).
    pub extensions: Extensions,
}

impl Ctx {
    /// A context for a request matched to `route_id`.
    pub fn new(route_id: Arc<str>, client: SocketAddr) -> Ctx {
        Ctx { route_id, client, started: Instant::now(), status: None, upstream: None, extensions: Extensions::new() }
    }
}

/// What a request-side phase decided.
#[derive(Debug)]
pub enum Flow {
    /// Go on with the next plugin and phase.
    Continue,
    /// Answer the client now with this response (authentication failures, rate limits, redirects...).
    Respond(Response<Bytes>),
}

/// A plugin: a name, a priority (higher runs first, as in APISIX) and the phases it hooks.
pub trait Plugin: Send + Sync + fmt::Debug {
    /// The plugin's name, as in `plugins` objects.
    fn name(&self) -> &str;

    /// Higher runs first.
    fn priority(&self) -> i32 {
        0
    }

    /// Before anything else: may change the request (path, headers) or answer it.
    fn rewrite(&self, _ctx: &mut Ctx, _req: &mut request::Parts) -> Flow {
        Flow::Continue
    }

    /// Access control: may answer the request instead of proxying it.
    fn access(&self, _ctx: &mut Ctx, _req: &mut request::Parts) -> Flow {
        Flow::Continue
    }

    /// Just before a request goes to a node (once per attempt): the outgoing headers and URI may change.
    fn before_proxy(&self, _ctx: &mut Ctx, _req: &mut request::Parts) {}

    /// The response head, from a node or from the data plane.
    fn response_header(&self, _ctx: &mut Ctx, _resp: &mut response::Parts) {}

    /// Whether [`Plugin::response_body`] must see the body; when no plugin does, frames pass untouched.
    fn wants_body(&self) -> bool {
        false
    }

    /// Each data frame of the response body; `end` is set on the last one.
    fn response_body(&self, _ctx: &mut Ctx, _chunk: &mut Bytes, _end: bool) {}

    /// After the response is complete (or the client went away).
    fn log(&self, _ctx: &Ctx) {}
}

/// The plugins of one route, in the order they run.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    plugins: Arc<[Arc<dyn Plugin>]>,
    wants_body: bool,
}

impl Pipeline {
    /// A pipeline running `plugins` by descending priority.
    pub fn new(mut plugins: Vec<Arc<dyn Plugin>>) -> Pipeline {
        plugins.sort_by_key(|p| std::cmp::Reverse(p.priority()));
        let wants_body = plugins.iter().any(|p| p.wants_body());
        Pipeline { plugins: plugins.into(), wants_body }
    }

    /// Whether there is nothing to run.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Runs the rewrite, then the access phase; the first plugin that answers ends both.
    pub fn request(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        for phase in [Plugin::rewrite, Plugin::access] {
            for p in self.plugins.iter() {
                if let Flow::Respond(resp) = phase(p.as_ref(), ctx, req) {
                    return Flow::Respond(resp);
                }
            }
        }
        Flow::Continue
    }

    /// Runs the before-proxy phase.
    pub fn before_proxy(&self, ctx: &mut Ctx, req: &mut request::Parts) {
        self.plugins.iter().for_each(|p| p.before_proxy(ctx, req));
    }

    /// Runs the response-header phase.
    pub fn response_header(&self, ctx: &mut Ctx, resp: &mut response::Parts) {
        ctx.status = Some(resp.status);
        self.plugins.iter().for_each(|p| p.response_header(ctx, resp));
    }

    /// Whether some plugin reads the response body.
    pub fn wants_body(&self) -> bool {
        self.wants_body
    }

    /// Runs the response-body phase on one frame.
    pub fn response_body(&self, ctx: &mut Ctx, chunk: &mut Bytes, end: bool) {
        self.plugins.iter().filter(|p| p.wants_body()).for_each(|p| p.response_body(ctx, chunk, end));
    }

    /// Runs the log phase.
    pub fn log(&self, ctx: &Ctx) {
        self.plugins.iter().for_each(|p| p.log(ctx));
    }
}

/// Runs the log phase when dropped: carried by the response body so logging happens when the body is done,
/// whether it completed or the client went away.
#[derive(Debug)]
pub struct Finish {
    /// The route's pipeline.
    pub pipeline: Pipeline,
    /// The request's context.
    pub ctx: Ctx,
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.pipeline.log(&self.ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Recorder {
        name: &'static str,
        priority: i32,
        deny: bool,
        seen: Arc<Mutex<Vec<String>>>,
    }

    impl Plugin for Recorder {
        fn name(&self) -> &str {
            self.name
        }
        fn priority(&self) -> i32 {
            self.priority
        }
        fn rewrite(&self, _: &mut Ctx, req: &mut request::Parts) -> Flow {
            self.seen.lock().unwrap().push(format!("{} rewrite", self.name));
            req.headers.insert("x-rewritten", self.name.parse().unwrap());
            Flow::Continue
        }
        fn access(&self, _: &mut Ctx, _: &mut request::Parts) -> Flow {
            self.seen.lock().unwrap().push(format!("{} access", self.name));
            if self.deny {
                let mut resp = Response::new(Bytes::from_static(b"no"));
                *resp.status_mut() = StatusCode::FORBIDDEN;
                return Flow::Respond(resp);
            }
            Flow::Continue
        }
        fn response_header(&self, _: &mut Ctx, resp: &mut response::Parts) {
            resp.headers.insert("x-plugin", self.name.parse().unwrap());
        }
        fn wants_body(&self) -> bool {
            true
        }
        fn response_body(&self, _: &mut Ctx, chunk: &mut Bytes, _end: bool) {
            *chunk = Bytes::from(chunk.to_ascii_uppercase());
        }
        fn log(&self, ctx: &Ctx) {
            self.seen.lock().unwrap().push(format!("{} log {:?}", self.name, ctx.status));
        }
    }

    #[test]
    fn runs_phases_in_priority_order_and_stops_on_an_answer() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let low = Arc::new(Recorder { name: "low", priority: 1, deny: true, seen: seen.clone() });
        let high = Arc::new(Recorder { name: "high", priority: 10, deny: false, seen: seen.clone() });
        let pipeline = Pipeline::new(vec![low, high]);
        assert!(pipeline.wants_body() && !pipeline.is_empty());
        let mut ctx = Ctx::new("r".into(), "127.0.0.1:1".parse().unwrap());
        let (mut req, ()) = http::Request::new(()).into_parts();
        let Flow::Respond(resp) = pipeline.request(&mut ctx, &mut req) else { panic!("low denies") };
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(req.headers["x-rewritten"], "low", "both rewrote, high first");
        assert_eq!(*seen.lock().unwrap(), ["high rewrite", "low rewrite", "high access", "low access"]);

        let (mut head, ()) = Response::new(()).into_parts();
        pipeline.response_header(&mut ctx, &mut head);
        assert_eq!(head.headers["x-plugin"], "low");
        let mut chunk = Bytes::from_static(b"abc");
        pipeline.response_body(&mut ctx, &mut chunk, true);
        assert_eq!(&chunk[..], b"ABC");
        drop(Finish { pipeline, ctx });
        assert_eq!(seen.lock().unwrap().last().unwrap(), "low log Some(200)");
    }

    #[test]
    fn an_empty_pipeline_continues() {
        let p = Pipeline::default();
        let mut ctx = Ctx::new("r".into(), "127.0.0.1:1".parse().unwrap());
        let (mut req, ()) = http::Request::new(()).into_parts();
        assert!(matches!(p.request(&mut ctx, &mut req), Flow::Continue));
        assert!(p.is_empty() && !p.wants_body());
    }
}
