//! What gzip and brotli share: what the request accepts (read when it arrives, since the response phases no
//! longer have its headers), when a response is worth compressing, and the streaming filter (every chunk is
//! compressed and flushed as it passes, so a streamed response stays streamed).

use std::io::Write;

use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, VARY};
use http::{Method, StatusCode, Version, request, response};
use sluice_model::plugins::gzip::Types;

use super::{BodyFilter, Ctx};

/// What the request said about encodings.
#[derive(Debug, Clone, Copy)]
pub(super) struct Accepts {
    pub gzip: bool,
    pub br: bool,
    pub version: Version,
    /// Came through another proxy (`Via`): nginx does not gzip those by default, nor does sluice.
    pub via: bool,
    pub head: bool,
}

/// Whether `Accept-Encoding` accepts `coding` (or `*`): named with no q, or a q other than 0.
fn accepts(value: &str, coding: &str) -> bool {
    value.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let name = parts.next().unwrap_or("").to_ascii_lowercase();
        if name != coding && name != "*" {
            return false;
        }
        parts.filter_map(|p| p.strip_prefix("q=")).all(|q| q.parse::<f64>().map_or(true, |q| q > 0.0))
    })
}

/// Notes what the request accepts, once per request (gzip and brotli share it).
pub(super) fn note(ctx: &mut Ctx, req: &request::Parts) {
    if ctx.extensions.get::<Accepts>().is_some() {
        return;
    }
    let ae: String =
        req.headers.get_all(ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    ctx.extensions.insert(Accepts {
        gzip: accepts(&ae, "gzip"),
        br: accepts(&ae, "br"),
        version: req.version,
        via: req.headers.contains_key("via"),
        head: req.method == Method::HEAD,
    });
}

/// The checks both plugins make of a response: its type, its length, the request's version.
pub(super) struct Worth<'a> {
    pub types: &'a Types,
    pub min_length: u64,
    pub http_version: f64,
}

impl Worth<'_> {
    /// Whether the response qualifies (before asking whether the client accepts the encoding).
    pub fn qualifies(&self, ctx: &Ctx, resp: &response::Parts) -> bool {
        let Some(accepts) = ctx.extensions.get::<Accepts>() else { return false };
        let media =
            resp.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|t| t.split(';').next().unwrap_or(""));
        let Some(media) = media else { return false };
        if !self.types.allows(media.trim()) || resp.headers.contains_key(CONTENT_ENCODING) {
            return false;
        }
        let length = resp.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if length.is_some_and(|l| l < self.min_length) {
            return false;
        }
        let version = match accepts.version {
            Version::HTTP_09 => 0.9,
            Version::HTTP_10 => 1.0,
            _ => 1.1,
        };
        version >= self.http_version
            && !accepts.head
            // nginx compresses these only: a 206's Content-Range names bytes of the original, and 204 and 304
            // have no body.
            && matches!(resp.status, StatusCode::OK | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND)
    }
}

/// Marks a response as encoded with `coding`; `vary` adds `Vary: Accept-Encoding`.
pub(super) fn encode_headers(resp: &mut response::Parts, coding: &'static str) {
    resp.headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding));
    // A range of the encoded body is not a range of the original.
    resp.headers.remove(ACCEPT_RANGES);
}

/// Appends `Vary: Accept-Encoding`.
pub(super) fn vary(resp: &mut response::Parts) {
    resp.headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
}

/// A streaming encoder writing into a buffer that is drained after every chunk.
pub(super) enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
}

impl Encoder {
    fn buffer(&mut self) -> &mut Vec<u8> {
        match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
        }
    }
}

impl BodyFilter for Encoder {
    fn data(&mut self, chunk: Bytes) -> Bytes {
        let written = match self {
            Encoder::Gzip(e) => e.write_all(&chunk).and_then(|_| e.flush()),
            Encoder::Brotli(e) => e.write_all(&chunk).and_then(|_| e.flush()),
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "compressing a response failed");
        }
        Bytes::from(std::mem::take(self.buffer()))
    }

    fn end(&mut self) -> Bytes {
        let finished = match std::mem::replace(
            self,
            Encoder::Gzip(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none())),
        ) {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Brotli(mut e) => e.flush().map(|_| e.into_inner()),
        };
        finished.map(Bytes::from).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::accepts;

    #[test]
    fn reads_accept_encoding() {
        assert!(accepts("gzip, deflate, br", "br"));
        assert!(accepts("gzip;q=0.5", "gzip"));
        assert!(!accepts("gzip;q=0", "gzip"));
        assert!(!accepts("br;q=0.0", "br"));
        assert!(accepts("*", "gzip"));
        assert!(!accepts("deflate", "gzip"));
        assert!(!accepts("", "gzip"));
    }
}
