//! HTTP/2 to nodes (upstream `scheme: grpc` and `grpcs`): one connection per node (and TLS server name) carries
//! every request as a stream, opened on first use and again once it has closed, so a thousand concurrent gRPC calls
//! cost one connection rather than a thousand. Streams beyond the node's `SETTINGS_MAX_CONCURRENT_STREAMS` wait for
//! a free one. hyper's HTTP/2 client does the framing: unlike HTTP/1.1, where the proxy's own exchange saves a
//! task and a channel per request, HTTP/2 needs a connection task anyway (its streams are multiplexed).
//!
//! Bodies stream both ways, trailers included (gRPC puts its status in them). The read timeout for the response
//! head starts once the request body has ended, as for HTTP/1.1: a client-streaming call that takes longer than
//! the timeout to send is not the node's delay.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::debug;

use super::http1::{self, RequestBody};
use super::pool::{ConnectError, NodePool, SendError, Timing, UpstreamBody};

/// The HTTP/2 connections of one node, by TLS server name (`None` for plain `grpc`).
#[derive(Debug, Default)]
pub(super) struct Shared {
    senders: std::sync::Mutex<Vec<Named>>,
}

/// One connection's sender and the TLS server name it was opened with.
type Named = (Option<Arc<str>>, SendRequest<Watched>);

/// A request body that says when it has ended, so the wait for the response head can start then.
#[derive(Debug)]
pub(super) struct Watched {
    inner: RequestBody,
    ended: Arc<Ended>,
}

/// Set, and notified, once the request body has ended.
#[derive(Debug, Default)]
struct Ended {
    done: AtomicBool,
    notify: Notify,
}

impl Ended {
    fn set(&self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }
}

impl Body for Watched {
    type Data = Bytes;
    type Error = http1::BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, http1::BodyError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.ended.set();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl NodePool {
    /// Sends the request as a stream on the node's shared connection and waits for the response head until the
    /// deadline. The head's `Host` becomes `:authority`; `extra` fields are added as headers.
    pub(super) async fn send_http2(
        &self,
        parts: &http::request::Parts,
        body: Option<RequestBody>,
        extra: &[(&'static str, &[u8])],
        server_name: Option<&str>,
        timing: Timing,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let mut sender = self.http2_sender(timing, server_name).await?;
        let body = body.unwrap_or(RequestBody::Buffered(None));
        let ended = Arc::new(Ended::default());
        if body.is_end_stream() {
            ended.set();
        }
        let watched = Watched { inner: body, ended: ended.clone() };
        let req = request(parts, watched, extra, self.tls.is_some()).map_err(SendError::Http)?;
        let response = sender.send_request(req);
        tokio::pin!(response);
        let mut deadline = timing.deadline;
        let result = loop {
            tokio::select! {
                result = &mut response => break result,
                // The body ended: from now the node has the read timeout to answer.
                () = ended.notify.notified(), if !ended.done.load(Ordering::Acquire) => {
                    deadline = Instant::now() + timing.read;
                }
                () = tokio::time::sleep_until(deadline) => {
                    if ended.done.load(Ordering::Acquire) {
                        return Err(SendError::Timeout);
                    }
                    // Still uploading: the client's pace, not the node's; wait on.
                    deadline = Instant::now() + timing.read;
                }
            }
        };
        match result {
            Err(e) => {
                // A request body over the limit surfaces inside hyper's error: it is the client's, not the node's.
                let source = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<http1::BodyError>());
                match source {
                    Some(http1::BodyError::TooLarge(limit)) => {
                        Err(SendError::Http(http1::Error::Client(http1::BodyError::TooLarge(*limit))))
                    }
                    _ => Err(SendError::Http(http1::Error::Http2(e))),
                }
            }
            Ok(resp) => Ok(resp.map(UpstreamBody::Http2)),
        }
    }

    /// A sender on the open connection for `server_name`, or on a new one opened within the connect timeout. The
    /// lock is not held while connecting: requests to a node that does not answer each wait their own connect
    /// timeout, not each other's. Requests that all find no connection may open one each; the first to finish is
    /// kept and shared, the others carry their own request and close when it is done.
    async fn http2_sender(
        &self,
        timing: Timing,
        server_name: Option<&str>,
    ) -> Result<SendRequest<Watched>, ConnectError> {
        if let Some(sender) = self.open_sender(server_name) {
            return Ok(sender);
        }
        let stream = self.open(timing.connect, server_name).await?;
        let mut builder = Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        let handshake = builder.handshake::<_, Watched>(TokioIo::new(stream));
        let (sender, connection) = tokio::time::timeout_at(timing.started + timing.connect, handshake)
            .await
            .map_err(|_| ConnectError::Timeout(timing.connect))?
            .map_err(|e| ConnectError::Http2(e.to_string()))?;
        let node = self.host.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(%node, error = %e, "HTTP/2 connection to node ended");
            }
        });
        let mut senders = self.shared.senders.lock().unwrap_or_else(|e| e.into_inner());
        if !senders.iter().any(|(name, s)| name.as_deref() == server_name && !s.is_closed()) {
            senders.push((server_name.map(Arc::from), sender.clone()));
        }
        Ok(sender)
    }

    /// A sender on an open connection for `server_name`, forgetting closed ones.
    fn open_sender(&self, server_name: Option<&str>) -> Option<SendRequest<Watched>> {
        let mut senders = self.shared.senders.lock().unwrap_or_else(|e| e.into_inner());
        senders.retain(|(_, s)| !s.is_closed());
        senders.iter().find(|(name, _)| name.as_deref() == server_name).map(|(_, s)| s.clone())
    }
}

/// The HTTP/2 request for `parts`: an absolute URI (scheme and `:authority` from the `Host` the node is to get),
/// the header fields but `Host`, and the body.
fn request(
    parts: &http::request::Parts,
    body: Watched,
    extra: &[(&'static str, &[u8])],
    tls: bool,
) -> Result<Request<Watched>, http1::Error> {
    let authority = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let uri = Uri::builder()
        .scheme(if tls { "https" } else { "http" })
        .authority(authority)
        .path_and_query(target)
        .build()
        .map_err(|e| http1::Error::Head(format!("cannot form the HTTP/2 request target: {e}")))?;
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_2;
    let headers = req.headers_mut();
    headers.reserve(parts.headers.len() + extra.len());
    for (name, value) in parts.headers.iter().filter(|(name, _)| *name != header::HOST) {
        headers.append(name.clone(), value.clone());
    }
    for (name, value) in extra {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    Ok(req)
}
