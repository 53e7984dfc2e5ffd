//! A TLS echo backend (the echo server behind rustls), and the test certificates it uses: one CA that signed the
//! server's certificate (`backend.test`, `localhost`, `127.0.0.1`) and a client certificate, plus an unrelated CA.
//! The certificates are fixtures valid for a century, so tests never depend on the clock or on a generator.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The CA that signed the server and client certificates (PEM).
pub const CA_PEM: &str = include_str!("../certs/ca.crt");
/// A CA that signed nothing here: trusting only it must fail verification.
pub const OTHER_CA_PEM: &str = include_str!("../certs/other-ca.crt");
/// A client certificate signed by [`CA_PEM`] (PEM).
pub const CLIENT_CERT_PEM: &str = include_str!("../certs/client.crt");
/// The key of [`CLIENT_CERT_PEM`] (PEM, PKCS#8).
pub const CLIENT_KEY_PEM: &str = include_str!("../certs/client.key");
/// The server certificate (`backend.test`, `localhost`, `127.0.0.1`), signed by [`CA_PEM`] (PEM).
pub const SERVER_CERT_PEM: &str = include_str!("../certs/server.crt");
/// The server certificate's key (PEM).
pub const SERVER_KEY_PEM: &str = include_str!("../certs/server.key");

/// Whether the TLS echo server asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is requested.
    None,
    /// A client certificate signed by [`CA_PEM`] is required; handshakes without one fail.
    Required,
}

/// A running TLS echo server. Each reply describes the request as [`crate::EchoServer`] does, with two extra
/// request headers the server adds: `x-tls-sni` (the name the client sent, or `-`) and `x-tls-client-cert`
/// (`present` or `absent`).
pub struct TlsEchoServer {
    addr: SocketAddr,
    handshakes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsEchoServer {
    /// Starts a server named `name` on a free loopback port.
    pub async fn start(name: &str, auth: ClientAuth) -> anyhow::Result<TlsEchoServer> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = CertificateDer::pem_slice_iter(SERVER_CERT_PEM.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(SERVER_KEY_PEM.as_bytes())?;
        let builder =
            rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let builder = match auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Required => {
                let mut roots = rustls::RootCertStore::empty();
                for ca in CertificateDer::pem_slice_iter(CA_PEM.as_bytes()) {
                    roots.add(ca?)?;
                }
                builder.with_client_cert_verifier(
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?,
                )
            }
        };
        let mut config = builder.with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let handshakes = Arc::new(AtomicU64::new(0));
        let hits = Arc::new(AtomicU64::new(0));
        let name: Arc<str> = name.into();
        let task = tokio::spawn({
            let handshakes = handshakes.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (acceptor, name, hits, handshakes) =
                        (acceptor.clone(), name.clone(), hits.clone(), handshakes.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(stream).await else { return };
                        handshakes.fetch_add(1, Ordering::Relaxed);
                        let (_, session) = tls.get_ref();
                        let sni = session.server_name().unwrap_or("-").to_string();
                        let cert = if session.peer_certificates().is_some() { "present" } else { "absent" };
                        let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                            let headers = req.headers_mut();
                            headers.insert(
                                "x-tls-sni",
                                sni.parse().unwrap_or_else(|_| "invalid".parse().expect("static")),
                            );
                            headers.insert("x-tls-client-cert", cert.parse().expect("static"));
                            crate::echo::echo(name.clone(), hits.clone(), req)
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    });
                }
            }
        });
        Ok(TlsEchoServer { addr, handshakes, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many TLS handshakes completed (a pooled client completes one per connection).
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::Relaxed)
    }
}

impl Drop for TlsEchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
