//! One HTTP/1.1 exchange with a node, driven inside the request's own task: the request head is written from one
//! buffer, the response head is parsed with `httparse` straight out of the read buffer (header values are slices of
//! it, not copies), and the response body is framed (length, chunked, or until close) as the client takes it.
//!
//! This replaces a general HTTP client on the hot path because a proxy needs less of one: there is no connection
//! task to wake, no channel between it and the request, and a small response is usually complete after the first
//! read, so its connection goes back to the pool before the client's write even starts.

use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::io::poll_read_buf;

/// The largest response head accepted (status line and header fields), and the largest trailer section.
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a response head may have (hyper's default too).
const MAX_HEADERS: usize = 100;
/// How much free room the read buffer gets before each read.
const READ_ROOM: usize = 8 * 1024;
/// The longest chunk-size line accepted (the size and any extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading from or writing to the node failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The node closed the connection without answering.
    #[error("the node closed the connection before answering")]
    ClosedBeforeResponse,
    /// The node closed the connection in the middle of a length-delimited or chunked body.
    #[error("the node closed the connection before the body ended")]
    ClosedInBody,
    /// The response head is not valid HTTP/1.x.
    #[error("invalid response head: {0}")]
    Head(String),
    /// The response head did not fit in the limit.
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// The chunked body is malformed.
    #[error("invalid chunked body: {0}")]
    Chunked(&'static str),
    /// The client's request body failed, or went over the limit, while it was being sent on.
    #[error("the client's request body: {0}")]
    Client(BodyError),
    /// The HTTP/2 exchange with the node failed (the connection, or the stream was reset).
    #[error("HTTP/2: {0}")]
    Http2(hyper::Error),
}

/// Why the client's request body could not be passed on.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Reading it from the client failed: it broke off, or its framing is malformed.
    #[error("{0}")]
    Read(#[from] hyper::Error),
    /// It is larger than the limit (`--max-body-bytes`), which a chunked body shows only on the way.
    #[error("it is larger than {0} bytes")]
    TooLarge(u64),
}

/// A connection's byte stream: plain TCP, or TLS over it.
#[derive(Debug)]
pub enum Stream {
    /// Plain HTTP.
    Tcp(TcpStream),
    /// HTTPS to the node.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An open HTTP/1.1 connection to a node and its buffers, which are kept from one request to the next.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    read_buf: BytesMut,
    /// The request head, then framed body data; the head stays until the next request so it can be replayed.
    write_buf: Vec<u8>,
    /// Scratch space for parsing response heads, kept so parsing does not allocate.
    spans: Vec<(HeaderName, usize, usize)>,
    /// Whether the request in flight asked to switch protocols, so a 101 answer is expected rather than an error.
    upgrading: bool,
}

impl Connection {
    /// Wraps a freshly opened stream.
    pub fn new(stream: Stream) -> Connection {
        Connection {
            stream,
            read_buf: BytesMut::with_capacity(READ_ROOM),
            write_buf: Vec::with_capacity(1024),
            spans: Vec::with_capacity(16),
            upgrading: false,
        }
    }

    /// Says whether the next request asks to switch protocols (`Upgrade`), which allows a 101 answer.
    pub fn set_upgrading(&mut self, upgrading: bool) {
        self.upgrading = upgrading;
    }

    /// The stream and whatever the node sent after the head that switched protocols.
    pub fn into_io(self) -> (Stream, BytesMut) {
        (self.stream, self.read_buf)
    }

    /// Whether an idle connection can carry another request: nothing arrived since its last response and the node
    /// has not closed it. No system call is made unless the socket has become readable meanwhile.
    pub fn is_idle_usable(&mut self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        // A pending read is the healthy answer; with a no-op waker nothing is woken later, the next real read
        // registers its own.
        let mut cx = Context::from_waker(Waker::noop());
        matches!(poll_read_buf(Pin::new(&mut self.stream), &mut cx, &mut self.read_buf), Poll::Pending)
    }

    /// Writes the request head for `parts` and the `extra` fields into the write buffer, framing a body when there
    /// is one: by its exact length when the client gave one, else chunked. Any framing field the request carries is
    /// replaced.
    pub fn encode_head(
        &mut self,
        parts: &http::request::Parts,
        extra: &[(&str, &[u8])],
        body: Option<&RequestBody>,
    ) -> Framed {
        let buf = &mut self.write_buf;
        buf.clear();
        buf.extend_from_slice(parts.method.as_str().as_bytes());
        buf.push(b' ');
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        buf.extend_from_slice(if target.is_empty() { b"/" } else { target.as_bytes() });
        buf.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &parts.headers {
            if body.is_some() && (name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING) {
                continue;
            }
            field(buf, name.as_str(), value.as_bytes());
        }
        for (name, value) in extra {
            field(buf, name, value);
        }
        let framed = match body.map(|b| b.size_hint().exact()) {
            None => Framed::None,
            Some(Some(len)) => {
                // Writing into a Vec cannot fail.
                let _ = write!(buf, "content-length: {len}\r\n");
                Framed::Length
            }
            Some(None) => {
                buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framed::Chunked
            }
        };
        buf.extend_from_slice(b"\r\n");
        framed
    }

    /// Moves the encoded request head to `other`, to replay it on a new connection.
    pub fn hand_head_to(&mut self, other: &mut Connection) {
        std::mem::swap(&mut self.write_buf, &mut other.write_buf);
    }

    /// Reads more bytes into the read buffer; `Ok(0)` is the end of the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // A full room every time: with less, a response that would have fitted (a 4 KiB body) comes in two reads
        // and two writes to the client. Once the last response's bytes are gone, this reuses the same allocation.
        if self.read_buf.capacity() - self.read_buf.len() < READ_ROOM {
            self.read_buf.reserve(READ_ROOM);
        }
        poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read_buf)
    }

    /// Reads until a complete final response head is buffered (skipping interim 1xx answers) and parses it.
    /// `received` turns true once any byte has come back, after which the request cannot be replayed.
    pub fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_request: bool,
        received: &mut bool,
    ) -> Poll<Result<Head, Error>> {
        loop {
            if !self.read_buf.is_empty() {
                *received = true;
                if let Some(head) = self.parse_head(head_request)? {
                    return Poll::Ready(Ok(head));
                }
            }
            if ready!(self.poll_read(cx))? == 0 {
                return Poll::Ready(Err(if *received { Error::ClosedInBody } else { Error::ClosedBeforeResponse }));
            }
        }
    }

    /// Parses a buffered response head; `None` while it is incomplete. Hop-by-hop fields (RFC 9110 section 7.6.1)
    /// are read for framing and persistence but left out of the head passed on.
    fn parse_head(&mut self, head_request: bool) -> Result<Option<Head>, Error> {
        parse_head(&mut self.read_buf, &mut self.spans, head_request, self.upgrading)
    }
}

