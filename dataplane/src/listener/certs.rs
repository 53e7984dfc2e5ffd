//! Server certificates: each ssl object becomes one rustls server configuration (its certificate chains, the
//! client certificate authorities it requires, the TLS versions it offers), built once on the configuration thread,
//! and a [`Certificates`] table picks one by the name the client asks for (SNI).
//!
//! Lookup: an exact name first, then a wildcard for the first label (`*.example.com` serves `a.example.com` but
//! neither `example.com` nor `a.b.example.com`, as a client checks the certificate), then the default certificate.
//! A name claimed by an ssl object that was rejected with no good version refuses the handshake rather than fall
//! back to a wildcard or the default, which might not require the client certificate that object asked for.
//!
//! Every configuration shares one session cache and one ticket key rotation, so resumption works across
//! configuration updates (a certificate rotation keeps resuming sessions of the same name).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme, SupportedProtocolVersion,
};
use sluice_model::Ssl;
use sluice_model::ssl::{TlsVersion, certificates};
use tracing::warn;

/// Sessions remembered for resumption by session id (TLS 1.2 clients without tickets), shared by every name.
const SESSION_CACHE: usize = 16 * 1024;

/// ALPN protocols offered: HTTP/2 first, as browsers and gRPC clients expect.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// What is served for one name.
#[derive(Debug, Clone)]
pub enum Served {
    /// A usable certificate configuration.
    Config {
        /// The rustls configuration.
        config: Arc<ServerConfig>,
        /// Whether it requires a client certificate (downstream mutual TLS).
        client_auth: bool,
    },
    /// The object claiming this name was rejected with no good version: handshakes are refused.
    Refused,
}

/// The server certificates of one configuration snapshot, by server name.
#[derive(Debug, Default, Clone)]
pub struct Certificates {
    exact: HashMap<Box<str>, Served>,
    /// Keyed by the name after `*.`.
    wildcard: HashMap<Box<str>, Served>,
    default: Option<Served>,
    /// Whether any entry requires a client certificate or refuses: only then must a request's host be checked
    /// against its connection's handshake.
    strict: bool,
}

impl Certificates {
    /// An empty table; `default` is served when no name matches (or the client sent none).
    pub fn new(default: Option<Served>) -> Certificates {
        let strict = default.as_ref().is_some_and(Served::is_strict);
        Certificates { exact: HashMap::new(), wildcard: HashMap::new(), default, strict }
    }

    /// Whether a request for `host` may be answered on a TLS connection whose handshake asked for `sni` (and
    /// verified a client certificate or not). A client can ask for one name in the handshake and another in
    /// `Host`: when the host's own entry requires a client certificate, the request is admitted only on a
    /// connection verified by that same entry; when the host's entry refuses handshakes, never.
    pub fn admits(&self, host: &str, sni: Option<&str>, client_verified: bool) -> bool {
        if !self.strict {
            return true;
        }
        match self.select(Some(host)) {
            None | Some(Served::Config { client_auth: false, .. }) => true,
            Some(Served::Refused) => false,
            Some(Served::Config { config: for_host, client_auth: true }) => {
                client_verified
                    && matches!(self.select(sni), Some(Served::Config { config, .. }) if Arc::ptr_eq(config, for_host))
            }
        }
    }

    /// Serves `served` for `name` (`*.` for a wildcard). The first claim of a name wins, except that a refusal
    /// always wins: the stricter of two claims is kept.
    pub fn insert(&mut self, name: &str, served: Served) {
        let name = normalize(name);
        self.strict |= served.is_strict();
        let (map, key) = match name.strip_prefix("*.") {
            Some(rest) => (&mut self.wildcard, rest.into()),
            None => (&mut self.exact, name.as_str().into()),
        };
        match map.entry(key) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(served);
            }
            std::collections::hash_map::Entry::Occupied(mut slot) => {
                if matches!(served, Served::Refused) {
                    slot.insert(served);
                }
            }
        }
    }

    /// What to serve a client asking for `sni`: `None` when nothing is configured for it.
    pub fn select(&self, sni: Option<&str>) -> Option<&Served> {
        let Some(sni) = sni else { return self.default.as_ref() };
        let name = normalize(sni);
        if let Some(found) = self.exact.get(name.as_str()) {
            return Some(found);
        }
        let parent = name.split_once('.').map(|(_, rest)| rest);
        parent.and_then(|p| self.wildcard.get(p)).or(self.default.as_ref())
    }

    /// How many names are configured.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// Whether no name is configured (a default may still be).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Served {
    /// Whether this entry narrows who may be served: it requires a client certificate or refuses.
    fn is_strict(&self) -> bool {
        matches!(self, Served::Refused | Served::Config { client_auth: true, .. })
    }
}

