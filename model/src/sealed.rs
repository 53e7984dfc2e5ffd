//! Credentials sealed at rest: the secret fields of consumers' credentials (key-auth's `key`, basic-auth's
//! `password`, jwt-auth's `secret`, hmac-auth's `secret_key`) and the private keys of ssl objects are stored in
//! etcd encrypted under a keyring, so that a read of etcd, a backup or a snapshot file does not give them away.
//!
//! A sealed value is `$sealed$v1$<key id>$<base64url(nonce ‖ ciphertext ‖ tag)>`: AES-256-GCM with the field's
//! name and the key id as associated data. The nonce is derived from the value (HMAC-SHA256 under a key of its
//! own, derived from the keyring key), which makes sealing deterministic: the controller writes an object only
//! when it differs from what is stored, and a random nonce would make every sync rewrite every consumer. The
//! price is that two equal values of one field under one key have equal ciphertexts, and nothing more: a nonce is
//! only ever reused for the same plaintext.
//!
//! The keyring is a text file of `<id> <base64 of 32 random bytes>` lines, the current key first; older keys
//! still open what they sealed. A plain value (written by hand, or before sealing was on) is read as it is.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Ssl;
use crate::plugins::Credential;

/// What every sealed value starts with.
const PREFIX: &str = "$sealed$v1$";

/// A keyring file that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    /// A line is not `<id> <base64 key>`, or the key is not 32 bytes.
    #[error("keyring line {0}: expected `<id> <base64 of 32 bytes>` with an id of letters, digits, `-` and `_`")]
    BadLine(usize),
    /// Two keys have one id.
    #[error("keyring: key id {0:?} appears twice")]
    DuplicateId(String),
    /// No key at all.
    #[error("keyring: no key")]
    Empty,
}

/// A sealed value that cannot be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// The value is sealed but this process has no keyring.
    #[error("{field} is sealed with key {key:?} and no credential keyring is configured")]
    NoKeyring {
        /// The field.
        field: &'static str,
        /// The key id named by the value.
        key: String,
    },
    /// The keyring has no key of that id.
    #[error("{field} is sealed with key {key:?}, which the credential keyring does not hold")]
    UnknownKey {
        /// The field.
        field: &'static str,
        /// The key id named by the value.
        key: String,
    },
    /// The value is damaged, or was sealed for another field.
    #[error("{field} is sealed but does not open (damaged, or sealed for another field)")]
    Damaged {
        /// The field.
        field: &'static str,
    },
}

/// One key of a keyring.
struct Key {
    id: String,
    cipher: Aes256Gcm,
    /// Derives nonces; separate from the cipher key.
    nonce_key: [u8; 32],
}

/// The keys credentials are sealed and opened with.
pub struct Keyring {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    /// Names the key ids, never the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("ids", &self.ids()).finish()
    }
}

impl Keyring {
    /// Parses a keyring file's text; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Keyring, KeyringError> {
        let mut keys: Vec<Key> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || KeyringError::BadLine(i + 1);
            let (id, key) = line.split_once(char::is_whitespace).ok_or_else(bad)?;
            let valid_id = !id.is_empty()
                && id.len() <= 32
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            let key = STANDARD.decode(key.trim()).map_err(|_| bad())?;
            if !valid_id || key.len() != 32 {
                return Err(bad());
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyringError::DuplicateId(id.to_string()));
            }
            let cipher = Aes256Gcm::new_from_slice(&key).map_err(|_| bad())?;
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).map_err(|_| bad())?;
            mac.update(b"sluice sealed v1 nonce key");
            keys.push(Key { id: id.to_string(), cipher, nonce_key: mac.finalize().into_bytes().into() });
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Keyring { keys })
    }

    /// The key ids, the current one first.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// Seals `plain` as the value of `field` with the current key; a value already sealed with it is kept, one
    /// sealed with an older key is opened and sealed again (rotation).
    pub fn seal(&self, field: &'static str, value: &str) -> Result<String, OpenError> {
        let plain = self.open(field, value)?;
        let key = &self.keys[0];
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.nonce_key).expect("HMAC takes any key length");
        mac.update(field.as_bytes());
        mac.update(&[0]);
        mac.update(plain.as_bytes());
        let digest = mac.finalize().into_bytes();
        let nonce = &digest[..12];
        let aad = associated(field, &key.id);
        let sealed = key
            .cipher
            .encrypt(Nonce::from_slice(nonce), Payload { msg: plain.as_bytes(), aad: aad.as_bytes() })
            .expect("AES-GCM encrypts any message this size");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}${}", key.id, URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The plain value of `field`: `value` itself when it is not sealed.
    pub fn open(&self, field: &'static str, value: &str) -> Result<String, OpenError> {
        let Some((id, payload)) = parse(value) else { return Ok(value.to_string()) };
        let key = self.keys.iter().find(|k| k.id == id);
        let key = key.ok_or_else(|| OpenError::UnknownKey { field, key: id.to_string() })?;
        let damaged = || OpenError::Damaged { field };
        let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| damaged())?;
        if bytes.len() < 12 + 16 {
            return Err(damaged());
        }
        let (nonce, sealed) = bytes.split_at(12);
        let aad = associated(field, id);
        let plain = key
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: aad.as_bytes() })
            .map_err(|_| damaged())?;
        String::from_utf8(plain).map_err(|_| damaged())
    }
}

