//! Upgraded connections (WebSocket and other `Upgrade` protocols): once the node has answered 101, the client's
//! connection and the node's are joined, and bytes are copied both ways until either side closes or nothing has
//! moved for the idle timeout (the route's read timeout, as nginx's `proxy_read_timeout` ends idle WebSockets).
//!
//! A tunnel owns only its two streams: configuration updates never touch it, so an open WebSocket outlives any
//! change to its route.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tracing::debug;

use crate::proxy::InFlight;
use crate::upstream::http1::Stream;

/// The protocol a client asks to switch to, when its request may be tunnelled: HTTP/1.1, `Connection: upgrade`
/// and an `Upgrade` field, which is returned. `h2c` is never passed on: a node speaking HTTP/2 behind the proxy
/// would take requests that never went through routing (a known smuggling path).
pub fn requested(version: http::Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != http::Version::HTTP_11 {
        return None;
    }
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| v.as_bytes().split(|&b| b == b',').any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade")));
    let protocol = headers.get(header::UPGRADE)?;
    let h2c = protocol.as_bytes().split(|&b| b == b',').any(|p| p.trim_ascii().eq_ignore_ascii_case(b"h2c"));
    (asks && !h2c).then(|| protocol.clone())
}

/// Joins the client's connection (once hyper has sent the 101 and hands it over) to the node's, in a task of its
/// own. `early` is what the node sent right after its 101; `in_flight` keeps counting the node as busy.
pub fn spawn(client: OnUpgrade, node: Stream, early: BytesMut, idle: Duration, in_flight: Option<InFlight>) {
    tokio::spawn(async move {
        let _busy = in_flight;
        let client = match client.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => {
                debug!(error = %e, "the client's connection was not upgraded");
                return;
            }
        };
        match join(client, node, early, idle).await {
            Ok(Ended::Closed { up, down }) => debug!(up, down, "tunnel closed"),
            Ok(Ended::Idle { moved }) => debug!(moved, ?idle, "tunnel idle for too long; closed"),
            Err(e) => debug!(error = %e, "tunnel ended with an error"),
        }
    });
}

/// How a tunnel ended: closed, with the bytes copied client → node (`up`) and node → client (`down`), or idle,
/// with the bytes moved in all.
enum Ended {
    Closed { up: u64, down: u64 },
    Idle { moved: u64 },
}

async fn join<C>(mut client: C, node: Stream, early: BytesMut, idle: Duration) -> io::Result<Ended>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    if !early.is_empty() {
        client.write_all(&early).await?;
    }
    let moved = Arc::new(AtomicU64::new(0));
    let mut client = Counted { inner: client, moved: moved.clone() };
    let mut node = Counted { inner: node, moved: moved.clone() };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut node);
    tokio::pin!(copy);
    // Checked a few times per period, so a tunnel closes between one and 1.25 idle periods after its last byte.
    let mut tick = tokio::time::interval(idle / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut seen, mut quiet_since) = (0, tokio::time::Instant::now());
    loop {
        tokio::select! {
            done = &mut copy => {
                let (up, down) = done?;
                return Ok(Ended::Closed { up, down });
            }
            now = tick.tick() => {
                let total = moved.load(Ordering::Relaxed);
                if total != seen {
                    (seen, quiet_since) = (total, now);
                } else if now.duration_since(quiet_since) >= idle {
                    return Ok(Ended::Idle { moved: total });
                }
            }
        }
    }
}

/// A stream that counts the bytes read from it, for the idle check.
struct Counted<T> {
    inner: T,
    moved: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.moved.fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http11_upgrades_other_than_h2c_are_tunnelled() {
        let with = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
            }
            h
        };
        let ws = with(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(requested(http::Version::HTTP_11, &ws).unwrap(), "websocket");
        assert!(requested(http::Version::HTTP_10, &ws).is_none());
        assert!(requested(http::Version::HTTP_2, &ws).is_none());
        assert!(requested(http::Version::HTTP_11, &with(&[("upgrade", "websocket")])).is_none());
        assert!(requested(http::Version::HTTP_11, &with(&[("connection", "upgrade")])).is_none());
        let h2c = with(&[("connection", "Upgrade, HTTP2-Settings"), ("upgrade", "h2c")]);
        assert!(requested(http::Version::HTTP_11, &h2c).is_none());
    }
}
