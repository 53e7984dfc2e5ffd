//! The ssl object: a certificate chain and its private key (or several pairs, such as RSA and ECDSA), the server
//! names it is served for, and optionally the client certificate authorities a client must present a certificate
//! from (downstream mutual TLS).
//!
//! The PEM blocks are checked here (a certificate chain, a key of a known type, and that the key belongs to the
//! chain's first certificate, with the TLS library the data plane serves them with), so the controller rejects
//! what the data plane could not load.

use std::collections::BTreeMap;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::route::Status;
use crate::validate::{self, InvalidId, InvalidLabel};

/// The longest PEM text APISIX accepts for one certificate or key.
const MAX_PEM: usize = 64 * 1024;

/// An ssl object under `<prefix>/ssls/<id>`.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Ssl {
    /// The id, also the last segment of the key.
    #[serde(default, deserialize_with = "crate::id::opt", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `server` (the default): served to clients; `client`: presented to upstream nodes.
    #[serde(default, rename = "type", skip_serializing_if = "SslType::is_server")]
    pub kind: SslType,
    /// The certificate chain (PEM), leaf first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// The private key of `cert` (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// More chains for the same names (for example ECDSA next to RSA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certs: Vec<String>,
    /// The keys of `certs`, in the same order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// One server name (older shape); a leading `*.` is a wildcard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Server names this certificate is served for; a leading `*.` is a wildcard for one label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snis: Option<Vec<String>>,
    /// Client certificate verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientVerification>,
    /// The TLS versions offered (`TLSv1.2`, `TLSv1.3`); absent means both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_protocols: Option<Vec<String>>,
    /// 1 enabled (the default), 0 disabled.
    #[serde(default, skip_serializing_if = "Status::is_enabled")]
    pub status: Status,
    /// Labels; the controller uses them to record ownership.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// When the certificate becomes valid (Unix seconds), as the Admin API records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity_start: Option<i64>,
    /// When the certificate expires (Unix seconds), as the Admin API records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity_end: Option<i64>,
    /// Creation time as the Admin API records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<i64>,
    /// Last update time as the Admin API records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<i64>,
    /// Fields this version does not know; any makes the object invalid rather than silently ignored.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

impl std::fmt::Debug for Ssl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a private key.
        f.debug_struct("Ssl")
            .field("id", &self.id)
            .field("type", &self.kind)
            .field("snis", &self.server_names())
            .field("pairs", &self.pairs().count())
            .field("client", &self.client)
            .field("status", &self.status.0)
            .finish_non_exhaustive()
    }
}

/// What an ssl object is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SslType {
    /// Served by the HTTPS listener.
    #[default]
    Server,
    /// A client certificate for upstream mutual TLS.
    Client,
}

impl SslType {
    fn is_server(&self) -> bool {
        *self == SslType::Server
    }
}

/// Downstream mutual TLS: clients must present a certificate issued by `ca`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientVerification {
    /// The certificate authorities (PEM) client certificates must chain to.
    pub ca: String,
    /// How many intermediate certificates a client chain may have (APISIX's default 1).
    #[serde(default = "default_depth")]
    pub depth: u32,
    /// Paths served without a client certificate (APISIX); not supported by sluice, so rejected when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_mtls_uri_regex: Option<Vec<String>>,
}

fn default_depth() -> u32 {
    1
}