/// A name compared as DNS does: lowercase, without a trailing dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Why an ssl object's certificates cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A key cannot be loaded, or does not belong to its certificate.
    #[error("{field}: {reason}")]
    Key {
        /// `key` or `keys[i]`.
        field: String,
        /// What the TLS library said.
        reason: String,
    },
    /// The client certificate authorities cannot be used.
    #[error("client.ca: {0}")]
    ClientCa(String),
    /// The TLS settings cannot be combined.
    #[error("{0}")]
    Config(String),
}

/// Builds the server configuration of a (validated) server ssl object.
pub fn build(ssl: &Ssl) -> Result<Arc<ServerConfig>, CertError> {
    let provider = provider();
    let mut pairs = Vec::new();
    for (i, (cert, key)) in ssl.pairs().enumerate() {
        let field = if i == 0 { "key".to_string() } else { format!("keys[{}]", i - 1) };
        let key_error = |reason: String| CertError::Key { field: field.clone(), reason };
        let chain = certificates(cert).ok_or_else(|| key_error("no certificate".into()))?;
        let der = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| key_error(e.to_string()))?;
        let certified = CertifiedKey::from_der(chain, der, &provider).map_err(|e| key_error(e.to_string()))?;
        pairs.push(Arc::new(certified));
    }
    let versions: Vec<&'static SupportedProtocolVersion> = ssl
        .versions()
        .into_iter()
        .map(|v| match v {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| CertError::Config(e.to_string()))?;
    let builder = match &ssl.client {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(&client.ca).unwrap_or_default() {
                roots.add(ca).map_err(|e| CertError::ClientCa(e.to_string()))?;
            }
            let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| CertError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(DepthLimited { inner, depth: client.depth as usize }))
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(Pairs(pairs)));
    finish(&mut config);
    Ok(Arc::new(config))
}

/// The configuration that refuses every handshake (it has no certificate), so the client gets a TLS alert rather
/// than a closed connection; `None` only if the TLS library cannot build one.
pub fn refusing() -> Option<Arc<ServerConfig>> {
    static REFUSING: OnceLock<Option<Arc<ServerConfig>>> = OnceLock::new();
    REFUSING
        .get_or_init(|| {
            let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().ok()?;
            let mut config = builder.with_no_client_auth().with_cert_resolver(Arc::new(Pairs(Vec::new())));
            finish(&mut config);
            Some(Arc::new(config))
        })
        .clone()
}

/// Settings every server configuration shares: ALPN and resumption.
fn finish(config: &mut ServerConfig) {
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    config.session_storage = resumption().cache.clone();
    if let Some(tickets) = &resumption().tickets {
        config.ticketer = tickets.clone();
    }
}

/// The process's session cache (TLS 1.2 session ids) and ticket keys, shared by every configuration.
struct Resumption {
    cache: Arc<ServerSessionMemoryCache>,
    tickets: Option<Arc<dyn rustls::server::ProducesTickets>>,
}

fn resumption() -> &'static Resumption {
    static RESUMPTION: OnceLock<Resumption> = OnceLock::new();
    RESUMPTION.get_or_init(|| {
        let tickets = match rustls::crypto::ring::Ticketer::new() {
            Ok(t) => Some(t),
            Err(reason) => {
                warn!(%reason, "cannot create TLS session ticket keys; resumption uses session ids only");
                None
            }
        };
        Resumption { cache: ServerSessionMemoryCache::new(SESSION_CACHE), tickets }
    })
}

