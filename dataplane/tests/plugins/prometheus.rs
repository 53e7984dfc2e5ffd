//! prometheus, after APISIX's t/plugin/prometheus.t: per route, consumer and node series, counted once.

use serde_json::json;

use super::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_requests_latency_and_bytes_per_route_and_consumer() {
    let mut s = Stack::start().await;
    s.consumer("jack", json!({"key-auth": {"key": "k1"}})).await;
    s.route("r", json!({"uri": "/p", "name": "pay", "plugins": {"prometheus": {}, "key-auth": {}}})).await;
    s.route("named", json!({"uri": "/n", "name": "named-route", "plugins": {"prometheus": {"prefer_name": true}}}))
        .await;
    // A global copy stands down on routes that have their own, so nothing is counted twice.
    s.put("global_rules/g", json!({"plugins": {"prometheus": {}}})).await;
    s.route("plain", json!({"uri": "/plain"})).await;
    for _ in 0..2 {
        assert_eq!(s.get_with("/p", &[("apikey", "k1")]).await.status, 200);
    }
    assert_eq!(s.get("/p").await.status, 401);
    assert_eq!(s.get("/n").await.status, 200);
    assert_eq!(s.get("/plain").await.status, 200);

    // The exposition lists labels by name.
    let sample = |name: &str, labels: &[(&str, &str)]| {
        let mut labels = labels.to_vec();
        labels.sort();
        let text: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        format!("{name}{{{}}}", text.join(","))
    };
    let status = |code, route, uri, consumer, node| {
        let labels = [("code", code), ("route", route), ("matched_uri", uri), ("matched_host", ""), ("service", "")];
        let mut labels = labels.to_vec();
        labels.extend([("consumer", consumer), ("node", node)]);
        sample("sluice_http_status", &labels)
    };
    let node = "127.0.0.1";
    assert_eq!(s.metric(&status("200", "r", "/p", "jack", node)).await, Some(2.0));
    assert_eq!(s.metric(&status("401", "r", "/p", "", "")).await, Some(1.0), "denied before any node");
    assert_eq!(s.metric(&status("200", "named-route", "/n", "", node)).await, Some(1.0), "prefer_name");
    assert_eq!(
        s.metric(&status("200", "plain", "/plain", "", node)).await,
        Some(1.0),
        "the global rule counts routes without their own"
    );
    let per_route =
        |kind, consumer| [("type", kind), ("route", "r"), ("service", ""), ("consumer", consumer), ("node", node)];
    let count = sample("sluice_http_latency_count", &per_route("upstream", "jack"));
    assert_eq!(s.metric(&count).await, Some(2.0));
    let egress = sample("sluice_bandwidth", &per_route("egress", "jack"));
    assert!(s.metric(&egress).await.unwrap() > 200.0);
}
