//! The admin listener: liveness, readiness and Prometheus metrics; with `--admin-token-file`, everything but the
//! probes needs the token (`Authorization: Bearer`), read from the file on each request so that a rotated Secret
//! takes effect without a restart.

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
    let path = req.uri().path();
    let token = match &shared.admin_token_file {
        None => None,
        Some(file) => Some(tokio::fs::read_to_string(file).await.unwrap_or_else(|e| {
            tracing::warn!(file = %file.display(), error = %e, "admin token file unreadable; refusing admin requests");
            String::new()
        })),
    };
    let authorization = req.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    if !sluice_model::admin::admits(path, authorization, token.as_deref()) {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"unauthorized: a bearer token is required\n")));
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Ok(resp);
    }
    let (status, content_type, body) = match path {
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
