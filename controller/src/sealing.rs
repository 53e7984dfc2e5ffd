//! Seals consumers' credentials and ssl objects' private keys before they are written ([`sluice_model::sealed`]), when a keyring is
//! configured. The keyring file is read again at every sync, so that a rotated Secret takes effect without a
//! restart: its first key seals, and values the previous key sealed are sealed again on the next write.

use std::path::PathBuf;

use sluice_model::sealed::{self, Keyring};

use crate::config::Config;

/// The keyring and its file; without a file, credentials are written as they are.
#[derive(Debug, Default)]
pub struct Sealer {
    file: Option<PathBuf>,
    ring: Option<Keyring>,
}

impl Sealer {
    /// Reads the keyring in `file`; an unreadable or invalid file is an error here, at start.
    pub fn load(file: Option<PathBuf>) -> anyhow::Result<Sealer> {
        let ring = match &file {
            None => None,
            Some(path) => Some(read(path)?),
        };
        Ok(Sealer { file, ring })
    }

    /// Seals every consumer's credentials with the current key. A consumer whose credentials cannot be sealed (a
    /// value sealed with a key the keyring does not hold) is left out, not written in the clear.
    pub fn seal(&mut self, config: &mut Config) {
        if let Some(path) = &self.file {
            match read(path) {
                Ok(ring) => self.ring = Some(ring),
                Err(e) => {
                    tracing::warn!(error = %e, "credential keyring cannot be read again; sealing with the one loaded")
                }
            }
        }
        let Some(ring) = &self.ring else { return };
        config.consumers.retain(|id, consumer| match sealed::seal_credentials(ring, &mut consumer.plugins.credentials) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(consumer = %id, error = %e, "consumer not written: its credentials cannot be sealed");
                false
            }
        });
        config.ssls.retain(|id, ssl| match sealed::seal_ssl(ring, ssl) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(ssl = %id, error = %e, "ssl object not written: its private key cannot be sealed");
                false
            }
        });
    }
}

fn read(path: &PathBuf) -> anyhow::Result<Keyring> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read credential keyring {}: {e}", path.display()))?;
    Keyring::parse(&text).map_err(|e| anyhow::anyhow!("credential keyring {}: {e}", path.display()))
}