/// Parses a buffered response head out of `read_buf`; `None` while it is incomplete. Hop-by-hop fields (RFC 9110
/// section 7.6.1) are read for framing and persistence but left out of the head passed on; a 101 is accepted only
/// when `upgrading`. `spans` is scratch space kept by the caller so parsing does not allocate.
fn parse_head(
    read_buf: &mut BytesMut,
    spans: &mut Vec<(HeaderName, usize, usize)>,
    head_request: bool,
    upgrading: bool,
) -> Result<Option<Head>, Error> {
    loop {
        // Uninitialised slots: a 100-field array is not written out for every response.
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        spans.clear();
        let (len, code, version) = {
            let mut resp = httparse::Response::new(&mut []);
            let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut resp,
                read_buf,
                &mut fields,
            ) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if read_buf.len() > MAX_HEAD => return Err(Error::HeadTooLarge),
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => return Err(Error::Head(e.to_string())),
            };
            // Where each value lies in the buffer, so it can be sliced out once the buffer is frozen.
            let base = read_buf.as_ptr() as usize;
            for field in resp.headers.iter() {
                let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|e| Error::Head(e.to_string()))?;
                let start = field.value.as_ptr() as usize - base;
                spans.push((name, start, start + field.value.len()));
            }
            (len, resp.code.unwrap_or(0), resp.version.unwrap_or(1))
        };
        if (100..200).contains(&code) && code != 101 {
            // An interim answer (100 Continue, 103 Early Hints): the final one follows.
            read_buf.advance(len);
            continue;
        }
        if code == 101 && !upgrading {
            return Err(Error::Head("unexpected 101 Switching Protocols".into()));
        }
        let status = StatusCode::from_u16(code).map_err(|e| Error::Head(e.to_string()))?;
        let head = read_buf.split_to(len).freeze();
        let version = if version == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
        let mut framing = FramingFields::default();
        // Room for the fields plugins add to a response (quota headers, CORS, a rewrite's) without regrowing the
        // map, which copies and rehashes every field.
        let mut headers = HeaderMap::with_capacity(spans.len() + 4);
        for (name, start, end) in spans.drain(..) {
            let value =
                HeaderValue::from_maybe_shared(head.slice(start..end)).map_err(|e| Error::Head(e.to_string()))?;
            if is_hop_by_hop(&name) {
                if code == 101 && name == header::UPGRADE {
                    // The protocol switched to: the client must be told, so it is passed on.
                    headers.append(name.clone(), value.clone());
                }
                framing.note(&name, value);
            } else {
                headers.append(name, value);
            }
        }
        return Head::new(status, version, headers, framing, head_request).map(Some);
    }
}

