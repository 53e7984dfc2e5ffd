//! A real TLS client for tests of the data plane's HTTPS listener: one connection per [`TlsConnection`], HTTP/1.1
//! or HTTP/2 as ALPN decides, reporting the certificate the server presented, the protocol version and whether the
//! session was resumed.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientSessionMemoryCache, Resumption};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, ProtocolVersion, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use crate::Reply;

/// How a [`TlsConnection`] connects.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

/// Settings of a [`TlsClient`].
#[derive(Debug, Clone, Default)]
pub struct TlsClientOptions {
    /// CA certificates (PEM) the server's chain must lead to; empty: any certificate is accepted (the handshake
    /// signature is still checked), for tests that look at which certificate was served.
    pub roots: Vec<String>,
    /// A client certificate chain and key (PEM) to present.
    pub identity: Option<(String, String)>,
    /// ALPN protocols to offer; empty: `http/1.1` only.
    pub alpn: Vec<Vec<u8>>,
    /// Only TLS 1.2 (to test 1.2 resumption and cipher choice).
    pub tls12_only: bool,
    /// The signature schemes offered, when `roots` is empty; empty: all the provider knows. Offering only RSA
    /// schemes makes a server with RSA and ECDSA certificates present the RSA one.
    pub schemes: Vec<SignatureScheme>,
}

impl TlsClient {
    /// A client with `options` and its own session cache (so a second connection can resume).
    pub fn new(options: TlsClientOptions) -> anyhow::Result<TlsClient> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] =
            if options.tls12_only { &[&rustls::version::TLS12] } else { rustls::DEFAULT_VERSIONS };
        let builder = ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions)?;
        let builder = if options.roots.is_empty() {
            let verifier = AnyCertificate { provider, schemes: options.schemes.clone() };
            builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier))
        } else {
            let mut roots = RootCertStore::empty();
            for pem in &options.roots {
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    roots.add(cert?)?;
                }
            }
            builder.with_root_certificates(roots)
        };
        let mut config = match &options.identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => {
                let chain = CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<Vec<_>, _>>()?;
                builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes())?)?
            }
        };
        config.alpn_protocols = if options.alpn.is_empty() { vec![b"http/1.1".to_vec()] } else { options.alpn };
        config.resumption = Resumption::store(Arc::new(ClientSessionMemoryCache::new(64)));
        Ok(TlsClient { config: Arc::new(config) })
    }

    /// Connects to `addr`, asking for `sni` (`None`: no SNI is sent).
    pub async fn connect(&self, addr: SocketAddr, sni: Option<&str>) -> anyhow::Result<TlsConnection> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        self.handshake(tcp, sni).await
    }

    /// Runs the TLS handshake on an open connection (after bytes the test wrote first, such as a PROXY header).
    pub async fn handshake(&self, tcp: tokio::net::TcpStream, sni: Option<&str>) -> anyhow::Result<TlsConnection> {
        let addr = tcp.peer_addr()?;
        // An IP address as the server name makes rustls send no SNI.
        let name = match sni {
            Some(name) => ServerName::try_from(name.to_string())?,
            None => ServerName::IpAddress(addr.ip().into()),
        };
        let tls = TlsConnector::from(self.config.clone()).connect(name, tcp).await?;
        let (_, session) = tls.get_ref();
        let leaf = session.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let version = session.protocol_version();
        let resumed = session.handshake_kind() == Some(HandshakeKind::Resumed);
        let io = TokioIo::new(tls);
        let sender = if alpn.as_deref() == Some(b"h2") {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        Ok(TlsConnection { sender, leaf, alpn, version, resumed })
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One open TLS connection.
pub struct TlsConnection {
    sender: Sender,
    /// The DER of the certificate the server presented first (its leaf).
    pub leaf: Vec<u8>,
    /// The ALPN protocol agreed on.
    pub alpn: Option<Vec<u8>>,
    /// The TLS version agreed on.
    pub version: Option<ProtocolVersion>,
    /// Whether the handshake resumed an earlier session.
    pub resumed: bool,
}

impl TlsConnection {
    /// Sends `GET path` with `Host: host` on this connection (HTTP/2 sends the host as `:authority`).
    pub async fn get(&mut self, host: &str, path: &str) -> anyhow::Result<Reply> {
        self.send(Method::GET, host, path, &[]).await
    }

    /// Sends a request on this connection.
    pub async fn send(
        &mut self,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        let resp = match &mut self.sender {
            Sender::H1(sender) => {
                sender.ready().await?;
                let mut req = http::Request::builder().method(method).uri(path).header("host", host);
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                sender.send_request(req.body(Full::new(Bytes::new()))?).await?
            }
            Sender::H2(sender) => {
                sender.ready().await?;
                let mut req = http::Request::builder().method(method).uri(format!("https://{host}{path}"));
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                sender.send_request(req.body(Full::new(Bytes::new()))?).await?
            }
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&body).into_owned();
        Ok(Reply { status: parts.status, headers: parts.headers, body: text, raw: body })
    }
}

/// Accepts any server certificate but still checks that the server holds its key.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        let all = self.provider.signature_verification_algorithms.supported_schemes();
        if self.schemes.is_empty() { all } else { all.into_iter().filter(|s| self.schemes.contains(s)).collect() }
    }
}
