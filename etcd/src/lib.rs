//! etcd access shared by the controller and the data plane.
//!
//! Listing a large prefix in one range request can exceed gRPC's message limit (4 MiB by default, reached at a
//! few thousand routes), so [`list_prefix`] reads it in pages, all at the revision of the first page, which gives
//! one consistent snapshot to start a watch from.

use std::path::PathBuf;

use etcd_client::{Certificate, Client, GetOptions, Identity, KeyValue, TlsOptions};

/// Keys per page: small enough to stay far below gRPC's message limit with large objects.
pub const PAGE: i64 = 1000;

/// A consistent snapshot of a prefix.
#[derive(Debug, Default)]
pub struct Listed {
    /// The store revision the snapshot was read at; watch from `revision + 1` to follow it.
    pub revision: i64,
    /// Every key and value under the prefix, in key order.
    pub kvs: Vec<KeyValue>,
}

/// The end of the key range covering every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    // Drop trailing 0xff bytes, which cannot be incremented, then increment the last remaining byte.
    while let Some(&last) = end.last() {
        if last == 0xff {
            end.pop();
        } else {
            *end.last_mut().expect("non-empty") += 1;
            return end;
        }
    }
    // Every byte was 0xff (or the prefix was empty): the range runs to the end of the key space.
    vec![0]
}

/// Reads every key under `prefix` in pages of `page` keys, at one revision.
pub async fn list_prefix(client: &mut Client, prefix: &str, page: i64) -> Result<Listed, etcd_client::Error> {
    let end = prefix_end(prefix.as_bytes());
    let mut listed = Listed::default();
    let mut start = prefix.as_bytes().to_vec();
    loop {
        let opts = GetOptions::new().with_range(end.clone()).with_limit(page).with_revision(listed.revision);
        let mut resp = client.get(start.clone(), Some(opts)).await?;
        if listed.revision == 0 {
            listed.revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        }
        let more = resp.more();
        let kvs = resp.take_kvs();
        match kvs.last() {
            Some(last) if more => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => {
                listed.kvs.extend(kvs);
                return Ok(listed);
            }
        }
        listed.kvs.extend(kvs);
    }
}

/// PEM files for TLS to etcd: a CA to verify the servers, and a client certificate and key for mutual TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA bundle that signed the etcd servers' certificates.
    pub ca: Option<PathBuf>,
    /// The client certificate presented to etcd.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub key: Option<PathBuf>,
}

/// Why the TLS settings cannot be used.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read.
    Read(PathBuf, std::io::Error),
    /// Only one of the client certificate and key was given.
    HalfIdentity,
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Read(path, e) => write!(f, "cannot read {}: {e}", path.display()),
            TlsError::HalfIdentity => f.write_str("--etcd-cert-file and --etcd-key-file go together"),
        }
    }
}

impl std::error::Error for TlsError {}

impl TlsFiles {
    /// The client TLS settings, or `None` when no file is given (plain connections).
    pub fn options(&self) -> Result<Option<TlsOptions>, TlsError> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| TlsError::Read(p.clone(), e));
        if self.ca.is_none() && self.cert.is_none() && self.key.is_none() {
            return Ok(None);
        }
        let mut tls = TlsOptions::new();
        if let Some(ca) = &self.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?)),
            (None, None) => {}
            _ => return Err(TlsError::HalfIdentity),
        }
        Ok(Some(tls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_of_prefixes() {
        assert_eq!(prefix_end(b"/sluice/"), b"/sluice0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn tls_files() {
        assert!(TlsFiles::default().options().unwrap().is_none());
        let half = TlsFiles { cert: Some("/c".into()), ..TlsFiles::default() };
        assert!(matches!(half.options(), Err(TlsError::HalfIdentity)));
        let missing = TlsFiles { ca: Some("/nonexistent/ca.pem".into()), ..TlsFiles::default() };
        assert!(matches!(missing.options(), Err(TlsError::Read(..))));
    }

    #[tokio::test]
    async fn lists_in_pages_at_one_revision() {
        let etcd = sluice_testkit::Etcd::start().await.unwrap();
        let mut client = etcd.client().await.unwrap();
        for i in 0..25 {
            client.put(format!("/p/{i:02}"), "v", None).await.unwrap();
        }
        client.put("/q/outside", "v", None).await.unwrap();
        let listed = list_prefix(&mut client, "/p/", 10).await.unwrap();
        assert_eq!(listed.kvs.len(), 25);
        assert_eq!(listed.kvs[24].key(), b"/p/24");
        assert!(listed.revision >= 26);
    }
}
