//! The admin listener: liveness, readiness and Prometheus metrics.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::Shared;

/// Answers `/healthz`, `/readyz` and `/metrics`.
pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let snapshot = shared.snapshot_revision.load(std::sync::atomic::Ordering::Acquire);
    let (status, content_type, body) = match req.uri().path() {
        "/healthz" if !shared.config_alive.load(std::sync::atomic::Ordering::Acquire) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            Bytes::from_static(b"not alive: the configuration thread has stopped\n"),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
        "/readyz" if shared.draining.load(std::sync::atomic::Ordering::Acquire) => {
            (StatusCode::SERVICE_UNAVAILABLE, "text/plain", Bytes::from_static(b"not ready: shutting down\n"))
        }
        "/readyz" if shared.is_ready() && snapshot != 0 => (
            StatusCode::OK,
            "text/plain",
            Bytes::from(format!("ready: serving the snapshot of etcd revision {snapshot}; etcd cannot be reached\n")),
        ),
        "/readyz" if shared.is_ready() => (StatusCode::OK, "text/plain", Bytes::from_static(b"ready\n")),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            Bytes::from_static(b"not ready: waiting for the first sync from etcd\n"),
        ),
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", Bytes::from(shared.metrics.render())),
        _ => (StatusCode::NOT_FOUND, "text/plain", Bytes::from_static(b"not found\n")),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
}
