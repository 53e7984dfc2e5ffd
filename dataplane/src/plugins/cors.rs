//! `cors`: answers preflight requests and adds the CORS headers to every response of the route, as APISIX does:
//! any `OPTIONS` request is answered 200 with an empty body in the rewrite phase (before authentication), and
//! the headers are worked out from the request's original `Origin` (saved before other plugins may change it).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, request, response};
use regex::Regex;
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, cors as model};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin};

/// cors's place in the registry (APISIX priority 4000).
pub(super) const FACTORY: Factory =
    Factory { name: model::Cors::NAME, priority: 4000, auth: false, prefer_route: false, build };

const TIMING_ALLOW_ORIGIN: HeaderName = HeaderName::from_static("timing-allow-origin");
/// What `allow_methods: "**"` allows.
const ALL_METHODS: &str = "GET,POST,PUT,DELETE,PATCH,HEAD,OPTIONS,CONNECT,TRACE";

/// An `allow_origins`-style setting.
#[derive(Debug, Clone)]
enum Origins {
    /// `**`: the request's origin, or `*` without one.
    Echo,
    /// One value sent as it is (`*`, `null` or an origin), when the request's origin matches it.
    One(String),
    /// Several origins: the request's when it is one of them.
    List(Vec<String>),
}

impl Origins {
    fn parse(text: &str) -> Origins {
        if text == "**" {
            return Origins::Echo;
        }
        let items: Vec<String> = text.split(',').map(str::to_string).collect();
        if items.len() == 1 { Origins::One(text.to_string()) } else { Origins::List(items) }
    }

    /// The value to send for a request from `origin`, when it is allowed.
    fn allow(&self, origin: Option<&str>) -> Option<String> {
        let candidate = match self {
            Origins::Echo => Some(origin.unwrap_or("*").to_string()),
            Origins::One(v) => Some(v.clone()),
            Origins::List(list) => origin.filter(|o| list.iter().any(|i| i == o)).map(str::to_string),
        }?;
        (candidate == "*" || Some(candidate.as_str()) == origin).then_some(candidate)
    }
}

fn joined(list: &Option<Vec<String>>) -> Result<Option<Regex>, String> {
    list.as_ref().map(|l| Regex::new(&l.join("|")).map_err(|e| e.to_string())).transpose()
}

fn value(text: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(text).map_err(|e| format!("{text:?}: {e}"))
}

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::Cors(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    let methods = if c.allow_methods == "**" { ALL_METHODS } else { &c.allow_methods };
    Ok(Arc::new(Cors {
        origins: Origins::parse(&c.allow_origins),
        origins_regex: joined(&c.allow_origins_by_regex)?,
        methods: value(methods)?,
        headers: if c.allow_headers == "**" { None } else { Some(value(&c.allow_headers)?) },
        expose: c.expose_headers.as_deref().filter(|e| !e.is_empty()).map(value).transpose()?,
        max_age: HeaderValue::from(c.max_age),
        credential: c.allow_credential,
        vary: c.allow_origins != "*",
        timing: c.timing_allow_origins.as_deref().map(Origins::parse),
        timing_regex: joined(&c.timing_allow_origins_by_regex)?,
    }))
}

#[derive(Debug)]
struct Cors {
    origins: Origins,
    origins_regex: Option<Regex>,
    methods: HeaderValue,
    /// `None` for `**`: the preflight's requested headers are echoed.
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
    credential: bool,
    vary: bool,
    timing: Option<Origins>,
    timing_regex: Option<Regex>,
}

/// The request's `Origin` and `Access-Control-Request-Headers` as they arrived.
#[derive(Debug, Clone)]
struct Seen {
    origin: Option<String>,
    request_headers: Option<HeaderValue>,
}

fn allowed(origins: &Origins, regex: Option<&Regex>, origin: Option<&str>) -> Option<String> {
    match regex {
        Some(re) => origin.filter(|o| re.is_match(o)).map(str::to_string),
        None => origins.allow(origin),
    }
}

impl Plugin for Cors {
    fn phases(&self) -> Phases {
        Phases::REWRITE | Phases::RESPONSE_HEADER
    }

    fn rewrite(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        let origin = req.headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()).map(str::to_string);
        let request_headers = req.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
        ctx.extensions.insert(Seen { origin, request_headers });
        if req.method == Method::OPTIONS {
            let mut reply = Response::new(Bytes::new());
            *reply.status_mut() = StatusCode::OK;
            return Flow::Respond(reply);
        }
        Flow::Continue
    }

    fn response_header(&self, ctx: &mut Ctx, resp: &mut response::Parts) {
        let seen = ctx.extensions.get::<Seen>().cloned().unwrap_or(Seen { origin: None, request_headers: None });
        let origin = seen.origin.as_deref();
        let h = &mut resp.headers;
        if self.vary {
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        if let Some(allow) = allowed(&self.origins, self.origins_regex.as_ref(), origin)
            && let Ok(allow) = HeaderValue::from_str(&allow)
        {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
            h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
            if let Some(expose) = &self.expose {
                h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
            }
            match (&self.headers, seen.request_headers) {
                (Some(list), _) => drop(h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, list.clone())),
                (None, Some(asked)) => drop(h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked)),
                (None, None) => {}
            }
            if self.credential {
                h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
            }
        }
        let timing = match (&self.timing_regex, &self.timing) {
            (Some(re), _) => origin.filter(|o| re.is_match(o)).map(str::to_string),
            (None, Some(t)) => t.allow(origin),
            (None, None) => None,
        };
        if let Some(t) = timing.and_then(|t| HeaderValue::from_str(&t).ok()) {
            h.insert(TIMING_ALLOW_ORIGIN, t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_origins_as_apisix() {
        let list = Origins::parse("http://a.com,http://b.com");
        assert_eq!(list.allow(Some("http://b.com")).as_deref(), Some("http://b.com"));
        assert_eq!(list.allow(Some("http://c.com")), None);
        assert_eq!(Origins::parse("*").allow(None).as_deref(), Some("*"));
        assert_eq!(Origins::parse("**").allow(Some("http://x")).as_deref(), Some("http://x"));
        assert_eq!(Origins::parse("**").allow(None).as_deref(), Some("*"));
        assert_eq!(Origins::parse("http://a.com").allow(Some("http://b.com")), None);
        assert_eq!(Origins::parse("null").allow(Some("null")).as_deref(), Some("null"));
    }
}
