//! `proxy-rewrite`: the URI, method, Host and headers of the request sent to the node.
//!
//! As in APISIX: `uri` (with `$var` references) wins over `regex_uri` (pairs tried in order, the first that
//! matches the path rewrites it, its captures also available to header values as `$1`…); the client's query
//! string is kept and appended; header changes apply in the order add, set, remove, after the URI changed, so
//! `$uri` in a header value is the new path. `host` replaces the Host the upstream's `pass_host` would send.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode, request};
use regex::Regex;
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, proxy_rewrite as model};

use super::registry::{BuildCtx, Factory, mismatch};
use super::values::{self, info as request_info, scope};
use super::{Ctx, Flow, Phases, Plugin};
use crate::router::template::{Template, verbatim};

/// proxy-rewrite's place in the registry (APISIX priority 1008).
pub(super) const FACTORY: Factory =
    Factory { name: model::ProxyRewrite::NAME, priority: 1008, auth: false, prefer_route: false, build };

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::ProxyRewrite(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    let uri = c.uri.as_deref().map(|u| Template::compile(u, false)).transpose()?;
    let regex_uri = match (&uri, &c.regex_uri) {
        (None, Some(pairs)) => pairs
            .chunks(2)
            .map(|pair| {
                let re = Regex::new(&pair[0]).map_err(|e| format!("regex_uri {:?}: {e}", pair[0]))?;
                Ok((re, Replacement::compile(pair.get(1).map_or("", String::as_str))))
            })
            .collect::<Result<Vec<_>, String>>()?,
        _ => Vec::new(),
    };
    let method =
        c.method.as_deref().map(|m| Method::from_bytes(m.as_bytes()).map_err(|e| e.to_string())).transpose()?;
    let host = c.host.as_deref().map(HeaderValue::from_str).transpose().map_err(|e| format!("host: {e}"))?;
    let headers = c.headers.clone().unwrap_or_default();
    let captures = !regex_uri.is_empty();
    let compile = |map: &std::collections::BTreeMap<String, model::HeaderValues>| {
        map.iter()
            .map(|(name, values)| {
                let name = header_name(name)?;
                let values = values
                    .0
                    .iter()
                    .map(|v| {
                        let t = Template::compile(v, captures)?;
                        Ok(match t.literal() {
                            Some(text) => {
                                Value::Literal(HeaderValue::from_str(text).map_err(|e| format!("{name}: {e}"))?)
                            }
                            None => Value::Template(t),
                        })
                    })
                    .collect::<Result<_, String>>()?;
                Ok((name, values))
            })
            .collect::<Result<Vec<_>, String>>()
    };
    let header_captures =
        captures && headers.add.values().chain(headers.set.values()).flat_map(|v| &v.0).any(|v| v.contains('$'));
    Ok(Arc::new(ProxyRewrite {
        header_captures,
        uri,
        regex_uri,
        method,
        host,
        add: compile(&headers.add)?,
        set: compile(&headers.set)?,
        remove: headers.remove.iter().map(|n| header_name(n)).collect::<Result<_, _>>()?,
        real_request_uri: c.use_real_request_uri_unsafe,
    }))
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|e| format!("header {name:?}: {e}"))
}

