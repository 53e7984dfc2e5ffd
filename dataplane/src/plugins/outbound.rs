//! The HTTP client plugins call other services with (forward-auth's authorisation service, proxy-mirror's
//! mirror): hyper-util's pooled HTTP/1.1 client, one per plugin instance, over plain TCP or TLS (hyper-rustls,
//! with the data plane's rustls settings). The data plane's own node pool is built for upstream objects and their
//! settings, not for a plugin's. TCP connections are opened by [`Dialer`] rather than hyper-util's connector, so
//! that the upstream address policy holds here too: hyper-util's connector dials an address literal without asking
//! its resolver, so a filtering resolver would not see `http://169.254.169.254/`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Uri;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::registry::BuildCtx;
use crate::upstream::policy::{self, AddressPolicy, DialError};
use crate::upstream::tls::{TlsSettings, client_config};

/// A plugin's client to a service.
pub type Outbound = Client<HttpsConnector<Dialer>, Full<Bytes>>;

/// Opens the TCP connections of a plugin's client, to the addresses the upstream address policy admits.
#[derive(Debug, Clone)]
pub struct Dialer {
    policy: Arc<AddressPolicy>,
    limit: Duration,
}

impl tower_service::Service<Uri> for Dialer {
    type Response = TokioIo<TcpStream>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (policy, limit) = (self.policy.clone(), self.limit);
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| DialError::Io(std::io::Error::other("no host")))?;
            let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
            let timed_out = || DialError::Io(std::io::ErrorKind::TimedOut.into());
            let tcp =
                tokio::time::timeout(limit, policy::connect(&policy, host, port)).await.map_err(|_| timed_out())??;
            let _ = tcp.set_nodelay(true);
            Ok(TokioIo::new(tcp))
        })
    }
}

/// A client that connects within `connect` and keeps up to `idle` connections per host open for `idle_timeout`
/// (0 keeps none); `https://` services' certificates are checked against the build's trust when `verify` is set,
/// and only addresses its upstream address policy admits are dialled.
pub fn client(
    connect: Duration,
    idle: usize,
    idle_timeout: Duration,
    ctx: &BuildCtx<'_>,
    verify: bool,
) -> Result<Outbound, String> {
    let connector = Dialer { policy: ctx.policy.clone(), limit: connect };
    let mut tls = client_config(&TlsSettings { verify, ..TlsSettings::default() }, ctx.trust)?;
    // The connector offers the protocols it enables itself (and refuses a configuration that names any).
    tls.alpn_protocols.clear();
    let connector =
        HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().wrap_connector(connector);
    let mut builder = Client::builder(TokioExecutor::new());
    builder.timer(TokioTimer::new()).pool_timer(TokioTimer::new());
    builder.pool_max_idle_per_host(idle).pool_idle_timeout(idle_timeout);
    Ok(builder.build(connector))
}