fn associated(field: &str, id: &str) -> String {
    format!("sluice sealed v1 {field} {id}")
}

/// The key id and payload of a sealed value; `None` for a plain one.
fn parse(value: &str) -> Option<(&str, &str)> {
    value.strip_prefix(PREFIX)?.split_once('$')
}

/// Whether `value` is sealed.
pub fn is_sealed(value: &str) -> bool {
    parse(value).is_some()
}

/// The secret fields of a credential, by name.
fn secrets(credential: &mut Credential) -> Vec<(&'static str, &mut String)> {
    match credential {
        Credential::KeyAuth(c) => vec![("key-auth.key", &mut c.key)],
        Credential::BasicAuth(c) => vec![("basic-auth.password", &mut c.password)],
        Credential::JwtAuth(c) => c.secret.as_mut().map(|s| ("jwt-auth.secret", s)).into_iter().collect(),
        Credential::HmacAuth(c) => vec![("hmac-auth.secret_key", &mut c.secret_key)],
    }
}

/// Seals every secret field of `credentials` with the keyring's current key (the controller, before writing).
pub fn seal_credentials(ring: &Keyring, credentials: &mut [Credential]) -> Result<(), OpenError> {
    for credential in credentials {
        for (field, value) in secrets(credential) {
            *value = ring.seal(field, value)?;
        }
    }
    Ok(())
}

/// Opens every sealed secret field of `credentials` (the data plane, before indexing a consumer); without a
/// keyring, a sealed field is an error and a plain one is kept.
pub fn open_credentials(ring: Option<&Keyring>, credentials: &mut [Credential]) -> Result<(), OpenError> {
    for credential in credentials {
        for (field, value) in secrets(credential) {
            match ring {
                Some(ring) => *value = ring.open(field, value)?,
                None => {
                    if let Some((key, _)) = parse(value) {
                        return Err(OpenError::NoKeyring { field, key: key.to_string() });
                    }
                }
            }
        }
    }
    Ok(())
}

/// The private keys of an ssl object.
fn ssl_keys(ssl: &mut Ssl) -> impl Iterator<Item = &mut String> {
    ssl.key.iter_mut().chain(ssl.keys.iter_mut())
}

/// Seals an ssl object's private keys with the keyring's current key (the controller, before writing).
pub fn seal_ssl(ring: &Keyring, ssl: &mut Ssl) -> Result<(), OpenError> {
    for key in ssl_keys(ssl) {
        *key = ring.seal("ssl.key", key)?;
    }
    Ok(())
}