/// An nginx `ngx.re.sub` template (`$1`, `${1}`, `$0`) in the regex crate's syntax, where `$1x` would name a
/// group `1x`; a `$` before anything but a group number is literal.
pub(super) fn replacement(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let digits = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
        if digits > 0 {
            out.push_str(&format!("${{{}}}", &after[..digits]));
            rest = &after[digits..];
        } else if let Some(inner) = after.strip_prefix('{')
            && let Some(end) = inner.find('}')
            && inner[..end].bytes().all(|b| b.is_ascii_digit())
            && end > 0
        {
            out.push_str(&format!("${{{}}}", &inner[..end]));
            rest = &inner[end + 1..];
        } else {
            out.push_str("$$");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A header value: worked out once when it has no variables.
#[derive(Debug)]
enum Value {
    Literal(HeaderValue),
    Template(Template),
}

type HeaderOps = Vec<(HeaderName, Vec<Value>)>;

/// An ngx.re.sub template, parsed once: text and capture group numbers.
#[derive(Debug, Clone)]
pub(super) struct Replacement(Vec<Part>);

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Group(usize),
}

impl Replacement {
    /// Parses `$1`, `${1}` (and `$0`); any other `$` is literal.
    pub(super) fn compile(template: &str) -> Replacement {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = template;
        while let Some(at) = rest.find('$') {
            text.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let digits = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
            let braced = after.strip_prefix('{').and_then(|inner| {
                let end = inner.find('}')?;
                (end > 0 && inner[..end].bytes().all(|b| b.is_ascii_digit())).then_some((&inner[..end], end + 2))
            });
            let (group, used) = match (digits, braced) {
                (d, _) if d > 0 => (&after[..d], d),
                (_, Some(found)) => found,
                _ => {
                    text.push('$');
                    rest = after;
                    continue;
                }
            };
            match group.parse() {
                Ok(n) => {
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Group(n));
                }
                Err(_) => text.push_str(&rest[at..at + 1 + used]),
            }
            rest = &after[used..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Replacement(parts)
    }

    /// Appends the template with `caps` filled in to `out` (an absent group is empty).
    pub(super) fn expand(&self, caps: &regex::Captures<'_>, out: &mut String) {
        for part in &self.0 {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Group(n) => out.push_str(caps.get(*n).map_or("", |m| m.as_str())),
            }
        }
    }
}

#[derive(Debug)]
struct ProxyRewrite {
    /// Header values may name the regex's captures, so the path it matched is kept.
    header_captures: bool,
    uri: Option<Template>,
    regex_uri: Vec<(Regex, Replacement)>,
    method: Option<Method>,
    host: Option<HeaderValue>,
    add: HeaderOps,
    set: HeaderOps,
    remove: Vec<HeaderName>,
    real_request_uri: bool,
}

/// A variable's `?` must not start a query in the rewritten URI (APISIX escapes it).
fn escape_separator(value: &str) -> Cow<'_, str> {
    if value.contains('?') { Cow::Owned(value.replace('?', "%3F")) } else { Cow::Borrowed(value) }
}

/// Percent-encodes what may not appear in a path as sent (spaces, controls, non-ASCII, `"<>\^`{|}`), leaving
/// `%` alone: the path was never decoded, so its escapes are already in place.
fn encode_path(path: &str) -> Cow<'_, str> {
    let keep = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b);
    if path.bytes().all(keep) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len() + 8);
    for b in path.bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

