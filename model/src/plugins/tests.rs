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
