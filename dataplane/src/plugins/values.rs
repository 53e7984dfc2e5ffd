//! Request values for plugins: the [`RequestInfo`] and template [`Scope`] of a request as it is now, and
//! rendering of templates in the request phases (with the request) and the response phases (with what the context
//! kept of the request: method, target and Host, but no other headers).

use std::borrow::Cow;

use http::{HeaderMap, request};

use super::Ctx;
use crate::router::template::{Scope, Template, verbatim};
use crate::router::{RequestInfo, normalize_host};

/// The request's Host, normalised as the router reads it.
pub fn host(req: &request::Parts) -> Cow<'_, str> {
    normalize_host(req.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(""))
}

/// What the router and templates read of `req`.
pub fn info<'a>(req: &'a request::Parts, host: &'a str, ctx: &Ctx) -> RequestInfo<'a> {
    RequestInfo {
        method: &req.method,
        host,
        path: req.uri.path(),
        query: req.uri.query(),
        headers: &req.headers,
        remote_addr: ctx.client.ip(),
        tls: ctx.tls,
    }
}

/// The context variables of a template.
pub fn scope<'a>(ctx: &'a Ctx, captures: Option<&'a regex::Captures<'a>>) -> Scope<'a> {
    Scope {
        route_id: ctx.route_id(),
        service_id: ctx.service_id(),
        consumer_name: ctx.consumer_name(),
        remote_port: Some(ctx.client.port()),
        captures,
    }
}

/// `template` for `req` as it is now.
pub fn render(template: &Template, ctx: &Ctx, req: &request::Parts) -> String {
    let host = host(req);
    template.render(&info(req, &host, ctx), &scope(ctx, None), verbatim).into_owned()
}

/// `template` in a response phase: request headers other than Host are no longer at hand and read as absent.
pub fn render_late(template: &Template, ctx: &Ctx) -> String {
    let empty = HeaderMap::new();
    let raw = ctx.host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
    let host = normalize_host(raw);
    let info = RequestInfo {
        method: &ctx.method,
        host: &host,
        path: ctx.uri.path(),
        query: ctx.uri.query(),
        headers: &empty,
        remote_addr: ctx.client.ip(),
        tls: ctx.tls,
    };
    template.render(&info, &scope(ctx, None), verbatim).into_owned()
}

/// Whether a list of `vars` expressions (any of which may hold, each a list that must all hold) holds for `req`.
pub fn any_holds(exprs: &[crate::router::Vars], ctx: &Ctx, req: &request::Parts) -> bool {
    let host = host(req);
    let info = info(req, &host, ctx);
    exprs.iter().any(|v| v.matches(&info))
}

/// Compiles configured headers (names to values with `$var`s) once, for plugins that answer with them.
pub fn headers<'a>(
    map: impl IntoIterator<Item = (&'a String, &'a sluice_model::plugins::fault_injection::Scalar)>,
) -> Result<Vec<(http::HeaderName, Template)>, String> {
    map.into_iter()
        .map(|(k, v)| {
            let name = http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(|e| e.to_string())?;
            Ok((name, Template::compile(&v.text(), false)?))
        })
        .collect()
}
