//! TLS towards upstream nodes (`scheme: https`): an upstream's `tls` object in APISIX's shape, and the rustls
//! client configuration built from it once, off the request path.
//!
//! As in APISIX (and nginx's `proxy_ssl_verify off`), a node's certificate is verified only when `tls.verify` is
//! true; the handshake signature is checked either way. A client certificate (`client_cert` + `client_key`, PEM)
//! is presented to nodes that ask for one (upstream mutual TLS).

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde_json::Value;
use tokio_rustls::TlsConnector;

use crate::router::normalize_host;

/// An upstream's `tls` settings.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    /// Client certificate chain (PEM) for mutual TLS.
    pub client_cert: Option<String>,
    /// The client certificate's private key (PEM).
    pub client_key: Option<String>,
    /// Whether the node's certificate must chain to a trusted root and name the server (default false).
    pub verify: bool,
    /// Offer HTTP/2 alone by ALPN (`scheme: grpcs`), instead of HTTP/1.1.
    pub h2: bool,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("TlsSettings")
            .field("verify", &self.verify)
            .field("h2", &self.h2)
            .field("client_cert", &self.client_cert.is_some())
            .finish()
    }
}

impl TlsSettings {
    /// Reads the `tls` object of an upstream; the error names the offending field.
    pub fn parse(value: Option<&Value>) -> Result<TlsSettings, String> {
        let Some(value) = value else { return Ok(TlsSettings::default()) };
        let object = value.as_object().ok_or("tls must be an object")?;
        let mut settings = TlsSettings::default();
        for (key, v) in object {
            let text = || v.as_str().map(str::to_string).ok_or(format!("tls.{key} must be a string"));
            match key.as_str() {
                "client_cert" => settings.client_cert = Some(text()?),
                "client_key" => settings.client_key = Some(text()?),
                "verify" => settings.verify = v.as_bool().ok_or("tls.verify must be a boolean")?,
                "client_cert_id" => return Err("tls.client_cert_id (a reference to an ssl object)".into()),
                other => return Err(format!("tls: unknown field {other:?}")),
            }
        }
        if settings.client_cert.is_some() != settings.client_key.is_some() {
            return Err("tls.client_cert and tls.client_key must be set together".into());
        }
        Ok(settings)
    }
}

/// The certificate authorities nodes are verified against when an upstream sets `tls.verify`.
#[derive(Debug, Clone)]
pub struct Trust {
    roots: Arc<RootCertStore>,
}

impl Default for Trust {
    /// Trusts nothing: every verified handshake fails (tests that do not use TLS).
    fn default() -> Self {
        Trust { roots: Arc::new(RootCertStore::empty()) }
    }
}

impl Trust {
    /// The operating system's roots, plus the PEM certificates in `extra` (a private CA for in-cluster services).
    /// Unreadable system certificates are skipped; an unreadable `extra` file is an error.
    pub fn system(extra: Option<&Path>) -> Result<Trust, String> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, "loaded the system's certificate authorities for upstream TLS");
        if let Some(path) = extra {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let certs = certificates(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
            for cert in certs {
                roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        Ok(Trust { roots: Arc::new(roots) })
    }
}

/// The TLS server name for a `Host` value: its host part as the router reads it (no port, lowercase, no
/// trailing dot), when that is a valid DNS name or IP address. Borrowed unless the value has uppercase letters.
pub fn server_name(host: &http::HeaderValue) -> Option<Cow<'_, str>> {
    let name = match normalize_host(host.to_str().ok()?) {
        Cow::Borrowed(b) => Cow::Borrowed(b.trim_matches(['[', ']'])),
        Cow::Owned(o) => Cow::Owned(o.trim_matches(['[', ']']).to_string()),
    };
    ServerName::try_from(&*name).is_ok().then_some(name)
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(certs)
}

/// The rustls client configuration for `settings` (verification against `trust` or signatures only, a client
/// certificate, ALPN), shared by connections to nodes and by plugins calling services over `https://`.
pub fn client_config(settings: &TlsSettings, trust: &Trust) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if settings.verify {
        builder.with_root_certificates(trust.roots.clone())
    } else {
        let verifier = SignatureOnly { algorithms: provider.signature_verification_algorithms };
        builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier))
    };
    let mut config = match (&settings.client_cert, &settings.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert.as_bytes()).map_err(|e| format!("tls.client_cert: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| format!("tls.client_key: {e}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("tls.client_cert/client_key: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    // Say which protocol the proxy will speak, so a node that prefers another does not pick it.
    config.alpn_protocols = vec![if settings.h2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    Ok(config)
}

/// A rustls client configuration for one distinct `tls` setting, shared by every node pool that uses it (so TLS
/// sessions are resumed across them).
pub struct TlsClient {
    settings: TlsSettings,
    connector: TlsConnector,
}

impl TlsClient {
    /// Builds the configuration; fails when a certificate or key does not parse or does not match.
    pub fn new(settings: &TlsSettings, trust: &Trust) -> Result<TlsClient, String> {
        let config = client_config(settings, trust)?;
        Ok(TlsClient { settings: settings.clone(), connector: TlsConnector::from(Arc::new(config)) })
    }

    /// The settings this client was built from.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// The connector that runs handshakes with this configuration.
    pub fn connector(&self) -> &TlsConnector {
        &self.connector
    }
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").field("settings", &self.settings).finish()
    }
}

/// Accepts any certificate, but still checks that the server holds its key (`tls.verify: false`).
#[derive(Debug)]
struct SignatureOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SignatureOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_apisix_tls_settings() {
        assert_eq!(TlsSettings::parse(None).unwrap(), TlsSettings::default());
        let s = TlsSettings::parse(Some(&json!({"verify": true}))).unwrap();
        assert!(s.verify && s.client_cert.is_none());
        assert!(TlsSettings::parse(Some(&json!({"client_cert": "x"}))).is_err(), "cert without key");
        assert!(TlsSettings::parse(Some(&json!({"verify": "yes"}))).is_err());
        assert!(TlsSettings::parse(Some(&json!({"client_cert_id": "1"}))).is_err());
        assert!(TlsSettings::parse(Some(&json!({"sni": "x"}))).is_err());
        let bad =
            TlsSettings { client_cert: Some("nope".into()), client_key: Some("nope".into()), ..Default::default() };
        assert!(TlsClient::new(&bad, &Trust::default()).unwrap_err().contains("client_cert"));
        assert!(TlsClient::new(&TlsSettings::default(), &Trust::default()).is_ok());
    }

    #[test]
    fn server_names_come_from_the_host_part() {
        let name = |h: &'static str| server_name(&http::HeaderValue::from_static(h)).map(Cow::into_owned);
        assert_eq!(name("backend.test:8443").as_deref(), Some("backend.test"));
        assert_eq!(name("Backend.TEST").as_deref(), Some("backend.test"));
        assert_eq!(name("10.0.0.1:80").as_deref(), Some("10.0.0.1"));
        assert_eq!(name("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(name("a..b"), None, "no valid name: the caller falls back to the node's");
        assert!(matches!(server_name(&http::HeaderValue::from_static("x.test:1")), Some(Cow::Borrowed("x.test"))));
    }
}
