//! `redirect`: answers with a redirection, to a templated URI, a regex rewrite of the path, or the same URL over
//! HTTPS (301 for GET and HEAD, 308 for other methods, so a client does not change its method).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use http::{Method, Response, StatusCode, request};
use regex::Regex;
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, redirect as model};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, Reply, values};
use crate::router::template::Template;

/// redirect's place in the registry (APISIX priority 900).
pub(super) const FACTORY: Factory =
    Factory { name: model::Redirect::NAME, priority: 900, auth: false, prefer_route: false, build };

fn build(conf: &PluginConf, build: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::Redirect(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    let target = match (&c.uri, &c.regex_uri, c.http_to_https) {
        (Some(uri), _, _) => Target::Uri(Template::compile(uri, false)?),
        (None, Some(pair), _) => {
            Target::Regex(Regex::new(&pair[0]).map_err(|e| e.to_string())?, super::proxy_rewrite::replacement(&pair[1]))
        }
        (None, None, Some(true)) => Target::Https(match build.https_port {
            None | Some(443) => String::new(),
            Some(port) => format!(":{port}"),
        }),
        (None, None, _) => Target::Nothing,
    };
    let code = StatusCode::from_u16(c.ret_code).map_err(|e| e.to_string())?;
    Ok(Arc::new(Redirect { target, code, encode_uri: c.encode_uri, append_query: c.append_query_string }))
}

#[derive(Debug)]
enum Target {
    Uri(Template),
    Regex(Regex, String),
    /// To the same URL over HTTPS; the port suffix (`:9443`) when HTTPS is not on 443.
    Https(String),
    /// `http_to_https: false`: the plugin does nothing.
    Nothing,
}

#[derive(Debug)]
struct Redirect {
    target: Target,
    code: StatusCode,
    encode_uri: bool,
    append_query: bool,
}

/// A body like nginx's own page for `status`.
pub fn page(status: StatusCode) -> Bytes {
    let title = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
    Bytes::from(format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>sluice</center>\r\n</body>\r\n</html>\r\n"
    ))
}

fn encode_path(uri: &str) -> String {
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let keep = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b);
    let mut out = String::with_capacity(uri.len());
    for b in path.bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl Plugin for Redirect {
    fn phases(&self) -> Phases {
        Phases::REWRITE
    }

    fn rewrite(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        let (mut location, mut code) = match &self.target {
            Target::Nothing => return Flow::Continue,
            Target::Uri(t) => (values::render(t, ctx, req), self.code),
            Target::Regex(re, replacement) => {
                let path = req.uri.path();
                if !re.is_match(path) {
                    return Flow::Continue;
                }
                (re.replace(path, replacement.as_str()).into_owned(), self.code)
            }
            Target::Https(port) => {
                // The connection's own scheme: a client's `X-Forwarded-Proto` is not trusted.
                if ctx.tls {
                    return Flow::Continue;
                }
                let host = values::host(req);
                let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
                let code = if matches!(req.method, Method::GET | Method::HEAD) {
                    StatusCode::MOVED_PERMANENTLY
                } else {
                    StatusCode::PERMANENT_REDIRECT
                };
                (format!("https://{host}{port}{target}"), code)
            }
        };
        let had_query = location.contains('?');
        if self.encode_uri {
            location = encode_path(&location);
        }
        if self.append_query
            && let Some(q) = req.uri.query()
        {
            location.push(if had_query { '&' } else { '?' });
            location.push_str(q);
        }
        let Ok(value) = HeaderValue::from_str(&location) else {
            tracing::warn!(route = ?ctx.route_id(), %location, "redirect made an invalid Location");
            code = StatusCode::INTERNAL_SERVER_ERROR;
            return Flow::Respond(html(code, None));
        };
        Flow::Respond(html(code, Some(value)))
    }
}

fn html(code: StatusCode, location: Option<HeaderValue>) -> Reply {
    let body = if code.as_u16() >= 300 { page(code) } else { Bytes::new() };
    let mut reply = Response::new(body);
    *reply.status_mut() = code;
    if code.as_u16() >= 300 {
        reply.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    }
    if let Some(l) = location {
        reply.headers_mut().insert(LOCATION, l);
    }
    reply
}