/// Escapes control characters in a query part, keeping its delimiters.
fn encode_query(query: &str) -> Cow<'_, str> {
    let bad = |b: u8| b < 0x21 || b == 0x7f || b >= 0x80 || b == b'#';
    if !query.bytes().any(bad) {
        return Cow::Borrowed(query);
    }
    let mut out = String::with_capacity(query.len() + 8);
    for b in query.bytes() {
        if bad(b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    Cow::Owned(out)
}

impl ProxyRewrite {
    /// The new request target, or `None` when the URI is not rewritten; the captures of the regex that matched.
    fn target(&self, ctx: &Ctx, req: &request::Parts) -> Option<String> {
        let path = req.uri.path();
        let query = req.uri.query();
        let (rewritten, escaped) = if let Some(uri) = &self.uri {
            let host = values::host(req);
            let info = request_info(req, &host, ctx);
            (uri.render(&info, &scope(ctx, None), escape_separator).into_owned(), true)
        } else if self.regex_uri.is_empty() {
            return None;
        } else {
            let base = if self.real_request_uri { req.uri.path_and_query().map_or(path, |p| p.as_str()) } else { path };
            // One pass: the first pattern that matches, its match replaced (as ngx.re.sub replaces one match).
            let (caps, replacement) =
                self.regex_uri.iter().find_map(|(re, replacement)| re.captures(base).map(|c| (c, replacement)))?;
            let whole = caps.get(0)?;
            let mut out = String::with_capacity(base.len() + 16);
            out.push_str(&base[..whole.start()]);
            replacement.expand(&caps, &mut out);
            out.push_str(&base[whole.end()..]);
            (out, !base.contains('?'))
        };
        if self.real_request_uri {
            // As written, with the client's query appended when the template has none of its own.
            return Some(match (self.uri.is_some(), query) {
                (true, Some(q)) if rewritten.contains('?') => format!("{rewritten}&{q}"),
                (true, Some(q)) => format!("{rewritten}?{q}"),
                _ => rewritten,
            });
        }
        let split = if escaped { rewritten.find('?') } else { None };
        let mut target = match split {
            Some(i) => format!("{}{}", encode_path(&rewritten[..i]), encode_query(&rewritten[i..])),
            None => encode_path(&rewritten).into_owned(),
        };
        if let Some(q) = query {
            target.push(if split.is_some() { '&' } else { '?' });
            target.push_str(q);
        }
        Some(target)
    }
}

impl Plugin for ProxyRewrite {
    fn phases(&self) -> Phases {
        Phases::REWRITE
    }

    fn rewrite(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        if let Some(host) = &self.host {
            ctx.upstream_host = Some(host.clone());
        }
        // The path the regex saw, for the captures header values may use.
        let original_path = self.header_captures.then(|| req.uri.path().to_string());
        let target = self.target(ctx, req);
        if let Some(target) = target {
            match PathAndQuery::from_maybe_shared(bytes::Bytes::from(target)) {
                Ok(pq) => {
                    let mut parts = std::mem::take(&mut req.uri).into_parts();
                    parts.path_and_query = Some(pq);
                    req.uri = http::Uri::from_parts(parts).unwrap_or_default();
                }
                Err(e) => {
                    tracing::warn!(route = ?ctx.route_id(), error = %e, "proxy-rewrite made an invalid URI");
                    let body = serde_json::json!({"error_msg": format!("failed to rewrite the uri: {e}")});
                    return Flow::Respond(super::json_reply(StatusCode::INTERNAL_SERVER_ERROR, body.to_string()));
                }
            }
        }
        for (append, ops) in [(true, &self.add), (false, &self.set)] {
            for (name, values) in ops {
                if values.iter().all(|v| matches!(v, Value::Literal(_))) {
                    // Worked out when the plugin was built: no rendering, no list.
                    let mut first = !append;
                    for v in values {
                        let Value::Literal(h) = v else { continue };
                        // A value set to nothing removes the header, as nginx's `set_header` does.
                        if first && h.is_empty() {
                            req.headers.remove(name);
                        } else if first {
                            req.headers.insert(name.clone(), h.clone());
                        } else if append || !h.is_empty() {
                            req.headers.append(name.clone(), h.clone());
                        }
                        first = false;
                    }
                    continue;
                }
                let rendered: Vec<HeaderValue> = {
                    let captures =
                        original_path.as_deref().and_then(|p| self.regex_uri.iter().find_map(|(re, _)| re.captures(p)));
                    let scope = scope(ctx, captures.as_ref());
                    let host = values::host(req);
                    let info = request_info(req, &host, ctx);
                    values
                        .iter()
                        .filter_map(|v| match v {
                            Value::Literal(h) => (append || !h.is_empty()).then(|| h.clone()),
                            Value::Template(t) => {
                                let text = t.render(&info, &scope, verbatim);
                                if !append && text.is_empty() { None } else { HeaderValue::from_str(&text).ok() }
                            }
                        })
                        .collect()
                };
                if !append {
                    req.headers.remove(name);
                }
                for v in rendered {
                    req.headers.append(name.clone(), v);
                }
            }
        }
        for name in &self.remove {
            req.headers.remove(name);
        }
        if let Some(m) = &self.method {
            req.method = m.clone();
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_replacements_like_ngx_re_sub() {
        let re = Regex::new("^/test/(.*)/(.*)/(.*)").unwrap();
        let caps = re.captures("/test/plugin/proxy/rewrite").unwrap();
        let mut out = String::new();
        Replacement::compile("/$1_$2_${3}x$$9/$7").expand(&caps, &mut out);
        assert_eq!(out, "/plugin_proxy_rewritex$/");
    }

    #[test]
    fn converts_nginx_replacements() {
        assert_eq!(replacement("/$1_$2_$3"), "/${1}_${2}_${3}");
        assert_eq!(replacement("/${1}x/$10"), "/${1}x/${10}");
        assert_eq!(replacement("/cost$/$x"), "/cost$$/$$x");
    }

    #[test]
    fn encodes_paths_and_queries() {
        assert_eq!(encode_path("/a b/ü"), "/a%20b/%C3%BC");
        assert_eq!(encode_path("/a%2Fb"), "/a%2Fb");
        assert_eq!(encode_query("?a=1&b=\r"), "?a=1&b=%0D");
    }
}