/// Feeds `data` to the response parser as a node's bytes would arrive, in reads of a size set by its first byte:
/// the head (interim answers skipped), then the body by its framing, trailers included. For the fuzz target
/// `exchange` and its corpus replay: any input must end in a parsed body or an error, never a panic or a loop.
pub fn exercise(data: &[u8]) {
    let step = usize::from(data.first().copied().unwrap_or(1).max(1));
    for (head_request, upgrading) in [(false, false), (true, false), (false, true)] {
        let mut buf = BytesMut::new();
        let mut spans = Vec::new();
        let mut rest = data;
        let mut feed = |buf: &mut BytesMut| {
            let n = step.min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            n > 0
        };
        let head = loop {
            match parse_head(&mut buf, &mut spans, head_request, upgrading) {
                Ok(Some(head)) => break Some(head),
                Ok(None) if feed(&mut buf) => {}
                Ok(None) | Err(_) => break None,
            }
        };
        let Some(mut framing) = head.map(|h| h.framing) else { continue };
        // Every step takes bytes, ends, or waits for more: more steps than bytes would be a loop.
        for _ in 0..=2 * data.len() + 8 {
            match framing.decode(&mut buf) {
                Ok(Step::Frame(_)) => {}
                Ok(Step::NeedMore) if feed(&mut buf) => {}
                Ok(Step::End | Step::NeedMore) | Err(_) => break,
            }
        }
    }
}

/// Whether a field applies to one connection only and is never passed on (RFC 9110 section 7.6.1).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// The hop-by-hop fields, besides any a `Connection` field names.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// What a response's hop-by-hop fields say about framing and persistence, gathered as they are parsed (without
/// keeping the values: nodes send `Connection: keep-alive` on nearly every response).
#[derive(Debug, Default)]
struct FramingFields {
    close: bool,
    keep_alive: bool,
    /// Fields a `Connection` field names, to be dropped too.
    named: Vec<HeaderName>,
    /// Whether there is a Transfer-Encoding, and whether its last coding is chunked.
    transfer_encoding: Option<bool>,
}

impl FramingFields {
    fn note(&mut self, name: &HeaderName, value: HeaderValue) {
        if name == header::CONNECTION {
            for token in tokens(&value) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                } else if let Ok(named) = HeaderName::from_bytes(token) {
                    self.named.push(named);
                }
            }
        } else if name == header::TRANSFER_ENCODING {
            // A later field's codings come after an earlier one's; only the very last coding decides.
            if let Some(last) = tokens(&value).last() {
                self.transfer_encoding = Some(last.eq_ignore_ascii_case(b"chunked"));
            } else {
                self.transfer_encoding.get_or_insert(false);
            }
        }
    }
}

