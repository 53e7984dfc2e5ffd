//! The TLS handshake of the HTTPS listener: the client's hello is read first, the server name it asks for picks a
//! configuration from the snapshot being served (so a rotated certificate is used by the next handshake, while
//! open connections keep theirs), and the handshake completes with it, all within a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use super::certs::{Served, refusing};
use super::{Handshake, Transport};
use crate::Shared;

/// How long a client may take to complete the handshake (a slow or silent client must not hold a task forever).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS with certificates from the served configuration's ssl objects.
pub(crate) struct Tls {
    pub(crate) shared: Arc<Shared>,
}

/// How a handshake ended, as the `sluice_tls_handshakes_total` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Completed with a full handshake.
    Ok,
    /// Completed by resuming an earlier session (a ticket, or a TLS 1.2 session id).
    Resumed,
    /// No certificate for the name the client asked for (or a refused one).
    NoCertificate,
    /// The client sent something other than TLS, or the handshake failed (bad client certificate, no common
    /// version or cipher).
    Failed,
    /// The client did not finish in time.
    Timeout,
}

impl Outcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Resumed => "resumed",
            Outcome::NoCertificate => "no_certificate",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
        }
    }
}

impl Handshake for Tls {
    type Stream = TlsStream<TcpStream>;

    async fn handshake(&self, tcp: TcpStream, remote: SocketAddr) -> Option<(Self::Stream, Transport)> {
        let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.complete(tcp, remote)).await;
        let (outcome, done) = match result {
            Ok(Ok(done)) => {
                let resumed = done.0.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                (if resumed { Outcome::Resumed } else { Outcome::Ok }, Some(done))
            }
            Ok(Err(outcome)) => (outcome, None),
            Err(_) => (Outcome::Timeout, None),
        };
        self.shared.metrics.tls_handshake(outcome);
        done
    }
}

impl Tls {
    async fn complete(&self, tcp: TcpStream, remote: SocketAddr) -> Result<(TlsStream<TcpStream>, Transport), Outcome> {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await.map_err(|e| {
            debug!(client = %remote, error = %e, "not a TLS client hello");
            Outcome::Failed
        })?;
        let sni: Option<Box<str>> = start.client_hello().server_name().map(|s| s.to_ascii_lowercase().into());
        let chosen = match self.shared.config.load().certificates.select(sni.as_deref()) {
            Some(Served::Config { config, .. }) => Ok(config.clone()),
            Some(Served::Refused) | None => Err(()),
        };
        let config = match chosen {
            Ok(config) => config,
            Err(()) => {
                debug!(client = %remote, sni = ?sni, "no certificate for this server name; refusing the handshake");
                // Completing the handshake with a configuration that has no certificate sends the client an alert.
                if let Some(refusing) = refusing() {
                    let _ = start.into_stream(refusing).await;
                }
                return Err(Outcome::NoCertificate);
            }
        };
        let stream = start.into_stream(config).await.map_err(|e| {
            debug!(client = %remote, sni = ?sni, error = %e, "TLS handshake failed");
            Outcome::Failed
        })?;
        let client_verified = stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
        Ok((stream, Transport { tls: true, sni, client_verified, ..Transport::default() }))
    }
}
