//! One request's run through the global rules and its route's chain, phase by phase, in APISIX's order:
//! global rules (rewrite, access), the route's rewrite, the consumer's plugins merged in and their rewrite, the
//! route's access; later phases run the global rules first, then the route's plugins.
//!
//! `_meta.filter` is evaluated once per plugin and request, against the request as it is when the session starts
//! (or when the consumer's plugins join), and the answer holds for every phase, as APISIX caches it per request.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, ETAG, LAST_MODIFIED};
use http::{request, response};

use super::{BodyFilter, Chain, Ctx, Flow, Phases, Reply};
use crate::router::{RequestInfo, normalize_host};

/// Which chain a slot index refers to.
#[derive(Clone, Copy)]
enum Which {
    Global,
    Route,
}

/// A request's plugin state, from the first phase to the log phase (run when this is dropped, with the response
/// body, so it sees the whole exchange whether it completed or the client went away).
pub struct Session {
    /// The request's context.
    pub ctx: Ctx,
    global: Chain,
    chain: Chain,
    /// `_meta.filter` answers: whether each slot (global ones first) is skipped. Empty when no slot has a filter.
    skip: Vec<bool>,
    body_filters: Vec<Box<dyn BodyFilter>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("ctx", &self.ctx).field("body_filters", &self.body_filters.len()).finish()
    }
}

impl Session {
    /// A session running `global` then `chain`, boxed at once: it moves from the request into the response body,
    /// and a pointer moves cheaper than the session.
    pub fn new(ctx: Ctx, global: Chain, chain: Chain) -> Box<Session> {
        Box::new(Session { ctx, global, chain, skip: Vec::new(), body_filters: Vec::new() })
    }

    /// The route's chain (with the consumer's plugins once they were merged in).
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Whether any plugin of either chain implements one of `phases`.
    pub fn has(&self, phases: Phases) -> bool {
        self.global.has(phases) || self.chain.has(phases)
    }

    /// Works out which slots do not run for this request: those whose `_meta.filter` does not hold for `req` as it
    /// is now, and global copies of plugins that prefer the route's own configuration when the route has one.
    fn evaluate_filters(&mut self, req: &request::Parts) {
        self.skip.clear();
        let shadowed = |name: &str| self.chain.slots().iter().any(|s| s.name == name);
        let preferring = self.global.slots().iter().any(|g| g.prefer_route && shadowed(g.name));
        if !self.global.filtered() && !self.chain.filtered() && !preferring {
            return;
        }
        let host = normalize_host(req.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(""));
        let info = RequestInfo {
            method: &req.method,
            host: &host,
            path: req.uri.path(),
            query: req.uri.query(),
            headers: &req.headers,
            remote_addr: self.ctx.client.ip(),
            tls: self.ctx.tls,
        };
        let filtered_out = |s: &super::Slot| s.filter.as_ref().is_some_and(|f| !f.matches(&info));
        let global = self.global.slots().iter().map(|s| filtered_out(s) || (s.prefer_route && shadowed(s.name)));
        let skip: Vec<bool> = global.chain(self.chain.slots().iter().map(filtered_out)).collect();
        self.skip = skip;
    }

    /// Runs one request-side phase of one chain; the first plugin that answers ends it. With `consumer_turn`
    /// (the route's chain before the consumer's plugins joined), only plugins the consumer brought run, and no
    /// authentication plugin (APISIX's `rewrite_in_consumer`).
    async fn run(
        &mut self,
        which: Which,
        phase: Phases,
        req: &mut request::Parts,
        consumer_turn: Option<&Chain>,
    ) -> Option<Reply> {
        let Session { ctx, global, chain, skip, .. } = self;
        let (chain, offset) = match which {
            Which::Global => (&*global, 0),
            Which::Route => (&*chain, global.slots().len()),
        };
        for (i, slot) in chain.slots().iter().enumerate() {
            if !slot.phases.has(phase) || skip.get(offset + i).copied().unwrap_or(false) {
                continue;
            }
            if let Some(before) = consumer_turn
                && (slot.auth || before.slots().iter().any(|s| s.name == slot.name))
            {
                continue;
            }
            let mut flow =
                if phase == Phases::REWRITE { slot.plugin.rewrite(ctx, req) } else { slot.plugin.access(ctx, req) };
            loop {
                match flow {
                    Flow::Continue => break,
                    Flow::Respond(reply) => return Some(reply),
                    Flow::Wait(pending) => {
                        let resume = pending.await;
                        flow = resume(ctx, req);
                    }
                }
            }
        }
        None
    }

