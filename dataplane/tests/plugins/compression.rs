//! gzip and brotli, after APISIX's t/plugin/gzip.t and brotli.t: negotiation, types, lengths, and bodies that
//! decode to what the node sent.

use std::io::Read;

use serde_json::json;

use super::Stack;

fn gunzip(raw: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(raw).read_to_string(&mut out).unwrap();
    out
}

fn unbrotli(raw: &[u8]) -> String {
    let mut out = String::new();
    brotli::Decompressor::new(raw, 4096).read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compresses_for_clients_that_accept_it() {
    let mut s = Stack::start().await;
    s.route("gz", json!({"uri": "/gz", "plugins": {"gzip": {"types": ["application/json"], "vary": true}}})).await;
    s.route("both", json!({"uri": "/both", "plugins": {"gzip": {"types": "*"}, "brotli": {"types": "*"}}})).await;
    s.route("html", json!({"uri": "/html", "plugins": {"gzip": {}}})).await;
    s.route("long", json!({"uri": "/long", "plugins": {"gzip": {"types": "*", "min_length": 100000}}})).await;
    s.route(
        "rewritten",
        json!({"uri": "/rewritten", "plugins": {"gzip": {"types": "*"},
        "response-rewrite": {"body": "a rewritten body, then compressed"}}}),
    )
    .await;

    let r = s.get_with("/gz", &[("accept-encoding", "gzip")]).await;
    assert_eq!(r.headers["content-encoding"], "gzip");
    assert_eq!(r.headers["vary"], "Accept-Encoding");
    assert!(r.headers.get("content-length").is_none());
    let body: serde_json::Value = serde_json::from_str(&gunzip(&r.raw)).unwrap();
    assert_eq!(body["path"], "/gz");
    let r = s.get("/gz").await;
    assert!(r.headers.get("content-encoding").is_none(), "no Accept-Encoding, no compression");
    assert_eq!(r.headers["vary"], "Accept-Encoding");
    assert!(s.get_with("/gz", &[("accept-encoding", "gzip;q=0")]).await.headers.get("content-encoding").is_none());

    let r = s.get_with("/both", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(r.headers["content-encoding"], "br", "brotli runs first");
    assert!(unbrotli(&r.raw).contains("\"path\":\"/both\""));
    let r = s.get_with("/both", &[("accept-encoding", "gzip")]).await;
    assert_eq!(r.headers["content-encoding"], "gzip");

    assert!(
        s.get_with("/html", &[("accept-encoding", "gzip")]).await.headers.get("content-encoding").is_none(),
        "text/html only"
    );
    assert!(
        s.get_with("/long", &[("accept-encoding", "gzip")]).await.headers.get("content-encoding").is_none(),
        "too short"
    );
    let r = s.get_with("/rewritten", &[("accept-encoding", "gzip")]).await;
    assert_eq!(gunzip(&r.raw), "a rewritten body, then compressed");
}