/// A TLS version an ssl object may offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// Why an ssl object is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidSsl {
    /// The id breaks APISIX's id rule.
    #[error(transparent)]
    Id(#[from] InvalidId),
    /// A label breaks APISIX's label rule.
    #[error(transparent)]
    Label(#[from] InvalidLabel),
    /// `cert` and `key` must be given together, `certs` and `keys` must pair up, and a server ssl needs one pair.
    #[error("certificates and keys must pair up: cert with key, certs with keys of the same length")]
    Pairs,
    /// A certificate field is not a PEM certificate chain.
    #[error("{field} is not a PEM certificate chain")]
    Certificate {
        /// `cert` or `certs[i]`.
        field: String,
    },
    /// A key field is not a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    #[error("{field} is not a PEM private key")]
    Key {
        /// `key` or `keys[i]`.
        field: String,
    },
    /// A key cannot be used by the TLS library, or does not belong to its certificate.
    #[error("{field} does not belong to its certificate or cannot be used: {reason}")]
    KeyMismatch {
        /// `key` or `keys[i]`.
        field: String,
        /// What the TLS library said.
        reason: String,
    },
    /// A PEM field is longer than APISIX allows.
    #[error("{field} is longer than {MAX_PEM} characters")]
    TooLong {
        /// The field.
        field: String,
    },
    /// A server ssl has neither `sni` nor `snis`, or both.
    #[error("exactly one of sni and snis must be set, with at least one name")]
    Snis,
    /// A server name is not a host name or a `*.` wildcard.
    #[error("sni {0:?} is not a host name or a *. wildcard")]
    Sni(String),
    /// `client.ca` holds no certificate.
    #[error("client.ca is not a PEM certificate bundle")]
    ClientCa,
    /// `client.depth` outside 0 to 9.
    #[error("client.depth must be 0 to 9, not {0}")]
    Depth(u32),
    /// A field sluice does not implement; the object is refused rather than served without it.
    #[error("{0} is not supported")]
    Unsupported(&'static str),
    /// `ssl_protocols` names something else than TLSv1.1 to TLSv1.3, or leaves nothing sluice offers.
    #[error("ssl_protocols must name TLSv1.2 or TLSv1.3 (TLSv1.1 and older are not offered): {0:?}")]
    Protocols(Vec<String>),
    /// `status` other than 0 or 1.
    #[error("status must be 0 or 1, not {0}")]
    Status(u8),
    /// A field APISIX does not define.
    #[error("unknown field {0:?}")]
    UnknownField(String),
}

impl Ssl {
    /// The certificate chains with their keys: `cert`/`key` first, then `certs`/`keys`.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        let first = self.cert.as_deref().zip(self.key.as_deref());
        first.into_iter().chain(self.certs.iter().map(String::as_str).zip(self.keys.iter().map(String::as_str)))
    }

    /// The server names, from `snis` or `sni`, as written.
    pub fn server_names(&self) -> Vec<&str> {
        match (&self.snis, &self.sni) {
            (Some(list), _) => list.iter().map(String::as_str).collect(),
            (None, Some(one)) => vec![one.as_str()],
            (None, None) => Vec::new(),
        }
    }

    /// The TLS versions to offer, lowest first; both when `ssl_protocols` is absent.
    pub fn versions(&self) -> Vec<TlsVersion> {
        let Some(list) = &self.ssl_protocols else { return vec![TlsVersion::Tls12, TlsVersion::Tls13] };
        let mut versions: Vec<TlsVersion> = list
            .iter()
            .filter_map(|p| match p.as_str() {
                "TLSv1.2" => Some(TlsVersion::Tls12),
                "TLSv1.3" => Some(TlsVersion::Tls13),
                _ => None,
            })
            .collect();
        versions.sort_unstable();
        versions.dedup();
        versions
    }

    /// Checks the rules APISIX applies to ssl objects, and that every PEM block can be read.
    pub fn validate(&self) -> Result<(), InvalidSsl> {
        validate::id(self.id.as_deref())?;
        validate::labels(&self.labels)?;
        if let Some(field) = self.unknown.keys().next() {
            return Err(InvalidSsl::UnknownField(field.clone()));
        }
        if self.status.0 > 1 {
            return Err(InvalidSsl::Status(self.status.0));
        }
        if self.cert.is_some() != self.key.is_some() || self.certs.len() != self.keys.len() || self.cert.is_none() {
            return Err(InvalidSsl::Pairs);
        }
        for (i, (cert, key)) in self.pairs().enumerate() {
            let (cert_field, key_field) = if i == 0 {
                ("cert".to_string(), "key".to_string())
            } else {
                (format!("certs[{}]", i - 1), format!("keys[{}]", i - 1))
            };
            check_pem(cert, &cert_field)?;
            check_pem(key, &key_field)?;
            let Some(chain) = certificates(cert) else {
                return Err(InvalidSsl::Certificate { field: cert_field });
            };
            let Ok(der) = PrivateKeyDer::from_pem_slice(key.as_bytes()) else {
                return Err(InvalidSsl::Key { field: key_field });
            };
            let provider = rustls::crypto::ring::default_provider();
            if let Err(e) = rustls::sign::CertifiedKey::from_der(chain, der, &provider) {
                return Err(InvalidSsl::KeyMismatch { field: key_field, reason: e.to_string() });
            }
        }
        if self.kind == SslType::Server {
            let names = self.server_names();
            if names.is_empty() || (self.sni.is_some() && self.snis.is_some()) {
                return Err(InvalidSsl::Snis);
            }
            if let Some(bad) = names.iter().find(|n| !valid_sni(n)) {
                return Err(InvalidSsl::Sni(bad.to_string()));
            }
        }
        if let Some(client) = &self.client {
            if client.skip_mtls_uri_regex.is_some() {
                return Err(InvalidSsl::Unsupported("client.skip_mtls_uri_regex"));
            }
            if client.depth > 9 {
                return Err(InvalidSsl::Depth(client.depth));
            }
            if certificates(&client.ca).is_none() {
                return Err(InvalidSsl::ClientCa);
            }
        }
        if let Some(list) = &self.ssl_protocols {
            let known = list.iter().all(|p| matches!(p.as_str(), "TLSv1.1" | "TLSv1.2" | "TLSv1.3"));
            if !known || self.versions().is_empty() {
                return Err(InvalidSsl::Protocols(list.clone()));
            }
        }
        Ok(())
    }
}

fn check_pem(text: &str, field: &str) -> Result<(), InvalidSsl> {
    if text.len() > MAX_PEM {
        return Err(InvalidSsl::TooLong { field: field.to_string() });
    }
    Ok(())
}

/// The certificates of a PEM text, in order; `None` when it holds none or a block is malformed.
pub fn certificates(pem: &str) -> Option<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>().ok()?;
    (!certs.is_empty()).then_some(certs)
}

/// Whether `name` is a host name (letters, digits, `-`, `.`, `_`), optionally after a leading `*.`.
pub fn valid_sni(name: &str) -> bool {
    let host = name.strip_prefix("*.").unwrap_or(name);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests;
