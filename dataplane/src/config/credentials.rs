//! The keyring consumers' sealed credentials and ssl objects' sealed private keys are opened with ([`sluice_model::sealed`]), on the configuration
//! thread. A value sealed with a key this keyring lacks makes it read the keyring file again before the consumer
//! is rejected: during a rotation the controller seals with the new key as soon as it has it, and the Secret
//! volume gives the file to the data planes at about the same time, so a stale keyring heals itself.

use std::path::PathBuf;

use sluice_model::sealed::{self, Keyring, KeyringError, OpenError};
use sluice_model::{Credential, Ssl};
use tracing::{info, warn};

/// Why the keyring file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyringFileError {
    /// It could not be read.
    #[error("cannot read credential keyring {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// It does not parse.
    #[error("credential keyring {0}: {1}")]
    Parse(PathBuf, KeyringError),
}

/// The keyring, and the file it is read from.
#[derive(Debug, Default)]
pub struct CredentialKeys {
    file: Option<PathBuf>,
    ring: Option<Keyring>,
}

fn read(file: &PathBuf) -> Result<Keyring, KeyringFileError> {
    let text = std::fs::read_to_string(file).map_err(|e| KeyringFileError::Read(file.clone(), e))?;
    Keyring::parse(&text).map_err(|e| KeyringFileError::Parse(file.clone(), e))
}

impl CredentialKeys {
    /// Reads the keyring in `file`; without a file, sealed credentials are rejected and plain ones kept.
    pub fn load(file: Option<PathBuf>) -> Result<CredentialKeys, KeyringFileError> {
        let ring = file.as_ref().map(read).transpose()?;
        Ok(CredentialKeys { file, ring })
    }

    /// Opens the sealed fields of `credentials`, reading the keyring file again once if a key is missing.
    pub fn open(&mut self, credentials: &mut [Credential]) -> Result<(), OpenError> {
        let opened = self.with_ring(|ring| {
            let mut opened = credentials.to_vec();
            sealed::open_credentials(ring, &mut opened).map(|()| opened)
        })?;
        credentials.clone_from_slice(&opened);
        Ok(())
    }

    /// Opens the sealed private keys of `ssl`, reading the keyring file again once if a key is missing.
    pub fn open_ssl(&mut self, ssl: &mut Ssl) -> Result<(), OpenError> {
        *ssl = self.with_ring(|ring| {
            let mut opened = ssl.clone();
            sealed::open_ssl(ring, &mut opened).map(|()| opened)
        })?;
        Ok(())
    }

    /// `open` with the keyring; again after reading the file once more when it names a key the keyring lacks.
    fn with_ring<T>(&mut self, open: impl Fn(Option<&Keyring>) -> Result<T, OpenError>) -> Result<T, OpenError> {
        match open(self.ring.as_ref()) {
            Err(OpenError::UnknownKey { .. }) if self.reload() => open(self.ring.as_ref()),
            other => other,
        }
    }

    /// Reads the file again; whether the keyring changed.
    fn reload(&mut self) -> bool {
        let Some(file) = &self.file else { return false };
        match read(file) {
            Ok(ring) => {
                let changed = self.ring.as_ref().map(Keyring::ids) != Some(ring.ids());
                if changed {
                    info!(keys = ?ring.ids(), "credential keyring read again");
                }
                self.ring = Some(ring);
                changed
            }
            Err(e) => {
                warn!(error = %e, "credential keyring cannot be read again; keeping the one loaded");
                false
            }
        }
    }
}
