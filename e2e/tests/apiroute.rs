//! End to end in manifest mode: ApiRoutes (paths, hosts, methods, expressions, weighted backends) shaped by an
//! Upstream route real traffic; PluginConfig and Consumer objects land in etcd in APISIX's shapes and their
//! plugins run (key-auth with credentials from a value and from a Secret); a rule whose plugins cannot be used
//! answers 503 in its place; statuses are reported in the controller's log.

use std::time::Duration;

use sluice_e2e::{Stack, StackConfig};
use sluice_testkit::{EchoServer, eventually, get, request};

const MANIFESTS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: sluice}
spec: {controller: sluice.dev/ingress-controller}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: WEB_PORT}]
endpoints: [{addresses: [127.0.0.2]}, {addresses: [127.0.0.3]}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, namespace: shop, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{port: API_PORT}]
endpoints: [{addresses: [127.0.0.1]}]
---
apiVersion: sluice.dev/v1alpha1
kind: Upstream
metadata: {name: web, namespace: shop}
spec:
  passHost: rewrite
  upstreamHost: web.internal
  timeout: {connect: 2s, read: 5s}
---
apiVersion: sluice.dev/v1alpha1
kind: ApiRoute
metadata: {name: store, namespace: shop}
spec:
  ingressClassName: sluice
  http:
    - name: split
      match: {paths: ["/split/*"]}
      backends:
        - {serviceName: web, servicePort: http, weight: 75}
        - {serviceName: api, servicePort: 80, weight: 25}
    - name: items
      match: {paths: ["/items/*"], methods: [GET], hosts: [shop.example.test]}
      backends: [{serviceName: api, servicePort: 80}]
    - name: feature-canary
      priority: 10
      match:
        paths: [/feature]
        exprs: [{subject: {scope: Header, name: X-Canary}, op: Equal, value: "yes"}]
      backends: [{serviceName: web, servicePort: 80}]
    - name: feature
      match: {paths: [/feature]}
      backends: [{serviceName: api, servicePort: 80}]
    - name: wildcard
      match: {paths: ["/*"], hosts: ["*.apps.example.test"]}
      backends: [{serviceName: api, servicePort: 80}]
---
apiVersion: sluice.dev/v1alpha1
kind: PluginConfig
metadata: {name: limits, namespace: shop}
spec:
  plugins: [{name: cors, config: {allow_origins: "https://shop.example", max_age: 100}}]
---
apiVersion: sluice.dev/v1alpha1
kind: Consumer
metadata: {name: alice, namespace: shop}
spec:
  authParameter: {keyAuth: {value: {key: alice-key}}}
---
apiVersion: v1
kind: Secret
metadata: {name: bob-key, namespace: shop}
stringData: {key: bob-secret-key}
---
apiVersion: sluice.dev/v1alpha1
kind: Consumer
metadata: {name: bob, namespace: shop}
spec:
  authParameter: {keyAuth: {secretRef: {name: bob-key}}}
---
apiVersion: sluice.dev/v1alpha1
kind: ApiRoute
metadata: {name: members, namespace: shop}
spec:
  ingressClassName: sluice
  http:
    - name: secured
      match: {paths: ["/secured/*"]}
      pluginConfigName: limits
      plugins: [{name: key-auth}]
      backends: [{serviceName: api, servicePort: 80}]