/// ring with rustls's default cipher suites: for TLS 1.2 only ECDHE with AES-GCM or ChaCha20-Poly1305, which is
/// Mozilla's intermediate profile without the finite-field DHE suites.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// An ssl object's certificate chains: the first whose key can sign with a scheme the client offers (an ECDSA
/// chain for a client that accepts it, else RSA).
#[derive(Debug)]
struct Pairs(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for Pairs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        self.0.iter().find(|pair| pair.key.choose_scheme(schemes).is_some()).or(self.0.first()).cloned()
    }
}

/// Client certificate verification with APISIX's `client.depth`: at most that many intermediates in the chain.
#[derive(Debug)]
struct DepthLimited {
    inner: Arc<dyn ClientCertVerifier>,
    depth: usize,
}

impl ClientCertVerifier for DepthLimited {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if intermediates.len() > self.depth {
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure));
        }
        self.inner.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Served {
        Served::Config { config: refusing().unwrap(), client_auth: false }
    }

    fn kind(found: Option<&Served>) -> &'static str {
        match found {
            None => "none",
            Some(Served::Refused) => "refused",
            Some(Served::Config { .. }) => "config",
        }
    }

    #[test]
    fn hosts_are_admitted_on_connections_their_entry_verified() {
        let open = config();
        let mtls = Served::Config { config: refusing().unwrap(), client_auth: true };
        let other_mtls = Served::Config { config: Arc::new((*refusing().unwrap()).clone()), client_auth: true };
        let mut table = Certificates::new(Some(open.clone()));
        // Nothing strict configured: every request is admitted without a lookup.
        assert!(table.admits("secure.test", Some("open.test"), false));
        table.insert("open.test", open);
        table.insert("secure.test", mtls);
        table.insert("*.secure.test", other_mtls);
        table.insert("broken.test", Served::Refused);
        assert!(table.admits("open.test", Some("open.test"), false));
        assert!(table.admits("unknown.test", None, false));
        assert!(table.admits("secure.test", Some("Secure.Test"), true));
        // Verified by another entry, not verified, or asked for in Host only: misdirected.
        assert!(!table.admits("secure.test", Some("a.secure.test"), true));
        assert!(!table.admits("secure.test", Some("secure.test"), false));
        assert!(!table.admits("secure.test", Some("open.test"), false));
        assert!(!table.admits("secure.test", None, false));
        assert!(!table.admits("broken.test", Some("open.test"), false));
    }

    #[test]
    fn exact_before_wildcard_before_default() {
        let mut table = Certificates::new(None);
        table.insert("*.Example.test", config());
        table.insert("broken.example.test", Served::Refused);
        assert_eq!(kind(table.select(Some("a.example.test"))), "config");
        assert_eq!(kind(table.select(Some("A.EXAMPLE.TEST."))), "config");
        // A broken object's name never falls back to the wildcard.
        assert_eq!(kind(table.select(Some("broken.example.test"))), "refused");
        // One label only, as certificate validation does.
        assert_eq!(kind(table.select(Some("a.b.example.test"))), "none");
        assert_eq!(kind(table.select(Some("example.test"))), "none");
        assert_eq!(kind(table.select(Some("test"))), "none");
        assert_eq!(kind(table.select(None)), "none");
        let mut with_default = Certificates::new(Some(config()));
        with_default.insert("x.test", Served::Refused);
        assert_eq!(kind(with_default.select(None)), "config");
        assert_eq!(kind(with_default.select(Some("other.test"))), "config");
        assert_eq!(kind(with_default.select(Some("x.test"))), "refused");
        // A refusal wins over an earlier claim of the same name; a later good claim does not replace either.
        with_default.insert("x.test", config());
        assert_eq!(kind(with_default.select(Some("x.test"))), "refused");
        assert_eq!(with_default.len(), 1);
    }
}