/// Writes one `name: value` line.
fn field(buf: &mut Vec<u8>, name: &str, value: &[u8]) {
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed {
    /// No body.
    None,
    /// `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed final response head and how its body is framed.
#[derive(Debug)]
pub struct Head {
    /// Status, version and header fields.
    pub parts: http::response::Parts,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request once this response has been read.
    pub keep_alive: bool,
}

impl Head {
    /// Works out body framing and persistence as RFC 9112 sections 6.3 and 9.3 say; `headers` holds the end-to-end
    /// fields, `hop` the connection's own.
    fn new(
        status: StatusCode,
        version: Version,
        mut headers: HeaderMap,
        hop: FramingFields,
        head_request: bool,
    ) -> Result<Head, Error> {
        let mut keep_alive = !hop.close && (version == Version::HTTP_11 || hop.keep_alive);
        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        for named in hop.named.into_iter().filter(|n| !(switching && n == header::UPGRADE)) {
            headers.remove(named);
        }
        if switching {
            // The connection now carries another protocol: no HTTP body, and never back to the pool.
            let mut parts = http::Response::new(()).into_parts().0;
            parts.status = status;
            parts.version = version;
            parts.headers = headers;
            return Ok(Head { parts, framing: Framing::Done, keep_alive: false });
        }
        let framing = if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::Done
        } else if let Some(chunked) = hop.transfer_encoding {
            // Transfer-Encoding wins over any Content-Length, which must not be passed on with a different framing.
            headers.remove(header::CONTENT_LENGTH);
            if chunked { Framing::Chunked(Chunk::Size) } else { Framing::Close }
        } else {
            match content_length(&headers)? {
                Some(len) => Framing::Length(len),
                None => Framing::Close,
            }
        };
        if framing == Framing::Close {
            keep_alive = false;
        }
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = version;
        parts.headers = headers;
        Ok(Head { parts, framing, keep_alive })
    }
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

/// The response's `Content-Length`: repeated fields or list members must agree (RFC 9110 section 8.6).
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    let mut found = None;
    for token in headers.get_all(header::CONTENT_LENGTH).iter().flat_map(tokens) {
        let len = std::str::from_utf8(token)
            .ok()
            .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or_else(|| Error::Head("invalid Content-Length".into()))?;
        if found.is_some_and(|f| f != len) {
            return Err(Error::Head("conflicting Content-Length values".into()));
        }
        found = Some(len);
    }
    Ok(found)
}

/// How a response body is delimited, and how much of it is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// Nothing (more) to read.
    Done,
    /// This many bytes are left.
    Length(u64),
    /// Chunked, in this state.
    Chunked(Chunk),
    /// Everything until the node closes the connection.
    Close,
}

/// Where a chunked decoder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk with this many bytes left.
    Data(u64),
    /// Expecting the line end after a chunk's data.
    DataEnd,
    /// Reading trailer fields after the last chunk (boxed once there is one: most bodies have none, and this keeps
    /// the body type small to move).
    Trailers(Option<Box<HeaderMap>>),
}

/// What the decoder could do with the buffered bytes.
enum Step {
    Frame(Frame<Bytes>),
    End,
    NeedMore,
}

impl Framing {
    /// Whether the body has been read to its end.
    pub fn is_end(&self) -> bool {
        matches!(self, Framing::Done | Framing::Length(0))
    }

