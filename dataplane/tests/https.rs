//! The HTTPS listener with real TLS clients, certificates from ssl objects in a real etcd: the right certificate
//! per SNI (exact, wildcard, default), RSA and ECDSA for one name, rotation while a connection stays open, mutual
//! TLS accepted and refused, HTTP/2 and HTTP/1.1 on one port, resumption, and the redirect to HTTPS.

mod common;

use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::SignatureScheme;
use serde_json::{Value, json};
use sluice_dataplane::{Dataplane, Options};
use sluice_testkit::{EchoServer, Etcd, TlsClient, TlsClientOptions, TlsConnection, eventually, get};

/// An RSA key (rcgen with ring cannot generate one), shared with the jwt-auth tests.
const RSA_KEY: &str = include_str!("plugins/keys/rsa-private.pem");

/// A certificate authority issuing certificates for the tests.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate chain and its key, in PEM, and the leaf's DER to compare with what a client was served.
struct Issued {
    cert: String,
    key: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A certificate for `names` (ECDSA P-256, or RSA with `rsa`).
    fn issue(&self, names: &[&str], rsa: bool) -> Issued {
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let key = if rsa { KeyPair::from_pem(RSA_KEY).unwrap() } else { KeyPair::generate().unwrap() };
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued { cert: cert.pem(), key: key.serialize_pem(), der: cert.der().to_vec() }
    }
}

/// A data plane with an HTTPS listener (and `default_ssl`), one echo backend behind the catch-all route `/*`.
struct Stack {
    _etcd: Etcd,
    client: etcd_client::Client,
    dp: Dataplane,
    _echo: EchoServer,
}

impl Stack {
    async fn start(default_ssl: Option<&str>) -> Stack {
        let etcd = Etcd::start().await.unwrap();
        let mut client = etcd.client().await.unwrap();
        let echo = EchoServer::start("echo").await.unwrap();
        let route = json!({"uri": "/*", "upstream": {"nodes": {echo.addr().to_string(): 1}}});
        put(&mut client, "/sluice/routes/all", route).await;
        let opts = Options { default_ssl: default_ssl.map(str::to_string), ..loopback(&etcd.endpoint(), true) };
        let dp = sluice_dataplane::start(opts).await.unwrap();
        assert!(eventually(SETTLE, || async { dp.is_ready() }).await, "data plane never became ready");
        Stack { _etcd: etcd, client, dp, _echo: echo }
    }

    fn https(&self) -> std::net::SocketAddr {
        self.dp.https_addr().unwrap()
    }

    async fn put_ssl(&mut self, id: &str, value: Value) {
        put(&mut self.client, &format!("/sluice/ssls/{id}"), value).await;
    }

