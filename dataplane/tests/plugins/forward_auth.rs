//! forward-auth against a real authorisation service, and with that service down: failing closed by default,
//! open with allow_degradation.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

use super::{Stack, common, upstream_saw};

/// An authorisation service: `Authorization: Bearer good` is allowed (with `X-User-Id: 42` and the target it was
/// asked about in `X-Seen-Uri`), anything else refused with 401, a body and `WWW-Authenticate`.
async fn auth_service() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        // Connections live in the set, so aborting the service closes them too (pooled ones included).
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            connections.spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let good = req.headers().get("authorization").is_some_and(|v| v == "Bearer good");
                    let seen = req.headers().get("x-forwarded-uri").cloned();
                    let mut resp = hyper::Response::new(Full::new(Bytes::from_static(b"denied")));
                    if good {
                        *resp.body_mut() = Full::new(Bytes::new());
                        resp.headers_mut().insert("x-user-id", "42".parse().unwrap());
                        if let Some(seen) = seen {
                            resp.headers_mut().insert("x-seen-uri", seen);
                        }
                    } else {
                        *resp.status_mut() = http::StatusCode::UNAUTHORIZED;
                        resp.headers_mut().insert("www-authenticate", "Bearer realm=\"x\"".parse().unwrap());
                        resp.headers_mut().insert("x-internal", "not for clients".parse().unwrap());
                    }
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_allows_refuses_and_fails_closed_or_open() {
    let mut s = Stack::start().await;
    let (auth, service) = auth_service().await;
    let conf = |extra: serde_json::Value| {
        let mut c = json!({"uri": format!("http://{auth}/verify"), "request_headers": ["Authorization"],
            "upstream_headers": ["X-User-Id", "X-Seen-Uri"], "client_headers": ["WWW-Authenticate"], "timeout": 2000});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    s.route("closed", json!({"uri": "/closed/*", "plugins": {"forward-auth": conf(json!({}))}})).await;
    s.route("open", json!({"uri": "/open/*", "plugins": {"forward-auth": conf(json!({"allow_degradation": true}))}}))
        .await;
    s.route(
        "503",
        json!({"uri": "/unavailable/*", "plugins": {"forward-auth": conf(json!({"status_on_error": 503}))}}),
    )
    .await;

    let good = [("authorization", "Bearer good")];
    let seen = upstream_saw(&s.get_with("/closed/a?b=1", &good).await);
    assert_eq!(seen["headers"]["x-user-id"], "42", "the service's upstream_headers reach the node");
    assert_eq!(seen["headers"]["x-seen-uri"], "/closed/a?b=1", "the service is told the request's target");
    let refused = s.get_with("/closed/a", &[("authorization", "Bearer bad")]).await;
    assert_eq!((refused.status.as_u16(), refused.body.as_str()), (401, "denied"));
    assert_eq!(refused.headers.get("www-authenticate").unwrap(), "Bearer realm=\"x\"");
    assert!(refused.headers.get("x-internal").is_none(), "only client_headers reach the client");
    assert_eq!(s.get("/closed/a").await.status, 401);

    // The service goes down.
    service.abort();
    let _ = service.await;
    let addr = s.addr();
    let down = sluice_testkit::eventually(super::common::SETTLE, || async {
        sluice_testkit::get(addr, "x", "/closed/a").await.is_ok_and(|r| r.status == 403)
    })
    .await;
    assert!(down, "without allow_degradation a failed service refuses with status_on_error (403)");
    assert_eq!(s.get_with("/unavailable/a", &good).await.status, 503, "status_on_error as configured");
    let before = s.metric("sluice_forward_auth_bypassed_total").await.unwrap_or(0.0);
    let passed = s.get_with("/open/a", &good).await;
    assert_eq!(passed.status, 200, "with allow_degradation the request passes unchecked");
    assert!(upstream_saw(&passed)["headers"].get("x-user-id").is_none());
    assert_eq!(s.metric("sluice_forward_auth_bypassed_total").await, Some(before + 1.0), "bypasses are counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_asks_https_services_and_verifies_them() {
    let etcd = sluice_testkit::Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let echo = sluice_testkit::EchoServer::start("echo").await.unwrap();
    let service = sluice_testkit::TlsEchoServer::start("tls-auth", sluice_testkit::ClientAuth::None).await.unwrap();
    // This data plane trusts a CA that did not sign the service's certificate.
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), sluice_testkit::OTHER_CA_PEM).unwrap();
    let opts = sluice_dataplane::Options {
        upstream_ca_file: Some(ca.path().to_path_buf()),
        ..common::loopback(&etcd.endpoint(), false)
    };
    let dp = sluice_dataplane::start(opts).await.unwrap();
    let route = |path: &str, verify: bool| {
        json!({"uri": path, "upstream": {"nodes": {echo.addr().to_string(): 1}}, "plugins": {"forward-auth":
            {"uri": format!("https://localhost:{}/verify", service.addr().port()), "ssl_verify": verify}}})
    };
    common::put(&mut client, "/sluice/routes/verified", route("/verified", true)).await;
    common::put(&mut client, "/sluice/routes/unverified", route("/unverified", false)).await;
    // ssl_verify false: the service is asked over TLS (signatures checked, not the chain) and allows.
    assert!(common::wait_served(dp.http_addr(), "x", "/unverified", Some("echo")).await, "allowed over https");
    assert!(service.handshakes() >= 1, "the question went over TLS");
    // ssl_verify true against an untrusted certificate: the service cannot be asked, so the request is refused.
    let refused = sluice_testkit::get(dp.http_addr(), "x", "/verified").await.unwrap();
    assert_eq!(refused.status, 403, "an unverifiable service fails closed");
}
