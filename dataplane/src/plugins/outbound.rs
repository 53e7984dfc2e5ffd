//! The HTTP client plugins call other services with (forward-auth's authorisation service, proxy-mirror's
//! mirror): hyper-util's pooled HTTP/1.1 client, one per plugin instance. The data plane's own node pool is built
//! for upstream objects and their settings, not for a plugin's.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// A plugin's client to a service.
pub type Outbound = Client<HttpConnector, Full<Bytes>>;

/// A client that connects within `connect` and keeps up to `idle` connections per host open for `idle_timeout`
/// (0 keeps none).
pub fn client(connect: Duration, idle: usize, idle_timeout: Duration) -> Outbound {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect));
    let mut builder = Client::builder(TokioExecutor::new());
    builder.timer(TokioTimer::new()).pool_timer(TokioTimer::new());
    builder.pool_max_idle_per_host(idle).pool_idle_timeout(idle_timeout);
    builder.build(connector)
}