    /// Waits until a handshake for `sni` presents `der`, and returns that connection.
    async fn served(&self, client: &TlsClient, sni: Option<&str>, der: &[u8]) -> TlsConnection {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            match client.connect(self.https(), sni).await {
                Ok(conn) if conn.leaf == der => return conn,
                _ => {
                    assert!(tokio::time::Instant::now() < deadline, "{sni:?} was never served the expected certificate")
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn ssl(issued: &Issued, snis: &[&str]) -> Value {
    json!({"cert": issued.cert, "key": issued.key, "snis": snis})
}

fn any_certificate() -> TlsClient {
    TlsClient::new(TlsClientOptions::default()).unwrap()
}

#[tokio::test]
async fn each_name_gets_its_certificate() {
    let ca = Ca::new("sluice test CA");
    let mut stack = Stack::start(Some("default")).await;
    let (exact, wild, fallback) =
        (ca.issue(&["a.test"], false), ca.issue(&["*.wild.test"], false), ca.issue(&["default.test"], false));
    stack.put_ssl("exact", ssl(&exact, &["a.test"])).await;
    stack.put_ssl("wild", ssl(&wild, &["*.wild.test"])).await;
    stack.put_ssl("default", ssl(&fallback, &["default.test"])).await;

    // A client that verifies the chain against the CA, as browsers do.
    let verifying = TlsClient::new(TlsClientOptions { roots: vec![ca.pem.clone()], ..Default::default() }).unwrap();
    let mut conn = stack.served(&verifying, Some("a.test"), &exact.der).await;
    let reply = conn.get("a.test", "/hello").await.unwrap();
    assert_eq!(reply.status, 200);
    let headers = &reply.json()["headers"];
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert_eq!(headers["x-forwarded-port"], stack.https().port().to_string());
    stack.served(&verifying, Some("x.wild.test"), &wild.der).await;
    // Case and a trailing dot do not matter; a wildcard covers one label only, the rest gets the default.
    let any = any_certificate();
    stack.served(&any, Some("A.TEST"), &exact.der).await;
    stack.served(&any, Some("a.b.wild.test"), &fallback.der).await;
    stack.served(&any, Some("unknown.test"), &fallback.der).await;
    stack.served(&any, None, &fallback.der).await;
}

#[tokio::test]
async fn without_a_default_unknown_names_are_refused_and_broken_ssls_fail_closed() {
    let ca = Ca::new("sluice test CA");
    let mut stack = Stack::start(None).await;
    let wild = ca.issue(&["*.wild.test"], false);
    stack.put_ssl("wild", ssl(&wild, &["*.wild.test"])).await;
    let any = any_certificate();
    stack.served(&any, Some("ok.wild.test"), &wild.der).await;
    assert!(any.connect(stack.https(), Some("unknown.test")).await.is_err());
    assert!(any.connect(stack.https(), None).await.is_err());
    // An ssl object for one name under the wildcard, whose key does not match: that name is refused rather than
    // served the wildcard's certificate.
    let other = ca.issue(&["strict.wild.test"], false);
    let broken = json!({"cert": other.cert, "key": wild.key, "snis": ["strict.wild.test"]});
    stack.put_ssl("strict", broken).await;
    let addr = stack.https();
    let refused = eventually(SETTLE, || async { any.connect(addr, Some("strict.wild.test")).await.is_err() }).await;
    assert!(refused, "a rejected ssl's name must be refused");
    stack.served(&any, Some("ok.wild.test"), &wild.der).await;
    // Fixed: served.
    stack.put_ssl("strict", ssl(&other, &["strict.wild.test"])).await;
    stack.served(&any, Some("strict.wild.test"), &other.der).await;
}

#[tokio::test]
async fn rsa_and_ecdsa_for_one_name() {
    let ca = Ca::new("sluice test CA");
    let mut stack = Stack::start(None).await;
    let (rsa, ecdsa) = (ca.issue(&["both.test"], true), ca.issue(&["both.test"], false));
    let both =
        json!({"cert": rsa.cert, "key": rsa.key, "certs": [ecdsa.cert], "keys": [ecdsa.key], "snis": ["both.test"]});
    stack.put_ssl("both", both).await;
    let rsa_only = TlsClient::new(TlsClientOptions {
        schemes: vec![SignatureScheme::RSA_PSS_SHA256, SignatureScheme::RSA_PKCS1_SHA256],
        ..Default::default()
    })
    .unwrap();
    let ecdsa_only = TlsClient::new(TlsClientOptions {
        schemes: vec![SignatureScheme::ECDSA_NISTP256_SHA256],
        ..Default::default()
    })
    .unwrap();
    stack.served(&rsa_only, Some("both.test"), &rsa.der).await;
    stack.served(&ecdsa_only, Some("both.test"), &ecdsa.der).await;
}

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_connections_while_open_ones_keep_working() {
    let ca = Ca::new("sluice test CA");
    let mut stack = Stack::start(None).await;
    let (old, new) = (ca.issue(&["rotate.test"], false), ca.issue(&["rotate.test"], false));
    stack.put_ssl("r", ssl(&old, &["rotate.test"])).await;
    let any = any_certificate();
    let mut open = stack.served(&any, Some("rotate.test"), &old.der).await;
    assert_eq!(open.get("rotate.test", "/before").await.unwrap().status, 200);
    // A renewal, as cert-manager writes it into the Secret and the controller into the ssl.
    stack.put_ssl("r", ssl(&new, &["rotate.test"])).await;
    stack.served(&any, Some("rotate.test"), &new.der).await;
    assert_eq!(open.get("rotate.test", "/after").await.unwrap().status, 200);
}

/// Whether a client gets an answer: with TLS 1.3 a refused client certificate shows on the first read.
async fn answered(client: &TlsClient, addr: std::net::SocketAddr, sni: &str) -> bool {
    match client.connect(addr, Some(sni)).await {
        Ok(mut conn) => conn.get(sni, "/").await.is_ok_and(|r| r.status == 200),
        Err(_) => false,
    }
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let (ca, clients, strangers) = (Ca::new("server CA"), Ca::new("client CA"), Ca::new("unknown CA"));
    let mut stack = Stack::start(None).await;
    let server = ca.issue(&["mtls.test", "open.test"], false);
    let mut strict = ssl(&server, &["mtls.test"]);
    strict["client"] = json!({"ca": clients.pem});
    stack.put_ssl("strict", strict).await;
    stack.put_ssl("open", ssl(&server, &["open.test"])).await;
    let anonymous = any_certificate();
    let addr = stack.https();
    assert!(eventually(SETTLE, || async { answered(&anonymous, addr, "open.test").await }).await);

    let with = |issued: Issued| {
        TlsClient::new(TlsClientOptions { identity: Some((issued.cert, issued.key)), ..Default::default() }).unwrap()
    };
    let member = with(clients.issue(&["client.test"], false));
    assert!(eventually(SETTLE, || async { answered(&member, addr, "mtls.test").await }).await);
    assert!(!answered(&anonymous, addr, "mtls.test").await, "no client certificate must be refused");
    let stranger = with(strangers.issue(&["client.test"], false));
    assert!(!answered(&stranger, addr, "mtls.test").await, "a certificate from another CA must be refused");
    // The other name on the same listener asks for no certificate.
    assert!(answered(&anonymous, addr, "open.test").await);
}

#[tokio::test]
async fn http2_and_http1_share_the_port_and_sessions_resume() {
    let ca = Ca::new("sluice test CA");
    let mut stack = Stack::start(None).await;
    let issued = ca.issue(&["h2.test"], false);
    stack.put_ssl("h2", ssl(&issued, &["h2.test"])).await;
    let h2 =
        TlsClient::new(TlsClientOptions { alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()], ..Default::default() })
            .unwrap();
    let mut conn = stack.served(&h2, Some("h2.test"), &issued.der).await;
    assert_eq!(conn.alpn.as_deref(), Some(&b"h2"[..]));
    let reply = conn.get("h2.test", "/over-h2").await.unwrap();
    assert_eq!((reply.status.as_u16(), reply.json()["path"].as_str()), (200, Some("/over-h2")));
    let h1 = any_certificate();
    let mut conn = h1.connect(stack.https(), Some("h2.test")).await.unwrap();
    assert_eq!(conn.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(conn.get("h2.test", "/over-h1").await.unwrap().status, 200);

    // A second connection of the same client resumes its session, with TLS 1.3 tickets and with TLS 1.2.
    let again = h1.connect(stack.https(), Some("h2.test")).await.unwrap();
    assert!(again.resumed, "TLS 1.3 session not resumed");
    let tls12 = TlsClient::new(TlsClientOptions { tls12_only: true, ..Default::default() }).unwrap();
    let mut first = tls12.connect(stack.https(), Some("h2.test")).await.unwrap();
    assert_eq!(first.version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(first.get("h2.test", "/").await.unwrap().status, 200);
    assert!(tls12.connect(stack.https(), Some("h2.test")).await.unwrap().resumed, "TLS 1.2 session not resumed");
    // The metric tells resumed handshakes from full ones.
    let counted = |result: &'static str| {
        let admin = stack.dp.admin_addr();
        async move { metric(admin, &format!("sluice_tls_handshakes_total{{result=\"{result}\"}}")).await.unwrap_or(0.0) }
    };
    assert!(counted("resumed").await >= 2.0, "two resumed handshakes counted");
    assert!(counted("ok").await >= 2.0, "full handshakes counted apart");
}

#[tokio::test]
async fn redirect_to_https_names_the_https_port() {
    let ca = Ca::new("sluice test CA");
    let mut stack = Stack::start(None).await;
    let issued = ca.issue(&["secure.test"], false);
    stack.put_ssl("s", ssl(&issued, &["secure.test"])).await;
    let route = json!({"uri": "/secure/*", "host": "secure.test", "plugins": {"redirect": {"http_to_https": true}},
        "upstream": {"nodes": {"127.0.0.1:1": 1}}});
    put(&mut stack.client, "/sluice/routes/secure", route).await;
    let (http, port) = (stack.dp.http_addr(), stack.https().port());
    let redirected =
        eventually(SETTLE, || async { get(http, "secure.test", "/secure/x?y=1").await.is_ok_and(|r| r.status == 301) })
            .await;
    assert!(redirected, "plain HTTP never redirected");
    let reply = get(http, "secure.test:80", "/secure/x?y=1").await.unwrap();
    assert_eq!(reply.headers["location"], format!("https://secure.test:{port}/secure/x?y=1"));
    // A client's claim to have come over HTTPS changes nothing.
    let spoofed = sluice_testkit::request(
        http,
        http::Method::GET,
        "secure.test",
        "/secure/x",
        &[("x-forwarded-proto", "https")],
        bytes::Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(spoofed.status, 301);
    // Over HTTPS the route proceeds (to its node, which is down: 502).
    let mut conn = stack.served(&any_certificate(), Some("secure.test"), &issued.der).await;
    assert_eq!(conn.get("secure.test", "/secure/x").await.unwrap().status, 502);
}
