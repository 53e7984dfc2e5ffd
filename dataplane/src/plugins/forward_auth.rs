//! `forward-auth`: before a request is proxied, the data plane asks an external service (`uri`) whether it may
//! pass, as APISIX does: the service gets the request's method, host, target and client address in
//! `X-Forwarded-*` fields, the `request_headers` named and `extra_headers`; a 2xx answer lets the request through
//! with the answer's `upstream_headers` added, any other answer is sent to the client (its status, body and
//! `client_headers`). When the service cannot be reached or does not answer within `timeout`, the request gets
//! `status_on_error`, or passes unchecked with `allow_degradation` (fail open, counted in
//! `sluice_forward_auth_bypassed_total`), so an outage of the auth service need not take the traffic down.
//!
//! The call is made from the access phase without blocking the worker, on a pooled HTTP/1.1 client per plugin
//! instance ([`outbound`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, request};
use http_body_util::{BodyExt, Full, Limited};
use prometheus::IntCounter;
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, forward_auth as model};

use super::outbound::{self, Outbound};
use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, Reply, Resume, values};
use crate::router::template::Template;

/// forward-auth's place in the registry (APISIX priority 2002).
pub(super) const FACTORY: Factory =
    Factory { name: model::ForwardAuth::NAME, priority: 2002, auth: false, prefer_route: false, build };

/// The largest answer body of the service that is read (and sent to a refused client).
const MAX_ANSWER: usize = 64 * 1024;

fn header_names(list: &[String]) -> Result<Vec<HeaderName>, String> {
    list.iter().map(|n| HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).map_err(|e| e.to_string())).collect()
}

fn build(conf: &PluginConf, ctx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::ForwardAuth(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    let uri: Uri = c.uri.parse().map_err(|e| format!("uri: {e}"))?;
    let authority = uri.authority().ok_or("uri has no host")?.clone();
    let idle = if c.keepalive { usize::try_from(c.keepalive_pool).unwrap_or(usize::MAX) } else { 0 };
    let (connect, keepalive) = (Duration::from_millis(c.timeout), Duration::from_millis(c.keepalive_timeout));
    let client = outbound::client(connect, idle, keepalive, ctx, c.ssl_verify)?;
    let extra = c
        .extra_headers
        .iter()
        .map(|(k, v)| {
            let name = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(|e| e.to_string())?;
            Ok((name, Template::compile(v, false)?))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Arc::new(ForwardAuth {
        client,
        uri,
        host: HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?,
        request_headers: header_names(&c.request_headers)?,
        upstream_headers: Arc::new(header_names(&c.upstream_headers)?),
        client_headers: Arc::new(header_names(&c.client_headers)?),
        extra,
        timeout: Duration::from_millis(c.timeout),
        allow_degradation: c.allow_degradation,
        status_on_error: StatusCode::from_u16(c.status_on_error).map_err(|e| e.to_string())?,
        bypassed: ctx.metrics.auth_bypassed.clone(),
    }))
}

struct ForwardAuth {
    client: Outbound,
    uri: Uri,
    host: HeaderValue,
    request_headers: Vec<HeaderName>,
    upstream_headers: Arc<Vec<HeaderName>>,
    client_headers: Arc<Vec<HeaderName>>,
    extra: Vec<(HeaderName, Template)>,
    timeout: Duration,
    allow_degradation: bool,
    status_on_error: StatusCode,
    bypassed: IntCounter,
}

impl std::fmt::Debug for ForwardAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardAuth").field("uri", &self.uri).field("timeout", &self.timeout).finish()
    }
}

static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What the service said.
enum Verdict {
    /// 2xx: pass, with these fields for the node.
    Allowed(http::HeaderMap),
    /// Anything else: this answer goes to the client.
    Refused(Reply),
    /// No answer (connection, timeout, a broken answer).
    Failed(String),
}