/// Opens an ssl object's sealed private keys (the data plane, before it checks and builds the certificate);
/// without a keyring, a sealed key is an error.
pub fn open_ssl(ring: Option<&Keyring>, ssl: &mut Ssl) -> Result<(), OpenError> {
    for key in ssl_keys(ssl) {
        match ring {
            Some(ring) => *key = ring.open("ssl.key", key)?,
            None => {
                if let Some((id, _)) = parse(key) {
                    return Err(OpenError::NoKeyring { field: "ssl.key", key: id.to_string() });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::{basic_auth, jwt_auth, key_auth};

    const K1: &str = "k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2 HxwdGhsYGRYXFBUSExAREA8ODQwLCgkIBwYFBAMCAQA=";

    #[test]
    fn seals_deterministically_and_opens_with_any_key_of_the_ring() {
        let ring = Keyring::parse(K1).unwrap();
        let sealed = ring.seal("key-auth.key", "alice-key").unwrap();
        assert!(sealed.starts_with("$sealed$v1$k1$") && !sealed.contains("alice-key"), "{sealed}");
        assert_eq!(ring.seal("key-auth.key", "alice-key").unwrap(), sealed, "the same value seals the same way");
        assert_eq!(ring.seal("key-auth.key", &sealed).unwrap(), sealed, "sealing a sealed value keeps it");
        assert_ne!(ring.seal("key-auth.key", "bob-key").unwrap(), sealed);
        assert_eq!(ring.open("key-auth.key", &sealed).unwrap(), "alice-key");
        assert_eq!(ring.open("key-auth.key", "plain").unwrap(), "plain", "plain values are read as they are");
        assert_eq!(
            ring.open("basic-auth.password", &sealed),
            Err(OpenError::Damaged { field: "basic-auth.password" }),
            "bound to its field"
        );

        // Rotation: k2 becomes current; k1's values still open, and sealing again moves them to k2.
        let rotated = Keyring::parse(&format!("{K2}\n# the previous key\n{K1}\n")).unwrap();
        assert_eq!(rotated.ids(), ["k2", "k1"]);
        assert_eq!(rotated.open("key-auth.key", &sealed).unwrap(), "alice-key");
        let resealed = rotated.seal("key-auth.key", &sealed).unwrap();
        assert!(resealed.starts_with("$sealed$v1$k2$"));
        assert_eq!(rotated.open("key-auth.key", &resealed).unwrap(), "alice-key");
        let only_k2 = Keyring::parse(K2).unwrap();
        assert_eq!(
            only_k2.open("key-auth.key", &sealed),
            Err(OpenError::UnknownKey { field: "key-auth.key", key: "k1".into() })
        );

        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(ring.open("key-auth.key", &tampered), Err(OpenError::Damaged { field: "key-auth.key" }));
        assert!(!format!("{ring:?}").contains("AAEC"), "Debug never shows a key");
    }

    #[test]
    fn credentials_are_sealed_and_opened_field_by_field() {
        let ring = Keyring::parse(K1).unwrap();
        let plain = vec![
            Credential::KeyAuth(key_auth::Credential { key: "k".into() }),
            Credential::BasicAuth(basic_auth::Credential { username: "alice".into(), password: "pw".into() }),
            Credential::JwtAuth(jwt_auth::Credential {
                key: "user-key".into(),
                secret: Some("jwt-secret".into()),
                public_key: None,
                algorithm: Default::default(),
                exp: None,
                base64_secret: false,
                lifetime_grace_period: 0,
            }),
        ];
        let mut sealed = plain.clone();
        seal_credentials(&ring, &mut sealed).unwrap();
        let mut consumer = crate::ConsumerPlugins::default();
        for c in &sealed {
            consumer.insert_credential(c.clone());
        }
        let json = serde_json::to_string(&consumer).unwrap();
        for secret in ["\"k\"", "\"pw\"", "jwt-secret"] {
            assert!(!json.contains(secret), "{secret} in {json}");
        }
        assert!(json.contains("alice") && json.contains("user-key"), "names stay readable: {json}");
        let mut opened = sealed.clone();
        open_credentials(Some(&ring), &mut opened).unwrap();
        assert_eq!(opened, plain);
        assert!(matches!(open_credentials(None, &mut sealed.clone()), Err(OpenError::NoKeyring { .. })));
        let mut untouched = plain.clone();
        open_credentials(None, &mut untouched).unwrap();
        assert_eq!(untouched, plain);
    }

    #[test]
    fn ssl_private_keys_are_sealed_and_opened() {
        let ring = Keyring::parse(K1).unwrap();
        let plain = Ssl { key: Some("PEM A".into()), keys: vec!["PEM B".into()], ..Ssl::default() };
        let mut ssl = plain.clone();
        seal_ssl(&ring, &mut ssl).unwrap();
        assert!(ssl.key.as_deref().is_some_and(is_sealed) && is_sealed(&ssl.keys[0]));
        assert!(matches!(open_ssl(None, &mut ssl.clone()), Err(OpenError::NoKeyring { field: "ssl.key", .. })));
        open_ssl(Some(&ring), &mut ssl).unwrap();
        assert!(ssl == plain);
    }

    #[test]
    fn bad_keyrings_are_refused() {
        assert_eq!(Keyring::parse("").unwrap_err(), KeyringError::Empty);
        assert_eq!(Keyring::parse("# only a comment\n").unwrap_err(), KeyringError::Empty);
        assert_eq!(Keyring::parse("k1").unwrap_err(), KeyringError::BadLine(1));
        assert_eq!(Keyring::parse("k1 c2hvcnQ=").unwrap_err(), KeyringError::BadLine(1), "not 32 bytes");
        assert_eq!(Keyring::parse(&format!("\n{K1}\nk/2 x")).unwrap_err(), KeyringError::BadLine(3));
        assert_eq!(Keyring::parse(&format!("{K1}\n{K1}")).unwrap_err(), KeyringError::DuplicateId("k1".into()));
    }
}