    /// The exact remaining size when the framing gives one.
    pub fn size_hint(&self) -> SizeHint {
        match self {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }

    /// The whole rest of a length-delimited body when it is already buffered; the framing is then done.
    pub fn take_buffered(&mut self, conn: &mut Connection) -> Option<Bytes> {
        match *self {
            Framing::Length(n) if n > 0 && conn.read_buf.len() as u64 >= n => {
                *self = Framing::Done;
                Some(conn.read_buf.split_to(n as usize).freeze())
            }
            _ => None,
        }
    }

    /// The next body frame, reading from `conn` as needed; `None` at the end of the body.
    pub fn poll_frame(
        &mut self,
        conn: &mut Connection,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            match self.decode(&mut conn.read_buf) {
                Ok(Step::Frame(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(Step::End) => return Poll::Ready(None),
                Ok(Step::NeedMore) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
            match ready!(conn.poll_read(cx)) {
                Ok(0) if *self == Framing::Close => {
                    *self = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(Error::ClosedInBody))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }

    /// Takes what it can from `buf`.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, Error> {
        loop {
            match self {
                Framing::Done | Framing::Length(0) => return Ok(Step::End),
                Framing::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let take = (*left).min(buf.len() as u64);
                    *left -= take;
                    return Ok(Step::Frame(Frame::data(buf.split_to(take as usize).freeze())));
                }
                Framing::Close => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    return Ok(Step::Frame(Frame::data(buf.split().freeze())));
                }
                Framing::Chunked(chunk) => match chunk {
                    Chunk::Size => {
                        let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else { return Ok(Step::NeedMore) };
                        *chunk = match chunk_size(&line)? {
                            0 => Chunk::Trailers(None),
                            n => Chunk::Data(n),
                        };
                    }
                    Chunk::Data(left) => {
                        if buf.is_empty() {
                            return Ok(Step::NeedMore);
                        }
                        let take = (*left).min(buf.len() as u64);
                        *left -= take;
                        if *left == 0 {
                            *chunk = Chunk::DataEnd;
                        }
                        return Ok(Step::Frame(Frame::data(buf.split_to(take as usize).freeze())));
                    }
                    Chunk::DataEnd => {
                        let Some(line) = take_line(buf, 2)? else { return Ok(Step::NeedMore) };
                        if !line.is_empty() {
                            return Err(Error::Chunked("chunk data longer than its size"));
                        }
                        *chunk = Chunk::Size;
                    }
                    Chunk::Trailers(fields) => {
                        let Some(line) = take_line(buf, MAX_HEAD)? else { return Ok(Step::NeedMore) };
                        if !line.is_empty() {
                            let fields = fields.get_or_insert_default();
                            if fields.len() >= MAX_HEADERS {
                                return Err(Error::Chunked("too many trailer fields"));
                            }
                            let (name, value) = trailer_field(&line)?;
                            fields.append(name, value);
                            continue;
                        }
                        let fields = fields.take();
                        *self = Framing::Done;
                        if let Some(fields) = fields {
                            return Ok(Step::Frame(Frame::trailers(*fields)));
                        }
                    }
                },
            }
        }
    }
}

/// Takes one line (without its CRLF or bare LF) from `buf`; `None` until it is complete. Fails when no line end
/// comes within `limit` bytes.
fn take_line(buf: &mut BytesMut, limit: usize) -> Result<Option<Bytes>, Error> {
    match buf.iter().take(limit + 2).position(|&b| b == b'\n') {
        Some(end) => {
            let mut line = buf.split_to(end + 1).freeze();
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() > limit + 1 => Err(Error::Chunked("line too long")),
        None => Ok(None),
    }
}

/// The size on a chunk-size line; extensions after `;` are ignored.
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
    if digits.is_empty() || digits.len() > 16 {
        return Err(Error::Chunked("invalid chunk size"));
    }
    digits.iter().try_fold(0u64, |size, &d| {
        let v = (d as char).to_digit(16).ok_or(Error::Chunked("invalid chunk size"))?;
        Ok(size << 4 | u64::from(v))
    })
}

/// One `name: value` trailer line.
fn trailer_field(line: &[u8]) -> Result<(HeaderName, HeaderValue), Error> {
    let colon = line.iter().position(|&b| b == b':').ok_or(Error::Chunked("trailer field without a colon"))?;
    let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| Error::Chunked("invalid trailer field name"))?;
    let value =
        HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).map_err(|_| Error::Chunked("invalid trailer value"))?;
    Ok((name, value))
}