    /// The rewrite and access phases in APISIX 3.17's order: global rewrite, route rewrite, the consumer's plugins
    /// merged in (and their rewrite), global access, route access. Returns the answer of the plugin that ended
    /// the request, if one did.
    pub async fn request(&mut self, req: &mut request::Parts) -> Option<Reply> {
        if self.has(Phases::LOG) {
            self.ctx.request_head_bytes = super::ctx::head_size(&req.method, &req.uri, &req.headers);
        }
        self.evaluate_filters(req);
        if self.global.has(Phases::REWRITE)
            && let Some(reply) = self.run(Which::Global, Phases::REWRITE, req, None).await
        {
            return Some(reply);
        }
        if self.chain.has(Phases::REWRITE)
            && let Some(reply) = self.run(Which::Route, Phases::REWRITE, req, None).await
        {
            return Some(reply);
        }
        if let Some(consumer) = self.ctx.consumer.clone()
            && !consumer.chain.is_empty()
        {
            let before = std::mem::take(&mut self.chain);
            self.chain = before.with_consumer(&consumer.chain);
            self.evaluate_filters(req);
            if let Some(reply) = self.run(Which::Route, Phases::REWRITE, req, Some(&before)).await {
                return Some(reply);
            }
        }
        if self.global.has(Phases::ACCESS)
            && let Some(reply) = self.run(Which::Global, Phases::ACCESS, req, None).await
        {
            return Some(reply);
        }
        if self.chain.has(Phases::ACCESS) {
            return self.run(Which::Route, Phases::ACCESS, req, None).await;
        }
        None
    }

    /// Whether a plugin wants the whole request body before the request is proxied.
    pub fn wants_request_body(&self) -> bool {
        self.has(Phases::REQUEST_BODY)
    }

    /// The request-body phase, with the body read into memory.
    pub fn request_body(&mut self, req: &mut request::Parts, body: &Bytes) -> Option<Reply> {
        self.ctx.request_bytes = body.len() as u64;
        let Session { ctx, global, chain, skip, .. } = self;
        for (at, slot) in global.slots().iter().chain(chain.slots()).enumerate() {
            if !slot.phases.has(Phases::REQUEST_BODY) || skip.get(at).copied().unwrap_or(false) {
                continue;
            }
            match slot.plugin.request_body(ctx, req, body) {
                Flow::Continue => {}
                Flow::Respond(reply) => return Some(reply),
                // Waiting belongs to the access phase; a body plugin that asks for it is treated as continuing.
                Flow::Wait(_) => {}
            }
        }
        None
    }

    /// The before-proxy phase, once per attempt.
    pub fn before_proxy(&mut self, req: &mut request::Parts) {
        if !self.has(Phases::BEFORE_PROXY) {
            return;
        }
        let Session { ctx, global, chain, skip, .. } = self;
        for (at, slot) in global.slots().iter().chain(chain.slots()).enumerate() {
            if slot.phases.has(Phases::BEFORE_PROXY) && !skip.get(at).copied().unwrap_or(false) {
                slot.plugin.before_proxy(ctx, req);
            }
        }
    }