impl ForwardAuth {
    /// The question for the service about this request.
    fn question(&self, ctx: &Ctx, req: &request::Parts) -> Result<Request<Full<Bytes>>, http::Error> {
        let mut ask = Request::builder().method(Method::GET).uri(self.uri.clone()).header(HOST, self.host.clone());
        let headers = ask.headers_mut().expect("a builder without errors so far");
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(if ctx.tls { "https" } else { "http" }));
        headers.insert(&X_FORWARDED_METHOD, HeaderValue::from_str(ctx.method.as_str())?);
        if let Some(host) = &ctx.host {
            headers.insert(&X_FORWARDED_HOST, host.clone());
        }
        let target = ctx.uri.path_and_query().map_or("/", |pq| pq.as_str());
        headers.insert(&X_FORWARDED_URI, HeaderValue::from_str(target)?);
        headers.insert(&X_FORWARDED_FOR, HeaderValue::from_str(&ctx.client.ip().to_canonical().to_string())?);
        for name in &self.request_headers {
            for value in req.headers.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        for (name, template) in &self.extra {
            if let Ok(value) = HeaderValue::from_str(&values::render(template, ctx, req)) {
                headers.insert(name.clone(), value);
            }
        }
        ask.body(Full::new(Bytes::new()))
    }

    async fn ask(client: Outbound, question: Request<Full<Bytes>>, client_headers: &[HeaderName]) -> Verdict {
        let answer = match client.request(question).await {
            Ok(answer) => answer,
            Err(e) => return Verdict::Failed(e.to_string()),
        };
        let (parts, body) = answer.into_parts();
        let body = Limited::new(body, MAX_ANSWER).collect().await;
        if parts.status.is_success() {
            // Read to its end (and ignored) so the connection goes back to the pool.
            return Verdict::Allowed(parts.headers);
        }
        let body = match body {
            Ok(body) => body.to_bytes(),
            Err(e) => return Verdict::Failed(format!("reading the answer: {e}")),
        };
        let mut reply = Response::new(body);
        *reply.status_mut() = parts.status;
        for name in client_headers {
            for value in parts.headers.get_all(name) {
                reply.headers_mut().append(name.clone(), value.clone());
            }
        }
        Verdict::Refused(reply)
    }
}

impl Plugin for ForwardAuth {
    fn phases(&self) -> Phases {
        Phases::ACCESS
    }

    fn access(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        let question = match self.question(ctx, req) {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(error = %e, "forward-auth: cannot form the question for the service");
                return Flow::Respond(super::message(StatusCode::INTERNAL_SERVER_ERROR, "forward-auth failed"));
            }
        };
        let (client, timeout) = (self.client.clone(), self.timeout);
        let (upstream_headers, client_headers) = (self.upstream_headers.clone(), self.client_headers.clone());
        let (allow_degradation, status_on_error, bypassed) =
            (self.allow_degradation, self.status_on_error, self.bypassed.clone());
        let uri = self.uri.clone();
        Flow::Wait(Box::pin(async move {
            let verdict = tokio::time::timeout(timeout, ForwardAuth::ask(client, question, &client_headers))
                .await
                .unwrap_or_else(|_| Verdict::Failed(format!("no answer within {timeout:?}")));
            Box::new(move |_: &mut Ctx, req: &mut request::Parts| match verdict {
                Verdict::Allowed(headers) => {
                    for name in upstream_headers.iter() {
                        if let Some(value) = headers.get(name) {
                            req.headers.insert(name.clone(), value.clone());
                        }
                    }
                    Flow::Continue
                }
                Verdict::Refused(reply) => Flow::Respond(reply),
                Verdict::Failed(reason) if allow_degradation => {
                    tracing::warn!(service = %uri, %reason, "forward-auth service failed; letting the request pass (allow_degradation)");
                    bypassed.inc();
                    Flow::Continue
                }
                Verdict::Failed(reason) => {
                    tracing::warn!(service = %uri, %reason, "forward-auth service failed; refusing the request");
                    let mut reply = Response::new(Bytes::new());
                    *reply.status_mut() = status_on_error;
                    Flow::Respond(reply)
                }
            }) as Resume
        }))
    }
}