---
apiVersion: sluice.dev/v1alpha1
kind: ApiRoute
metadata: {name: broken, namespace: shop}
spec:
  ingressClassName: sluice
  http:
    - name: typo
      match: {paths: ["/broken"]}
      plugins: [{name: key-auth, config: {hedaer: apikey}}]
      backends: [{serviceName: api, servicePort: 80}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiroutes_route_traffic_shaped_by_an_upstream() {
    let web1 = EchoServer::bind("web-1", "127.0.0.2:0".parse().unwrap()).await.unwrap();
    let port = web1.addr().port();
    let web2 = EchoServer::bind("web-2", format!("127.0.0.3:{port}").parse().unwrap()).await.unwrap();
    let api = EchoServer::start("api").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let text = MANIFESTS.replace("WEB_PORT", &port.to_string()).replace("API_PORT", &api.addr().port().to_string());
    std::fs::write(manifests.join("all.yaml"), text).unwrap();
    let stack = Stack::start(StackConfig::on_free_ports(manifests, dir.path().join("logs"))).await.unwrap();
    let http = stack.http();
    let up = eventually(Duration::from_secs(10), || async move {
        get(http, "x", "/feature").await.is_ok_and(|r| r.backend().as_deref() == Some("api"))
    })
    .await;
    assert!(up, "routes never appeared; logs:\n{}", stack.logs());

    // Weighted backends: 75% to web (two endpoints), 25% to api.
    let (mut web, mut total) = (0, 0);
    for _ in 0..400 {
        let reply = get(http, "x", "/split/a").await.unwrap();
        let backend = reply.backend().unwrap_or_default();
        total += 1;
        if backend.starts_with("web-") {
            web += 1;
            // The Upstream resource rewrites the Host header the web Service sees.
            assert_eq!(reply.json()["headers"]["host"], "web.internal");
        }
    }
    let share = f64::from(web) / f64::from(total);
    assert!((0.70..=0.80).contains(&share), "web share {share} (expected 0.75)");
    assert!(web1.hits() > 0 && web2.hits() > 0, "both web endpoints used");

    // Methods and hosts.
    assert_eq!(get(http, "shop.example.test", "/items/1").await.unwrap().backend().as_deref(), Some("api"));
    assert_eq!(get(http, "other.example.test", "/items/1").await.unwrap().status.as_u16(), 404);
    let post = request(http, http::Method::POST, "shop.example.test", "/items/1", &[], bytes::Bytes::new()).await;
    assert_eq!(post.unwrap().status.as_u16(), 404, "only GET is routed");
    // Expressions with priority: the canary header picks web; without it api answers.
    let canary = request(http, http::Method::GET, "x", "/feature", &[("x-canary", "yes")], bytes::Bytes::new()).await;
    assert!(canary.unwrap().backend().unwrap_or_default().starts_with("web-"));
    assert_eq!(get(http, "x", "/feature").await.unwrap().backend().as_deref(), Some("api"));
    // One-label wildcard host.
    assert_eq!(get(http, "a.apps.example.test", "/x").await.unwrap().backend().as_deref(), Some("api"));
    assert_eq!(get(http, "a.b.apps.example.test", "/x").await.unwrap().status.as_u16(), 404);

    // Plugins: key-auth with the Consumers' keys (one from a Secret), the PluginConfig's cors merged in.
    let with = |key: &'static str| {
        let headers: &'static [(&'static str, &'static str)] = match key {
            "" => &[("origin", "https://shop.example")],
            "alice-key" => &[("apikey", "alice-key")],
            _ => &[("apikey", "bob-secret-key")],
        };
        async move { request(http, http::Method::GET, "x", "/secured/a", headers, bytes::Bytes::new()).await.unwrap() }
    };
    let refused = with("").await;
    assert_eq!(refused.status.as_u16(), 401);
    assert_eq!(refused.body, r#"{"message":"Missing API key in request"}"#);
    assert_eq!(refused.headers["access-control-allow-origin"], "https://shop.example");
    let alice = with("alice-key").await;
    assert_eq!(alice.json()["headers"]["x-consumer-username"], "shop_alice");
    assert_eq!(with("bob-secret-key").await.json()["headers"]["x-consumer-username"], "shop_bob");
    // A rule whose plugins cannot be used answers 503; it is not left out for its requests to go elsewhere.
    let broken = get(http, "x", "/broken").await.unwrap();
    assert_eq!(broken.status.as_u16(), 503);
    assert!(broken.body.contains("ApiRoute shop/broken rule"), "{}", broken.body);

    // PluginConfig and Consumer in APISIX's shapes.
    let mut etcd = stack.etcd.client().await.unwrap();
    let value = |key: &'static str| {
        let mut etcd = etcd.clone();
        async move {
            let resp = etcd.get(key, None).await.unwrap();
            resp.kvs().first().map(|kv| serde_json::from_slice::<serde_json::Value>(kv.value()).unwrap())
        }
    };
    let consumer = value("/sluice/consumers/shop_alice").await.expect("consumer written");
    assert_eq!(consumer["username"], "shop_alice");
    assert_eq!(consumer["plugins"]["key-auth"]["key"], "alice-key");
    let pc = value("/sluice/plugin_configs/pc.shop.limits").await.expect("plugin config written");
    assert_eq!(pc["plugins"]["cors"]["max_age"], 100);
    let _ = etcd.status().await;

    // Statuses, as they would be written, in the controller's log.
    let log = stack.log("sluice-controller");
    for object in [
        "ApiRoute shop/store",
        "Upstream shop/web",
        "PluginConfig shop/limits",
        "Consumer shop/alice",
        "Consumer shop/bob",
    ] {
        let line = log.lines().find(|l| l.contains(object) && l.contains("status")).unwrap_or_default();
        assert!(line.contains(r#""type":"Accepted","status":"True""#), "{object} accepted:\n{log}");
        assert!(line.contains(r#""type":"Programmed","status":"True""#), "{object} programmed:\n{log}");
    }
    let line = log.lines().find(|l| l.contains("ApiRoute shop/broken") && l.contains("status")).unwrap_or_default();
    assert!(line.contains(r#""type":"Accepted","status":"False""#) && line.contains("InvalidSpec"), "{line}");
    assert!(line.contains("hedaer"), "the status names the field: {line}");
}
