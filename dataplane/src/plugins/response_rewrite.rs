//! `response-rewrite`: the status, headers and body of the route's responses (from a node or from the data
//! plane). `body` replaces the body; `filters` run regex replacements over the whole body, read into memory up
//! to `max_resp_body_size` (a gzip or brotli body is decoded first; another encoding is left as it is).
//!
//! `vars` are evaluated against the request when it arrives (before other plugins change it): variables of the
//! response (`status`, `upstream_*`) are not available and reject the configuration.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, HeaderName, HeaderValue};
use http::{StatusCode, request, response};
use regex::bytes::{Regex, RegexBuilder};
use sluice_model::PluginConf;
use sluice_model::plugins::Schema;
use sluice_model::plugins::response_rewrite::{self as model, Scope};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{BodyFilter, Ctx, Flow, Phases, Plugin, values};
use crate::router::Vars;
use crate::router::template::Template;

/// response-rewrite's place in the registry (APISIX priority 899).
pub(super) const FACTORY: Factory =
    Factory { name: model::ResponseRewrite::NAME, priority: 899, auth: false, prefer_route: false, build };

/// Distinguishes instances in a request's context, where each keeps whether its `vars` held.
static INSTANCES: AtomicU64 = AtomicU64::new(0);

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|e| format!("header {name:?}: {e}"))
}

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::ResponseRewrite(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    let vars = c.vars.as_deref().map(Vars::compile).transpose().map_err(|e| format!("vars: {e}"))?;
    let status = c.status_code.map(StatusCode::from_u16).transpose().map_err(|e| e.to_string())?;
    let body = match (&c.body, c.body_base64) {
        (Some(b), true) => {
            Some(Bytes::from(sluice_model::plugins::jwt_auth::decode_base64(b).ok_or("body: invalid base64")?))
        }
        (Some(b), false) => Some(Bytes::from(b.clone())),
        (None, _) => None,
    };
    let headers = c.headers.clone().unwrap_or_default();
    let add = headers
        .add
        .iter()
        .map(|line| {
            let (name, value) = model::split_line(line).ok_or_else(|| format!("headers.add: {line:?}"))?;
            Ok((header_name(name)?, Template::compile(value, false)?))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let set = headers
        .set
        .iter()
        .map(|(name, value)| Ok((header_name(name)?, Template::compile(&value.text(), false)?)))
        .collect::<Result<Vec<_>, String>>()?;
    let remove = headers.remove.iter().map(|n| header_name(n)).collect::<Result<Vec<_>, _>>()?;
    let filters = c
        .filters
        .iter()
        .flatten()
        .map(|f| {
            let re = RegexBuilder::new(&f.regex).case_insensitive(f.options.contains('i')).build();
            let re = re.map_err(|e| format!("filters: {e}"))?;
            Ok((re, replacement(&f.replace), f.scope == Scope::Global))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Arc::new(ResponseRewrite {
        id: INSTANCES.fetch_add(1, Ordering::Relaxed),
        vars,
        status,
        body,
        add,
        set,
        remove,
        filters: Arc::new(filters),
        max_body: usize::try_from(c.max_resp_body_size).unwrap_or(usize::MAX),
    }))
}

/// An ngx.re replacement (`$1`, `${1}`, `$0`) in the regex crate's syntax.
fn replacement(text: &str) -> String {
    super::proxy_rewrite::replacement(text)
}

type Filters = Arc<Vec<(Regex, String, bool)>>;

#[derive(Debug)]
struct ResponseRewrite {
    id: u64,
    vars: Option<Vars>,
    status: Option<StatusCode>,
    body: Option<Bytes>,
    add: Vec<(HeaderName, Template)>,
    set: Vec<(HeaderName, Template)>,
    remove: Vec<HeaderName>,
    filters: Filters,
    max_body: usize,
}

/// The instances whose `vars` held for this request. Recorded when they hold rather than when they do not, so
/// a request answered before the rewrite phase reached this plugin (a 401 from key-auth) is not rewritten.
#[derive(Debug, Clone, Default)]
struct Matched(Vec<u64>);

impl ResponseRewrite {
    fn applies(&self, ctx: &Ctx) -> bool {
        self.vars.is_none() || ctx.extensions.get::<Matched>().is_some_and(|s| s.0.contains(&self.id))
    }
}

impl Plugin for ResponseRewrite {
    fn phases(&self) -> Phases {
        let body =
            if self.body.is_some() || !self.filters.is_empty() { Phases::RESPONSE_BODY } else { Phases::default() };
        let vars = if self.vars.is_some() { Phases::REWRITE } else { Phases::default() };
        Phases::RESPONSE_HEADER | body | vars
    }

    fn rewrite(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        if let Some(vars) = &self.vars
            && values::any_holds(std::slice::from_ref(vars), ctx, req)
        {
            ctx.extensions.get_or_insert_default::<Matched>().0.push(self.id);
        }
        Flow::Continue
    }

    fn response_header(&self, ctx: &mut Ctx, resp: &mut response::Parts) {
        if !self.applies(ctx) {
            return;
        }
        if let Some(status) = self.status {
            resp.status = status;
        }
        for (name, value) in &self.add {
            if let Ok(v) = HeaderValue::from_str(&values::render_late(value, ctx)) {
                resp.headers.append(name.clone(), v);
            }
        }
        for (name, value) in &self.set {
            let text = values::render_late(value, ctx);
            // An empty value removes the header, as nginx does.
            match HeaderValue::from_str(&text) {
                Ok(v) if !text.is_empty() => drop(resp.headers.insert(name.clone(), v)),
                _ => drop(resp.headers.remove(name)),
            }
        }
        for name in &self.remove {
            resp.headers.remove(name);
        }
    }

    fn response_body(&self, ctx: &Ctx, resp: &mut response::Parts) -> Option<Box<dyn BodyFilter>> {
        if !self.applies(ctx) {
            return None;
        }
        if let Some(body) = &self.body {
            resp.headers.remove(CONTENT_ENCODING);
            return Some(Box::new(Replace { body: Some(body.clone()) }));
        }
        let encoding = match resp.headers.get(CONTENT_ENCODING).map(|v| v.as_bytes().to_ascii_lowercase()) {
            None => Encoding::Identity,
            Some(e) if e == b"gzip" => Encoding::Gzip,
            Some(e) if e == b"br" => Encoding::Brotli,
            Some(e) if e == b"identity" => Encoding::Identity,
            Some(other) => {
                tracing::warn!(encoding = %String::from_utf8_lossy(&other), "response-rewrite filters skip a body in an unsupported encoding");
                return None;
            }
        };
        resp.headers.remove(CONTENT_ENCODING);
        Some(Box::new(Rewrite {
            filters: self.filters.clone(),
            held: Vec::new(),
            max: self.max_body,
            encoding,
            full: false,
        }))
    }
}

/// Replaces the body with `body`.
struct Replace {
    body: Option<Bytes>,
}

impl BodyFilter for Replace {
    fn data(&mut self, _chunk: Bytes) -> Bytes {
        Bytes::new()
    }
    fn end(&mut self) -> Bytes {
        self.body.take().unwrap_or_default()
    }
}

#[derive(Clone, Copy)]
enum Encoding {
    Identity,
    Gzip,
    Brotli,
}

/// Holds the body, then runs the filters over it.
///
/// A plain body longer than `max_resp_body_size` is sent unfiltered, whole. A gzip or brotli body has already lost
/// its `Content-Encoding` (the filtered body goes out decoded), so what goes beyond the limit, compressed or
/// decoded, is cut off: decoding is bounded, so a small compressed body cannot expand without limit in memory.
struct Rewrite {
    filters: Filters,
    held: Vec<u8>,
    max: usize,
    encoding: Encoding,
    /// The limit was reached: a plain body passes through unfiltered, an encoded one is cut.
    full: bool,
}

impl BodyFilter for Rewrite {
    fn data(&mut self, chunk: Bytes) -> Bytes {
        if self.full {
            return if matches!(self.encoding, Encoding::Identity) { chunk } else { Bytes::new() };
        }
        let room = self.max.saturating_sub(self.held.len());
        if chunk.len() <= room {
            self.held.extend_from_slice(&chunk);
            return Bytes::new();
        }
        self.full = true;
        tracing::warn!(max = self.max, "response body over max_resp_body_size: response-rewrite filters skip it");
        if matches!(self.encoding, Encoding::Identity) {
            let mut all = std::mem::take(&mut self.held);
            all.extend_from_slice(&chunk);
            return Bytes::from(all);
        }
        self.held.extend_from_slice(&chunk[..room]);
        Bytes::new()
    }

    fn end(&mut self) -> Bytes {
        let raw = std::mem::take(&mut self.held);
        if self.full && matches!(self.encoding, Encoding::Identity) {
            return Bytes::new();
        }
        let (limit, cut) = (self.max as u64, self.full);
        let bounded = |reader: &mut dyn Read| {
            let mut out = Vec::new();
            // A body cut at the limit ends mid-stream: what decoded before that is kept.
            let read = reader.take(limit).read_to_end(&mut out);
            (read.is_ok() || cut).then_some(out)
        };
        let decoded = match self.encoding {
            Encoding::Identity => Some(raw),
            Encoding::Gzip => bounded(&mut flate2::read::MultiGzDecoder::new(&raw[..])),
            Encoding::Brotli => bounded(&mut brotli::Decompressor::new(&raw[..], 4096)),
        };
        let Some(body) = decoded else {
            tracing::warn!("response-rewrite could not decode the body; sending it empty");
            return Bytes::new();
        };
        let mut body = body;
        for (re, replacement, global) in self.filters.iter() {
            let with = replacement.as_bytes();
            let next = if *global { re.replace_all(&body, with) } else { re.replace(&body, with) };
            body = next.into_owned();
        }
        Bytes::from(body)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn rewrite(encoding: Encoding, max: usize) -> Rewrite {
        let filters: Filters = Arc::new(vec![(Regex::new("a").unwrap(), "b".to_string(), true)]);
        Rewrite { filters, held: Vec::new(), max, encoding, full: false }
    }

    #[test]
    fn decoding_is_bounded_and_long_plain_bodies_pass_unfiltered() {
        // 64 MiB of zeros compress to about 64 KiB: the decoded body stops at the limit.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for _ in 0..64 {
            gz.write_all(&[0u8; 1 << 20]).unwrap();
        }
        let bomb = gz.finish().unwrap();
        let mut f = rewrite(Encoding::Gzip, 1 << 20);
        assert!(f.data(Bytes::from(bomb)).is_empty());
        assert_eq!(f.end().len(), 1 << 20);

        let mut f = rewrite(Encoding::Identity, 4);
        assert!(f.data(Bytes::from_static(b"aaa")).is_empty());
        assert_eq!(f.data(Bytes::from_static(b"aa")), Bytes::from_static(b"aaaaa"));
        assert_eq!(f.data(Bytes::from_static(b"a")), Bytes::from_static(b"a"));
        assert!(f.end().is_empty());

        let mut f = rewrite(Encoding::Identity, 4);
        assert!(f.data(Bytes::from_static(b"aba")).is_empty());
        assert_eq!(f.end(), Bytes::from_static(b"bbb"));
    }
}
