//! cors, after APISIX's t/plugin/cors.t, cors2.t and cors4.t.

use http::Method;
use serde_json::json;

use super::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_headers_and_answers_preflights_like_apisix() {
    let mut s = Stack::start().await;
    s.route("any", json!({"uri": "/any", "plugins": {"cors": {}}})).await;
    s.route(
        "list",
        json!({"uri": "/list", "plugins": {"cors": {
        "allow_origins": "http://sub.domain.com,http://sub2.domain.com", "allow_methods": "GET,POST",
        "allow_headers": "headr1,headr2", "expose_headers": "ex-headr1,ex-headr2", "max_age": 50,
        "allow_credential": true}}}),
    )
    .await;
    s.route(
        "echo",
        json!({"uri": "/echo", "plugins": {"cors": {"allow_origins": "**", "allow_methods": "**",
        "allow_headers": "**", "expose_headers": "*"}}}),
    )
    .await;
    s.route("auth", json!({"uri": "/auth", "plugins": {"cors": {"allow_origins": "**"}, "key-auth": {}}})).await;
    s.route("re", json!({"uri": "/re", "plugins": {"cors": {"allow_origins_by_regex": [".*\\.test\\.com$"]}}})).await;

    // cors#7: the defaults.
    let r = s.get("/any").await;
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert_eq!(r.headers["access-control-allow-methods"], "*");
    assert_eq!(r.headers["access-control-allow-headers"], "*");
    assert_eq!(r.headers["access-control-max-age"], "5");
    assert!(r.headers.get("vary").is_none() && r.headers.get("access-control-allow-credentials").is_none());

    // cors#9 and #10: a listed origin is echoed; another gets no CORS headers, but the request is proxied.
    let r = s.get_with("/list", &[("origin", "http://sub2.domain.com")]).await;
    assert_eq!(r.headers["access-control-allow-origin"], "http://sub2.domain.com");
    assert_eq!(r.headers["access-control-allow-credentials"], "true");
    assert_eq!(r.headers["access-control-max-age"], "50");
    assert_eq!(r.headers["access-control-expose-headers"], "ex-headr1,ex-headr2");
    assert_eq!(r.headers["vary"], "Origin");
    let r = s.get_with("/list", &[("origin", "http://sub3.domain.com")]).await;
    assert_eq!(r.status, 200);
    assert!(r.headers.get("access-control-allow-origin").is_none());

    // cors#12-#14: `**` echoes the origin and the requested headers; OPTIONS is answered at once.
    let r =
        s.get_with("/echo", &[("origin", "https://sub.domain.com"), ("access-control-request-headers", "a,b")]).await;
    assert_eq!(r.headers["access-control-allow-origin"], "https://sub.domain.com");
    assert_eq!(r.headers["access-control-allow-methods"], "GET,POST,PUT,DELETE,PATCH,HEAD,OPTIONS,CONNECT,TRACE");
    assert_eq!(r.headers["access-control-allow-headers"], "a,b");
    let r = s.get("/echo").await;
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert!(r.headers.get("access-control-allow-headers").is_none());
    let hits = s.echo.hits();
    let r = s.send(Method::OPTIONS, "/echo", &[("origin", "https://a.com")]).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, ""));
    assert_eq!(r.headers["access-control-allow-origin"], "https://a.com");
    assert_eq!(s.echo.hits(), hits, "a preflight never reaches the node");

    // cors#16: the headers are on the plugins' own answers too; a preflight needs no credentials.
    let r = s.get_with("/auth", &[("origin", "https://a.com")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.headers["access-control-allow-origin"], "https://a.com");
    assert_eq!(s.send(Method::OPTIONS, "/auth", &[]).await.status, 200);

    // Regexes replace the list.
    assert_eq!(
        s.get_with("/re", &[("origin", "http://a.test.com")]).await.headers["access-control-allow-origin"],
        "http://a.test.com"
    );
    assert!(
        s.get_with("/re", &[("origin", "http://a.test2.com")])
            .await
            .headers
            .get("access-control-allow-origin")
            .is_none()
    );
}
