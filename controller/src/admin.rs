//! The admin listener: `/healthz`, `/readyz` (after the first completed sync) and `/metrics`; with
//! `--admin-token-file`, everything but the probes needs the token (`Authorization: Bearer`), read from the file on
//! each request so that a rotated Secret takes effect without a restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::metrics::Metrics;

/// Serves the admin endpoints on `addr` until the process ends; with `token_file`, only the probes are answered
/// without the token it holds.
pub async fn serve(
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    metrics: Metrics,
    token_file: Option<PathBuf>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "admin listener up");
    loop {
        let (stream, _) = listener.accept().await?;
        let (ready, metrics, token_file) = (ready.clone(), metrics.clone(), token_file.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (ready, metrics, token_file) = (ready.clone(), metrics.clone(), token_file.clone());
                async move {
                    let token = match &token_file {
                        None => None,
                        Some(file) => Some(tokio::fs::read_to_string(file).await.unwrap_or_else(|e| {
                            tracing::warn!(file = %file.display(), error = %e,
                                "admin token file unreadable; refusing admin requests");
                            String::new()
                        })),
                    };
                    let authorization = req.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes());
                    let resp = if sluice_model::admin::admits(req.uri().path(), authorization, token.as_deref()) {
                        answer(req.uri().path(), ready.load(Ordering::Acquire), &metrics)
                    } else {
                        unauthorized()
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn answer(path: &str, ready: bool, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/healthz" => (StatusCode::OK, "ok".to_string()),
        "/readyz" if ready => (StatusCode::OK, "ready".to_string()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "not synced yet".to_string()),
        "/metrics" => (StatusCode::OK, metrics.render()),
        _ => (StatusCode::NOT_FOUND, "not found".to_string()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}

fn unauthorized() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(b"unauthorized: a bearer token is required")));
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
    resp.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static("Bearer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn metrics_need_the_token_when_one_is_configured() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t0ken\n").unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], sluice_testkit::free_port()));
        let ready = Arc::new(AtomicBool::new(true));
        tokio::spawn(serve(addr, ready, Metrics::new(), Some(token)));
        let up = sluice_testkit::eventually(std::time::Duration::from_secs(5), || async {
            sluice_testkit::get(addr, "localhost", "/healthz").await.is_ok_and(|r| r.status == 200)
        });
        assert!(up.await, "the probes answer without a token");
        assert_eq!(sluice_testkit::get(addr, "localhost", "/readyz").await.unwrap().status, 200);
        assert_eq!(sluice_testkit::get(addr, "localhost", "/metrics").await.unwrap().status, 401);
        let bearer = |t: &'static str| {
            let headers = [("authorization", t)];
            async move {
                sluice_testkit::request(addr, hyper::Method::GET, "localhost", "/metrics", &headers, Bytes::new())
                    .await
                    .unwrap()
                    .status
            }
        };
        assert_eq!(bearer("Bearer wrong").await, 401);
        assert_eq!(bearer("Bearer t0ken").await, 200);
    }
}