/// A request body on its way to a node: the client's stream, or the bytes a plugin read whole.
#[derive(Debug)]
pub enum RequestBody {
    /// Streamed from the client as it arrives.
    Stream(Incoming),
    /// Streamed, and refused once more than `limit` bytes have come (`left` remain allowed).
    Limited {
        /// The client's body.
        body: Incoming,
        /// Bytes still allowed.
        left: u64,
        /// The limit, for the error.
        limit: u64,
    },
    /// Read into memory (for a plugin's request-body phase); `None` once sent.
    Buffered(Option<Bytes>),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Stream(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::Read),
            RequestBody::Limited { body, left, limit } => {
                let frame = ready!(Pin::new(body).poll_frame(cx)).map(|f| f.map_err(BodyError::Read));
                if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
                    let len = data.map_or(0, |d| d.len() as u64);
                    if len > *left {
                        return Poll::Ready(Some(Err(BodyError::TooLarge(*limit))));
                    }
                    *left -= len;
                }
                Poll::Ready(frame)
            }
            RequestBody::Buffered(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Stream(body) | RequestBody::Limited { body, .. } => body.is_end_stream(),
            RequestBody::Buffered(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Stream(body) | RequestBody::Limited { body, .. } => body.size_hint(),
            RequestBody::Buffered(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// The request's head and body on their way to the node.
#[derive(Debug)]
pub struct Upload {
    /// Boxed: most requests have none, and the upload moves with the response body.
    body: Option<Box<RequestBody>>,
    chunked: bool,
    /// How much of the write buffer has been written.
    written: usize,
    /// The head is in the write buffer and it still holds only the head (the request can be replayed).
    head_only: bool,
    /// Bytes were written since the last flush (TLS keeps them until flushed).
    unflushed: bool,
    /// Everything has been written and flushed.
    done: bool,
    /// Bytes taken from the client or written to the node so far: whether the upload moves.
    moved: u64,
    /// Whether the upload last stopped waiting for the client's body (else for the node to take bytes).
    waiting_on_client: bool,
}

impl Upload {
    /// The upload of a head already encoded with [`Connection::encode_head`], and of `body` framed as it says.
    pub fn new(body: Option<RequestBody>, framed: Framed) -> Upload {
        Upload {
            body: body.map(Box::new),
            chunked: framed == Framed::Chunked,
            written: 0,
            head_only: true,
            unflushed: false,
            done: false,
            moved: 0,
            waiting_on_client: false,
        }
    }

    /// How many bytes the upload has moved (taken from the client, written to the node); unchanged means stalled.
    pub fn moved(&self) -> u64 {
        self.moved
    }

    /// Whether the upload is waiting for the client's body rather than for the node to take what it has.
    pub fn waiting_on_client(&self) -> bool {
        self.waiting_on_client
    }

    /// Whether everything has been sent.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the request can still be sent again on another connection: none of its body has been taken.
    pub fn is_replayable(&self) -> bool {
        self.head_only
    }

    /// Whether the whole head has been written.
    pub fn head_written(&self, conn: &Connection) -> bool {
        !self.head_only || self.written >= conn.write_buf.len()
    }

    /// Starts over on another connection, to which the head has been handed.
    pub fn restart(&mut self) {
        debug_assert!(self.head_only);
        self.written = 0;
        self.unflushed = false;
        self.done = false;
    }

    /// Stops sending (the response is over or the node stopped reading); the connection cannot be reused.
    pub fn abandon(&mut self) {
        self.body = None;
    }

    /// Writes as much as can be written now: `Ready(Ok)` once all is sent and flushed.
    pub fn poll(&mut self, conn: &mut Connection, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            self.waiting_on_client = false;
            while self.written < conn.write_buf.len() {
                let n = ready!(Pin::new(&mut conn.stream).poll_write(cx, &conn.write_buf[self.written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                }
                self.written += n;
                self.moved += n as u64;
                self.unflushed = true;
            }
            self.waiting_on_client = true;
            let Some(body) = self.body.as_mut() else { break };
            match Pin::new(&mut **body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    self.start_body_bytes(conn);
                    self.moved += data.len() as u64;
                    if self.chunked {
                        let _ = write!(conn.write_buf, "{:x}\r\n", data.len());
                    }
                    conn.write_buf.extend_from_slice(&data);
                    if self.chunked {
                        conn.write_buf.extend_from_slice(b"\r\n");
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(Error::Client(e))),
                Poll::Ready(None) => {
                    self.body = None;
                    if self.chunked {
                        self.start_body_bytes(conn);
                        conn.write_buf.extend_from_slice(b"0\r\n\r\n");
                    }
                }
                Poll::Pending => {
                    self.waiting_on_client = false;
                    ready!(self.poll_flush(conn, cx))?;
                    self.waiting_on_client = true;
                    return Poll::Pending;
                }
            }
        }
        self.waiting_on_client = false;
        ready!(self.poll_flush(conn, cx))?;
        self.done = true;
        Poll::Ready(Ok(()))
    }

    /// Makes room for body bytes: the written head (or earlier data) is dropped from the buffer.
    fn start_body_bytes(&mut self, conn: &mut Connection) {
        self.head_only = false;
        conn.write_buf.clear();
        self.written = 0;
    }

    fn poll_flush(&mut self, conn: &mut Connection, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.unflushed {
            ready!(Pin::new(&mut conn.stream).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, head_request: bool) -> Result<Head, Error> {
        let (status, rest) = text.split_once(' ').map(|(_, r)| r.split_at(3)).unwrap();
        let version = if text.starts_with("HTTP/1.0") { Version::HTTP_10 } else { Version::HTTP_11 };
        let (mut headers, mut hop) = (HeaderMap::new(), FramingFields::default());
        for line in rest.lines().skip(1).filter(|l| !l.is_empty()) {
            let (n, v) = line.split_once(':').unwrap();
            let (name, value) = (HeaderName::from_bytes(n.as_bytes()).unwrap(), v.trim().parse().unwrap());
            if is_hop_by_hop(&name) {
                hop.note(&name, value);
            } else {
                headers.append(name, value);
            }
        }
        Head::new(status.parse().unwrap(), version, headers, hop, head_request)
    }

    #[test]
    fn frames_responses_as_rfc_9112_says() {
        let h = head("HTTP/1.1 200 OK\ncontent-length: 5\n", false).unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), true));
        let h = head("HTTP/1.1 200 OK\ncontent-length: 5\n", true).unwrap();
        assert_eq!(h.framing, Framing::Done, "a HEAD answer has no body");
        let h = head("HTTP/1.1 304 Not Modified\ncontent-length: 5\n", false).unwrap();
        assert_eq!(h.framing, Framing::Done);
        let h = head("HTTP/1.1 200 OK\ntransfer-encoding: gzip, chunked\ncontent-length: 9\n", false).unwrap();
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        assert!(!h.parts.headers.contains_key("content-length"), "dropped when chunked wins");
        let h = head("HTTP/1.1 200 OK\ntransfer-encoding: gzip\n", false).unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head("HTTP/1.1 200 OK\n", false).unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h =
            head("HTTP/1.1 200 OK\nconnection: close, x-hop\nx-hop: 1\nx-end: 1\ncontent-length: 0\n", false).unwrap();
        assert!(!h.keep_alive);
        assert!(!h.parts.headers.contains_key("x-hop"), "named by Connection");
        assert!(h.parts.headers.contains_key("x-end"));
        assert!(!h.parts.headers.contains_key("connection"));
        let h = head("HTTP/1.0 200 OK\ncontent-length: 0\n", false).unwrap();
        assert!(!h.keep_alive, "HTTP/1.0 closes by default");
        let h = head("HTTP/1.0 200 OK\nconnection: Keep-Alive\ncontent-length: 0\n", false).unwrap();
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 200 OK\ncontent-length: 3, 3\n", false).unwrap();
        assert_eq!(h.framing, Framing::Length(3));
        assert!(head("HTTP/1.1 200 OK\ncontent-length: 3\ncontent-length: 4\n", false).is_err());
        assert!(head("HTTP/1.1 200 OK\ncontent-length: +3\n", false).is_err());
    }

    fn decode_all(framing: Framing, wire: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>, Framing), Error> {
        let mut framing = framing;
        let mut buf = BytesMut::new();
        let (mut data, mut trailers) = (Vec::new(), None);
        // Byte by byte, so every state meets a partial input.
        for &b in wire {
            buf.extend_from_slice(&[b]);
            while let Step::Frame(f) = framing.decode(&mut buf)? {
                match f.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(f) => trailers = f.into_trailers().ok(),
                }
            }
        }
        Ok((data, trailers, framing))
    }

    #[test]
    fn decodes_chunked_bodies_split_anywhere() {
        let wire = b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nx-sum: 7\r\n\r\n";
        let (data, trailers, end) = decode_all(Framing::Chunked(Chunk::Size), wire).unwrap();
        assert_eq!(data, b"hello 0123456789");
        assert_eq!(trailers.unwrap()["x-sum"], "7");
        assert_eq!(end, Framing::Done);
        let (data, trailers, end) = decode_all(Framing::Chunked(Chunk::Size), b"3\nabc\n0\n\n").unwrap();
        assert_eq!((data.as_slice(), trailers, end), (&b"abc"[..], None, Framing::Done), "bare line feeds");
        for bad in [&b"zz\r\n"[..], b"3\r\nabcd\r\n", b"11111111111111111\r\n", b"0\r\nno colon\r\n\r\n"] {
            assert!(decode_all(Framing::Chunked(Chunk::Size), bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 8];
        assert!(decode_all(Framing::Chunked(Chunk::Size), &long).is_err(), "unbounded size line");
    }

    #[test]
    fn decodes_length_and_close_delimited_bodies() {
        let (data, _, end) = decode_all(Framing::Length(4), b"abcd").unwrap();
        assert_eq!((data.as_slice(), end), (&b"abcd"[..], Framing::Length(0)));
        let (data, _, end) = decode_all(Framing::Close, b"until close").unwrap();
        assert_eq!((data.as_slice(), end), (&b"until close"[..], Framing::Close));
    }
}
