use serde_json::json;

use super::*;

fn pair() -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["a.example.test".to_string()]).unwrap();
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}

fn decode(value: Value) -> Result<Ssl, InvalidSsl> {
    let ssl: Ssl = serde_json::from_value(value).unwrap();
    ssl.validate().map(|()| ssl)
}

#[test]
fn reads_apisix_shapes() {
    let (cert, key) = pair();
    let ssl = decode(json!({"id": 1, "cert": cert, "key": key, "snis": ["a.example.test", "*.example.test"]})).unwrap();
    assert_eq!(ssl.server_names(), ["a.example.test", "*.example.test"]);
    assert_eq!(ssl.pairs().count(), 1);
    assert_eq!(ssl.versions(), [TlsVersion::Tls12, TlsVersion::Tls13]);
    // The older single `sni`, several pairs, versions and client verification.
    let ssl = decode(json!({"cert": cert, "key": key, "certs": [cert], "keys": [key], "sni": "a.example.test",
        "ssl_protocols": ["TLSv1.3", "TLSv1.1"], "client": {"ca": cert}}))
    .unwrap();
    assert_eq!(ssl.pairs().count(), 2);
    assert_eq!(ssl.versions(), [TlsVersion::Tls13]);
    assert_eq!(ssl.client.as_ref().map(|c| c.depth), Some(1));
    // A client certificate needs no names.
    decode(json!({"type": "client", "cert": cert, "key": key})).unwrap();
    // The key is never printed.
    assert!(!format!("{ssl:?}").contains("PRIVATE KEY"));
}

#[test]
fn rejects_each_rule() {
    let (cert, key) = pair();
    let base = json!({"cert": cert, "key": key, "snis": ["a.example.test"]});
    let with = |field: &str, value: Value| {
        let mut v = base.clone();
        v[field] = value;
        decode(v).unwrap_err()
    };
    let without = |field: &str| {
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove(field);
        decode(v).unwrap_err()
    };
    assert_eq!(without("key"), InvalidSsl::Pairs);
    assert_eq!(without("cert"), InvalidSsl::Pairs);
    assert_eq!(with("certs", json!([cert])), InvalidSsl::Pairs);
    assert_eq!(with("cert", json!("not a certificate")), InvalidSsl::Certificate { field: "cert".into() });
    assert_eq!(with("cert", json!(key)), InvalidSsl::Certificate { field: "cert".into() });
    assert_eq!(with("key", json!(cert)), InvalidSsl::Key { field: "key".into() });
    // Another certificate's key: caught here, so the controller refuses it before any data plane does.
    let (_, other_key) = pair();
    assert!(matches!(with("key", json!(other_key)), InvalidSsl::KeyMismatch { field, .. } if field == "key"));
    assert_eq!(with("key", json!("x".repeat(MAX_PEM + 1))), InvalidSsl::TooLong { field: "key".into() });
    let mut two = base.clone();
    two["certs"] = json!([cert]);
    two["keys"] = json!(["junk"]);
    assert_eq!(decode(two).unwrap_err(), InvalidSsl::Key { field: "keys[0]".into() });
    assert_eq!(without("snis"), InvalidSsl::Snis);
    assert_eq!(with("snis", json!([])), InvalidSsl::Snis);
    assert_eq!(with("sni", json!("a.example.test")), InvalidSsl::Snis);
    for bad in ["", "*.", "a..b", "a b", "*a.test", "a.*.test", "é.test"] {
        assert_eq!(with("snis", json!([bad])), InvalidSsl::Sni(bad.into()), "{bad}");
    }
    assert_eq!(with("client", json!({"ca": "junk"})), InvalidSsl::ClientCa);
    assert_eq!(with("client", json!({"ca": cert, "depth": 10})), InvalidSsl::Depth(10));
    assert_eq!(
        with("client", json!({"ca": cert, "skip_mtls_uri_regex": ["/health"]})),
        InvalidSsl::Unsupported("client.skip_mtls_uri_regex")
    );
    assert_eq!(with("ssl_protocols", json!(["TLSv1.1"])), InvalidSsl::Protocols(vec!["TLSv1.1".into()]));
    assert_eq!(with("ssl_protocols", json!(["SSLv3"])), InvalidSsl::Protocols(vec!["SSLv3".into()]));
    assert_eq!(with("status", json!(2)), InvalidSsl::Status(2));
    assert_eq!(with("id", json!("a/b")), InvalidSsl::Id(InvalidId { id: "a/b".into() }));
    assert_eq!(with("ocsp_stapling", json!({})), InvalidSsl::UnknownField("ocsp_stapling".into()));
}