    /// The response-header phase, then the body filters it asks for; a body that will change loses its length,
    /// `ETag` and `Last-Modified` (as APISIX's `clear_header_as_body_modified` does).
    pub fn response_header(&mut self, resp: &mut response::Parts) {
        self.ctx.status = Some(resp.status);
        if self.has(Phases::LOG) {
            self.ctx.response_head_bytes = (super::ctx::fields_size(&resp.headers) + 19) as u64;
        }
        let Session { ctx, global, chain, skip, body_filters } = self;
        let runs = |at: usize| !skip.get(at).copied().unwrap_or(false);
        let slots = || global.slots().iter().chain(chain.slots()).enumerate().filter(|(at, _)| runs(*at));
        for (_, slot) in slots() {
            if slot.phases.has(Phases::RESPONSE_HEADER) {
                slot.plugin.response_header(ctx, resp);
            }
        }
        // A response without a body (to HEAD, or 1xx, 204, 304) has nothing to filter, and keeps its length.
        let bodiless = ctx.method == http::Method::HEAD
            || resp.status.is_informational()
            || matches!(resp.status, http::StatusCode::NO_CONTENT | http::StatusCode::NOT_MODIFIED);
        // Compression last, so it sees the body every other filter made.
        for compressing in [false, true].into_iter().filter(|_| !bodiless) {
            for (_, slot) in slots() {
                if slot.phases.has(Phases::RESPONSE_BODY)
                    && slot.plugin.compresses() == compressing
                    && let Some(filter) = slot.plugin.response_body(ctx, resp)
                {
                    body_filters.push(filter);
                }
            }
        }
        if !body_filters.is_empty() {
            for name in [CONTENT_LENGTH, ETAG, LAST_MODIFIED] {
                resp.headers.remove(name);
            }
        }
        ctx.status = Some(resp.status);
    }

    /// Whether the response body goes through filters.
    pub fn filters_body(&self) -> bool {
        !self.body_filters.is_empty()
    }

    /// One chunk of the response body through every filter.
    pub fn body_chunk(&mut self, chunk: Bytes) -> Bytes {
        let out = self.body_filters.iter_mut().fold(chunk, |chunk, f| f.data(chunk));
        self.ctx.response_bytes += out.len() as u64;
        out
    }

    /// The end of the response body: what the filters still hold, each flushed through the ones after it.
    pub fn body_end(&mut self) -> Bytes {
        let mut tail = Bytes::new();
        for i in 0..self.body_filters.len() {
            let mut out = if tail.is_empty() { Bytes::new() } else { self.body_filters[i].data(tail) };
            let end = self.body_filters[i].end();
            if !end.is_empty() {
                out = if out.is_empty() { end } else { [out, end].concat().into() };
            }
            tail = out;
        }
        self.ctx.response_bytes += tail.len() as u64;
        tail
    }

    /// Counts body bytes that passed without filters.
    pub fn sent(&mut self, bytes: usize) {
        self.ctx.response_bytes += bytes as u64;
    }

    /// A data plane answer (a plugin's, or an error) through the response phases, its body filtered at once.
    pub fn reply(&mut self, reply: Reply) -> Reply {
        let (mut head, body) = reply.into_parts();
        self.response_header(&mut head);
        let body = if self.filters_body() {
            let first = self.body_chunk(body);
            let rest = self.body_end();
            if rest.is_empty() { first } else { [first, rest].concat().into() }
        } else {
            self.sent(body.len());
            body
        };
        if self.filters_body() {
            head.headers.insert(CONTENT_LENGTH, http::HeaderValue::from(body.len()));
        }
        Reply::from_parts(head, body)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.has(Phases::LOG) {
            return;
        }
        for (at, slot) in self.global.slots().iter().chain(self.chain.slots()).enumerate() {
            if slot.phases.has(Phases::LOG) && !self.skip.get(at).copied().unwrap_or(false) {
                slot.plugin.log(&self.ctx);
            }
        }
    }
}
