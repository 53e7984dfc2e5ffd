//! The plugin map as a whole: decoding, `_meta`, errors that name the field, and serde round trips.

use serde_json::{Value, json};

use super::*;

fn decode(v: Value) -> Result<Plugins, InvalidPlugin> {
    decode_map(v)
}

fn field_error(v: Value) -> (String, FieldError) {
    match decode(v) {
        Err(InvalidPlugin::Field { plugin, error }) => (plugin, error),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn decodes_typed_configurations_with_apisix_defaults() {
    let p = decode(json!({"key-auth": {}, "prometheus": {"prefer_name": true}})).unwrap();
    assert_eq!(p.len(), 2);
    let Some(Plugin { conf: PluginConf::KeyAuth(k), meta }) = p.get("key-auth") else { panic!() };
    assert_eq!((k.header.as_str(), k.query.as_str(), k.realm.as_str()), ("apikey", "apikey", "key"));
    assert_eq!(*meta, Meta::default());
    assert_eq!(p.iter().map(Plugin::name).collect::<Vec<_>>(), ["key-auth", "prometheus"], "ordered by name");
}

#[test]
fn rejects_unknown_plugins_and_fields_naming_them() {
    assert_eq!(decode(json!({"nope": {}})), Err(InvalidPlugin::Unknown("nope".into())));
    assert_eq!(decode(json!({"key-auth": true})), Err(InvalidPlugin::NotAnObject("key-auth".into())));
    let (plugin, e) = field_error(json!({"key-auth": {"header": 5}}));
    assert_eq!((plugin.as_str(), e.field.as_str()), ("key-auth", "header"));
    let (_, e) = field_error(json!({"key-auth": {"heder": "x"}}));
    assert!(e.reason.contains("unknown field `heder`"), "{e}");
    let (_, e) = field_error(json!({"key-auth": {"realm": "a\"b"}}));
    assert_eq!(e.field, "realm");
    let (_, e) = field_error(json!({"proxy-rewrite": {"regex_uri": ["^/a/(.*)", "/$1", "("]}}));
    assert_eq!(e.field, "regex_uri");
    let (_, e) = field_error(json!({"proxy-rewrite": {"regex_uri": ["(", "/x"]}}));
    assert_eq!(e.field, "regex_uri[0]");
    let (_, e) = field_error(json!({"proxy-rewrite": {"headers": {"set": {"bad name": "v"}}}}));
    assert_eq!(e.field, "headers.set.bad name");
    let (_, e) = field_error(json!({"proxy-rewrite": {}}));
    assert_eq!(e.field, "");
    let text = decode(json!({"key-auth": {"header": 5}})).unwrap_err().to_string();
    assert!(text.starts_with("plugin \"key-auth\": field header: invalid type"), "{text}");
}

#[test]
fn reads_meta() {
    let p = decode(json!({"key-auth": {"_meta": {"disable": true, "priority": 7,
        "filter": [["arg_a", "==", "1"]]}}}))
    .unwrap();
    let meta = &p.get("key-auth").unwrap().meta;
    assert!(meta.disable);
    assert_eq!(meta.priority, Some(7));
    assert_eq!(meta.filter.as_ref().map(Vec::len), Some(1));
    let (_, e) = field_error(json!({"key-auth": {"_meta": {"disable": "yes"}}}));
    assert_eq!(e.field, "_meta.disable");
    let (_, e) = field_error(json!({"key-auth": {"_meta": {"pre_function": "x"}}}));
    assert!(e.reason.contains("unknown field"), "{e}");
}

#[test]
fn round_trips_through_json() {
    let original = json!({
        "key-auth": {"header": "k", "query": "apikey", "hide_credentials": true, "realm": "key",
            "_meta": {"priority": 1}},
        "proxy-rewrite": {"uri": "/x", "headers": {"set": {"a": "1", "b": ["2", "3"]}, "remove": ["c"]}},
        "prometheus": {"prefer_name": false}
    });
    let p = decode(original.clone()).unwrap();
    let back = serde_json::to_value(&p).unwrap();
    assert_eq!(decode(back.clone()).unwrap(), p);
    assert_eq!(back["key-auth"]["_meta"]["priority"], 1);
    assert_eq!(back["proxy-rewrite"]["headers"]["set"]["b"], json!(["2", "3"]));
    assert_eq!(Value::Object(p.to_json()), back);
}

#[test]
fn proxy_rewrite_accepts_the_legacy_header_map_and_numbers() {
    let p = decode(json!({"proxy-rewrite": {"headers": {"X-Api": "v", "X-N": 5}}})).unwrap();
    let Some(Plugin { conf: PluginConf::ProxyRewrite(r), .. }) = p.get("proxy-rewrite") else { panic!() };
    let h = r.headers.as_ref().unwrap();
    assert_eq!(h.set["X-N"].0, ["5"]);
    assert!(h.add.is_empty() && h.remove.is_empty());
}

#[test]
fn splits_consumer_credentials_from_plugins() {
    let c = ConsumerPlugins::from_json(
        json!({"key-auth": {"key": "k1"}, "proxy-rewrite": {"uri": "/c"}}).as_object().unwrap().clone(),
    )
    .unwrap();
    assert!(matches!(c.credential("key-auth"), Some(Credential::KeyAuth(k)) if k.key == "k1"));
    assert!(c.plugins.get("proxy-rewrite").is_some());
    let back = serde_json::to_value(&c).unwrap();
    assert_eq!(back, json!({"key-auth": {"key": "k1"}, "proxy-rewrite": {"uri": "/c"}}));
    let err = ConsumerPlugins::from_json(json!({"key-auth": {"key": ""}}).as_object().unwrap().clone());
    assert!(matches!(err, Err(InvalidPlugin::Field { .. })));
}

/// Every plugin's rules, one rejected configuration each (at least), with the field the error names; and a
/// minimal valid configuration of each.
#[test]
fn every_plugin_checks_its_configuration() {
    let valid = json!({
        "key-auth": {}, "basic-auth": {}, "jwt-auth": {}, "hmac-auth": {}, "cors": {},
        "consumer-restriction": {"whitelist": ["a"]}, "ip-restriction": {"blacklist": ["10.0.0.1"]},
        "ua-restriction": {"allowlist": ["^curl"]}, "referer-restriction": {"whitelist": ["*.x.com"]},
        "uri-blocker": {"block_rules": ["^/admin"]}, "real-ip": {"source": "http_x_real_ip"},
        "proxy-rewrite": {"uri": "/x"}, "response-rewrite": {"status_code": 200}, "redirect": {"uri": "/to"},
        "request-id": {}, "fault-injection": {"abort": {"http_status": 403}}, "mocking": {"response_example": "{}"},
        "gzip": {}, "brotli": {}, "prometheus": {}, "http-logger": {"uri": "http://127.0.0.1/logs"},
        "opentelemetry": {}, "client-control": {}, "limit-count": {"count": 1, "time_window": 1},
        "limit-req": {"rate": 1, "burst": 0, "key": "remote_addr"},
        "limit-conn": {"conn": 1, "burst": 0, "default_conn_delay": 0.1, "key": "remote_addr"},
        "api-breaker": {"break_response_code": 502}, "forward-auth": {"uri": "http://auth:9000/verify"},
        "proxy-mirror": {"host": "http://127.0.0.1:9797"}, "traffic-split": {"rules": []}
    });
    let all = decode(valid).unwrap();
    assert_eq!(all.len(), PluginConf::NAMES.len(), "every plugin has a minimal valid configuration here");

    let cases: Vec<(Value, &str)> = vec![
        (json!({"key-auth": {"realm": ""}}), "realm"),
        (json!({"client-control": {"max_body_size": -1}}), "max_body_size"),
        (json!({"key-auth": {"anonymous_consumer": ""}}), "anonymous_consumer"),
        (json!({"basic-auth": {"realm": "a\\b"}}), "realm"),
        (json!({"jwt-auth": {"key_claim_name": ""}}), "key_claim_name"),
        (json!({"jwt-auth": {"claims_to_verify": ["exp", "exp"]}}), "claims_to_verify"),
        (json!({"jwt-auth": {"claims_to_verify": ["iat"]}}), "claims_to_verify[0]"),
        (json!({"hmac-auth": {"allowed_algorithms": ["md5"]}}), "allowed_algorithms"),
        (json!({"hmac-auth": {"clock_skew": 0}}), "clock_skew"),
        (json!({"hmac-auth": {"signed_headers": [""]}}), "signed_headers[0]"),
        (json!({"cors": {"allow_origins": "example.com"}}), "allow_origins"),
        (json!({"cors": {"allow_credential": true}}), "allow_origins"),
        (json!({"cors": {"allow_origins_by_regex": ["("]}}), "allow_origins_by_regex[0]"),
        (json!({"cors": {"max_age": "600"}}), "max_age"),
        (json!({"consumer-restriction": {}}), ""),
        (json!({"consumer-restriction": {"type": "user"}}), "type"),
        (json!({"consumer-restriction": {"blacklist": []}}), "blacklist"),
        (
            json!({"consumer-restriction": {"allowed_by_methods": [{"user": "a", "methods": ["FETCH"]}]}}),
            "allowed_by_methods[0].methods",
        ),
        (json!({"consumer-restriction": {"whitelist": ["a"], "rejected_code": 99}}), "rejected_code"),
        (json!({"limit-count": {"count": 0, "time_window": 1}}), "count"),
        (json!({"limit-count": {"count": 1, "time_window": 0}}), "time_window"),
        (json!({"limit-count": {"count": 1, "time_window": 1, "key": ""}}), "key"),
        (json!({"limit-count": {"count": 1, "time_window": 1, "key": "$remote_addr"}}), "key"),
        (json!({"limit-count": {"count": 1, "time_window": 1, "rejected_code": 600}}), "rejected_code"),
        (json!({"limit-count": {"count": 1, "time_window": 1, "policy": "redis"}}), "redis_host"),
        (json!({"limit-count": {"count": 1, "time_window": 1, "policy": "redis-cluster"}}), "redis_cluster_nodes"),
        (
            json!({"limit-count": {"count": 1, "time_window": 1, "policy": "redis", "redis_host": "rr", "redis_port": 0}}),
            "redis_port",
        ),
        (
            json!({"limit-count": {"count": 1, "time_window": 1, "policy": "redis", "redis_host": "rr", "scope": "cluster"}}),
            "scope",
        ),
        (json!({"limit-count": {"count": 1, "time_window": 1, "redis_hots": "rr"}}), "redis_hots"),
        (json!({"limit-req": {"rate": 1, "burst": 0, "key": "remote_addr", "policy": "redis"}}), "policy"),
        (json!({"limit-count": {"count": 1, "time_window": 1, "scope": "galaxy"}}), "scope"),
        (json!({"limit-req": {"rate": 0, "burst": 0, "key": "remote_addr"}}), "rate"),
        (json!({"limit-req": {"rate": 1, "burst": -1, "key": "remote_addr"}}), "burst"),
        (json!({"limit-req": {"rate": 1, "burst": 0, "key": "k", "key_type": "constant"}}), "key_type"),
        (json!({"limit-req": {"rate": 1, "burst": 0}}), ""),
        (json!({"limit-conn": {"conn": 1, "burst": 0, "default_conn_delay": 0, "key": "k"}}), "default_conn_delay"),
        (json!({"limit-conn": {"conn": 0, "burst": 0, "default_conn_delay": 1, "key": "k"}}), "conn"),
        (json!({"api-breaker": {}}), ""),
        (json!({"api-breaker": {"break_response_code": 700}}), "break_response_code"),
        (json!({"api-breaker": {"break_response_code": 502, "max_breaker_sec": 2}}), "max_breaker_sec"),
        (
            json!({"api-breaker": {"break_response_code": 502, "unhealthy": {"http_statuses": [404]}}}),
            "unhealthy.http_statuses[0]",
        ),
        (
            json!({"api-breaker": {"break_response_code": 502, "healthy": {"http_statuses": [200, 200]}}}),
            "healthy.http_statuses[1]",
        ),
        (json!({"api-breaker": {"break_response_code": 502, "unhealthy": {"failures": 0}}}), "unhealthy.failures"),
        (
            json!({"api-breaker": {"break_response_code": 502, "failure_rate": {"threshold": 0}}}),
            "failure_rate.threshold",
        ),
        (
            json!({"api-breaker": {"break_response_code": 502, "break_response_headers": [{"key": "a b", "value": "v"}]}}),
            "break_response_headers[0].key",
        ),
        (json!({"forward-auth": {"uri": "ftp://auth/verify"}}), "uri"),
        (json!({"forward-auth": {"uri": "auth/verify"}}), "uri"),
        (json!({"forward-auth": {"uri": "http://a", "request_headers": ["bad name"]}}), "request_headers[0]"),
        (json!({"forward-auth": {"uri": "http://a", "timeout": 0}}), "timeout"),
        (json!({"forward-auth": {"uri": "http://a", "request_method": "PUT"}}), "request_method"),
        (json!({"proxy-mirror": {"host": "127.0.0.1:9797"}}), "host"),
        (json!({"proxy-mirror": {"host": "http://a/b"}}), "host"),
        (json!({"proxy-mirror": {"host": "http://a", "path": "b"}}), "path"),
        (json!({"proxy-mirror": {"host": "http://a", "sample_ratio": 0}}), "sample_ratio"),
        (json!({"proxy-mirror": {"host": "http://a", "queue_size": 0}}), "queue_size"),
        (json!({"ip-restriction": {}}), ""),
        (json!({"ip-restriction": {"whitelist": ["a"], "blacklist": ["b"]}}), ""),
        (json!({"ip-restriction": {"whitelist": ["10.255.256.0/24"]}}), "whitelist[0]"),
        (json!({"ip-restriction": {"whitelist": ["10.0.0.0/33"]}}), "whitelist[0]"),
        (json!({"ip-restriction": {"whitelist": ["::1/129"]}}), "whitelist[0]"),
        (json!({"ip-restriction": {"blacklist": []}}), "blacklist"),
        (json!({"ip-restriction": {"blacklist": ["1.1.1.1"], "response_code": 401}}), "response_code"),
        (json!({"ua-restriction": {"denylist": ["("]}}), "denylist[0]"),
        (json!({"ua-restriction": {"denylist": ["a"], "message": ""}}), "message"),
        (json!({"referer-restriction": {"whitelist": ["x.*"]}}), "whitelist[0]"),
        (json!({"uri-blocker": {"block_rules": [".+("]}}), "block_rules[0]"),
        (json!({"uri-blocker": {"block_rules": ["a", "a"]}}), "block_rules[1]"),
        (json!({"uri-blocker": {"block_rules": ["a"], "rejected_msg": ""}}), "rejected_msg"),
        // A missing field is reported on the object, by name.
        (json!({"real-ip": {}}), ""),
        (json!({"real-ip": {"source": "x", "trusted_addresses": ["127.0.0.1/33"]}}), "trusted_addresses[0]"),
        (json!({"proxy-rewrite": {"uri": "no-slash"}}), "uri"),
        (json!({"proxy-rewrite": {"method": "FETCH"}}), "method"),
        (json!({"proxy-rewrite": {"host": "a b"}}), "host"),
        (json!({"proxy-rewrite": {"regex_uri": ["^/a"]}}), "regex_uri"),
        (json!({"proxy-rewrite": {"headers": {"add": {"x": []}}}}), "headers.add.x"),
        (json!({"response-rewrite": {"status_code": 599}}), "status_code"),
        (json!({"response-rewrite": {"body": "x", "filters": [{"regex": "a", "replace": "b"}]}}), "filters"),
        (json!({"response-rewrite": {"body": "1", "body_base64": true}}), "body"),
        (json!({"response-rewrite": {"filters": [{"regex": "(", "replace": ""}]}}), "filters[0].regex"),
        (
            json!({"response-rewrite": {"filters": [{"regex": "a", "replace": "", "options": "h"}]}}),
            "filters[0].options",
        ),
        (json!({"response-rewrite": {"headers": {"add": ["no-colon"]}}}), "headers.add[0]"),
        (json!({"response-rewrite": {"filters": []}}), "filters"),
        (json!({"redirect": {}}), ""),
        (json!({"redirect": {"uri": "/a", "http_to_https": true}}), ""),
        (json!({"redirect": {"http_to_https": true, "append_query_string": true}}), "append_query_string"),
        (json!({"redirect": {"regex_uri": ["^/a"]}}), "regex_uri"),
        (json!({"redirect": {"uri": "/"}}), "uri"),
        (json!({"request-id": {"algorithm": "snowflake"}}), "algorithm"),
        (json!({"request-id": {"range_id": {"length": 5}}}), "range_id.length"),
        (json!({"request-id": {"range_id": {"length": 1025}}}), "range_id.length"),
        (json!({"fault-injection": {}}), ""),
        (json!({"fault-injection": {"abort": {"http_status": 100}}}), "abort.http_status"),
        (json!({"fault-injection": {"abort": {"http_status": 200, "percentage": 101}}}), "abort.percentage"),
        (json!({"fault-injection": {"delay": {"duration": "test"}}}), "delay.duration"),
        (json!({"fault-injection": {"delay": {"duration": -1.0}}}), "delay.duration"),
        (json!({"mocking": {}}), ""),
        (json!({"mocking": {"response_schema": {"a": deep(20)}}}), "response_schema"),
        (json!({"mocking": {"response_example": "x", "content_type": "application/yaml"}}), "content_type"),
        (json!({"gzip": {"types": []}}), "types"),
        (json!({"gzip": {"min_length": 0}}), "min_length"),
        (json!({"gzip": {"comp_level": 10}}), "comp_level"),
        (json!({"gzip": {"http_version": 2}}), "http_version"),
        (json!({"brotli": {"mode": 4}}), "mode"),
        (json!({"brotli": {"comp_level": 12}}), "comp_level"),
        (json!({"brotli": {"lgwin": 9}}), "lgwin"),
        (json!({"brotli": {"lgblock": 15}}), "lgblock"),
        (json!({"prometheus": {"prefer_name": "yes"}}), "prefer_name"),
        (json!({"http-logger": {}}), ""),
        (json!({"http-logger": {"uri": "ftp://x"}}), "uri"),
        (json!({"http-logger": {"uri": "http://x", "batch_max_size": 0}}), "batch_max_size"),
        (json!({"http-logger": {"uri": "http://x", "concat_method": "csv"}}), "concat_method"),
        (json!({"opentelemetry": {"sampler": {"name": "sometimes"}}}), "sampler.name"),
        (
            json!({"opentelemetry": {"sampler": {"name": "trace_id_ratio", "options": {"fraction": 2}}}}),
            "sampler.options.fraction",
        ),
        (json!({"opentelemetry": {"additional_attributes": ["x"]}}), "additional_attributes"),
    ];
    for (config, field) in cases {
        let (plugin, error) = field_error(config.clone());
        assert_eq!(error.field, field, "{config}: {plugin}: {error}");
    }

    let credentials: Vec<(Value, &str)> = vec![
        (json!({"key-auth": {"key": ""}}), "key"),
        (json!({"basic-auth": {"username": "u"}}), ""),
        (json!({"jwt-auth": {"key": "k"}}), "secret"),
        (json!({"jwt-auth": {"key": "k", "algorithm": "RS256", "secret": "s"}}), "public_key"),
        (json!({"jwt-auth": {"key": "k", "secret": "%%%", "base64_secret": true}}), "secret"),
        (json!({"jwt-auth": {"key": "k", "secret": "s", "algorithm": "none"}}), "algorithm"),
        (json!({"hmac-auth": {"key_id": "", "secret_key": "s"}}), "key_id"),
    ];
    for (config, field) in credentials {
        match ConsumerPlugins::from_json(config.as_object().unwrap().clone()) {
            Err(InvalidPlugin::Field { error, .. }) => assert_eq!(error.field, field, "{config}: {error}"),
            other => panic!("{config}: expected a field error, got {other:?}"),
        }
    }
}

/// An array schema nested `levels` deep.
fn deep(levels: usize) -> Value {
    (0..levels).fold(json!({"type": "string"}), |inner, _| json!({"type": "array", "items": inner}))
}
