//! The HTTP client plugins call other services with (forward-auth's authorisation service, proxy-mirror's
//! mirror): hyper-util's pooled HTTP/1.1 client, one per plugin instance, over plain TCP or TLS (hyper-rustls,
//! with the data plane's rustls settings). The data plane's own node pool is built for upstream objects and their
//! settings, not for a plugin's.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::upstream::tls::{TlsSettings, Trust, client_config};

/// A plugin's client to a service.
pub type Outbound = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client that connects within `connect` and keeps up to `idle` connections per host open for `idle_timeout`
/// (0 keeps none); `https://` services' certificates are checked against `trust` when `verify` is set.
pub fn client(
    connect: Duration,
    idle: usize,
    idle_timeout: Duration,
    trust: &Trust,
    verify: bool,
) -> Result<Outbound, String> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect));
    connector.enforce_http(false);
    let mut tls = client_config(&TlsSettings { verify, ..TlsSettings::default() }, trust)?;
    // The connector offers the protocols it enables itself (and refuses a configuration that names any).
    tls.alpn_protocols.clear();
    let connector =
        HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().wrap_connector(connector);
    let mut builder = Client::builder(TokioExecutor::new());
    builder.timer(TokioTimer::new()).pool_timer(TokioTimer::new());
    builder.pool_max_idle_per_host(idle).pool_idle_timeout(idle_timeout);
    Ok(builder.build(connector))
}
