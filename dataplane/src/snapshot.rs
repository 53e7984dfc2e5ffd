//! The last known good configuration on disk (`--snapshot-file`): the raw objects read from etcd and the etcd
//! revision they are at, written again at most once a second while they change (to a temporary file, synced, then
//! renamed over the old one, so a crash leaves the old snapshot or the new one, never half of one), and read at
//! start when etcd cannot be reached, so a data plane restarted during an etcd outage still serves.
//!
//! The file is JSON with a format version and a SHA-256 of its objects; a file that does not parse, is of another
//! version, or whose checksum does not match is refused with an error saying which, and the data plane waits for
//! etcd as it would without one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use crate::config::{RawObject, Update};

/// The format written; another one is refused.
const FORMAT: u32 = 1;
/// The shortest time between two writes.
const EVERY: Duration = Duration::from_secs(1);

/// Why a snapshot file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file cannot be read.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// It is not a snapshot.
    #[error("{0} is not a snapshot: {1}")]
    Format(PathBuf, String),
    /// It was written by another format version.
    #[error("{0} has format {1}, this data plane reads format {FORMAT}")]
    Version(PathBuf, u32),
    /// Its objects do not match its checksum (a partial or altered file).
    #[error("{0} is corrupt: its checksum does not match its objects")]
    Checksum(PathBuf),
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    format: u32,
    /// The highest etcd revision among the objects.
    revision: i64,
    /// SHA-256 of the `objects` JSON, hex.
    checksum: String,
    objects: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    key: String,
    /// The value's bytes, base64 (etcd values need not be UTF-8).
    value: String,
    revision: i64,
}

fn checksum(objects: &[Entry]) -> String {
    let json = serde_json::to_vec(objects).unwrap_or_default();
    Sha256::digest(&json).iter().map(|b| format!("{b:02x}")).collect()
}

/// A configuration read back from disk.
#[derive(Debug)]
pub struct Snapshot {
    /// The highest etcd revision among the objects.
    pub revision: i64,
    /// The objects, as etcd had them.
    pub objects: Vec<RawObject>,
}

/// Reads and checks the snapshot at `path`.
pub fn read(path: &Path) -> Result<Snapshot, SnapshotError> {
    let bytes = std::fs::read(path).map_err(|e| SnapshotError::Read(path.into(), e))?;
    let file: File = serde_json::from_slice(&bytes).map_err(|e| SnapshotError::Format(path.into(), e.to_string()))?;
    if file.format != FORMAT {
        return Err(SnapshotError::Version(path.into(), file.format));
    }
    if checksum(&file.objects) != file.checksum {
        return Err(SnapshotError::Checksum(path.into()));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let objects = file
        .objects
        .into_iter()
        .map(|e| {
            let value = b64.decode(&e.value).map_err(|err| SnapshotError::Format(path.into(), err.to_string()))?;
            Ok(RawObject { key: e.key, value, revision: e.revision })
        })
        .collect::<Result<_, SnapshotError>>()?;
    Ok(Snapshot { revision: file.revision, objects })
}

/// Writes `objects` to `path` atomically: a temporary file beside it, synced, renamed over it.
fn write(path: &Path, objects: &BTreeMap<String, RawObject>) -> std::io::Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let entries: Vec<Entry> = objects
        .values()
        .map(|o| Entry { key: o.key.clone(), value: b64.encode(&o.value), revision: o.revision })
        .collect();
    let revision = entries.iter().map(|e| e.revision).max().unwrap_or(0);
    let file = File { format: FORMAT, revision, checksum: checksum(&entries), objects: entries };
    let json = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// What the writer keeps: the objects as etcd has them now, and whether they changed since the last write.
#[derive(Debug, Default)]
struct Mirror {
    objects: BTreeMap<String, RawObject>,
    dirty: bool,
}

/// Keeps the snapshot file up to date with the updates the source reads from etcd.
#[derive(Debug, Clone)]
pub struct Writer {
    path: PathBuf,
    mirror: Arc<Mutex<Mirror>>,
}

impl Writer {
    /// A writer for `path`.
    pub fn new(path: PathBuf) -> Writer {
        Writer { path, mirror: Arc::default() }
    }

    /// The file it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes in one update read from etcd (not one read from the snapshot itself).
    pub fn apply(&self, update: &Update) {
        let mut mirror = self.mirror.lock().unwrap_or_else(|e| e.into_inner());
        match update {
            Update::Reset(objects) => {
                mirror.objects = objects.iter().map(|o| (o.key.clone(), o.clone())).collect();
            }
            Update::Put(o) => {
                mirror.objects.insert(o.key.clone(), o.clone());
            }
            Update::Delete(key) => {
                mirror.objects.remove(key);
            }
        }
        mirror.dirty = true;
    }

    /// Writes the file whenever the objects have changed, at most once a second, until the data plane stops.
    pub async fn run(self) {
        let mut every = tokio::time::interval(EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let objects = {
                let mut mirror = self.mirror.lock().unwrap_or_else(|e| e.into_inner());
                if !mirror.dirty {
                    continue;
                }
                mirror.dirty = false;
                mirror.objects.clone()
            };
            let path = self.path.clone();
            let count = objects.len();
            match tokio::task::spawn_blocking(move || write(&path, &objects)).await {
                Ok(Ok(())) => debug!(objects = count, path = %self.path.display(), "wrote the configuration snapshot"),
                Ok(Err(e)) => warn!(error = %e, path = %self.path.display(), "cannot write the configuration snapshot"),
                Err(e) => warn!(error = %e, "the snapshot writer failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damaged_files() {
        let dir = std::env::temp_dir().join(format!("sluice-snapshot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        let mut objects = BTreeMap::new();
        let object = RawObject { key: "/sluice/routes/r".into(), value: b"{\"uri\":\"/\"}".to_vec(), revision: 7 };
        objects.insert(object.key.clone(), object.clone());
        write(&path, &objects).unwrap();
        let back = read(&path).unwrap();
        assert_eq!((back.revision, back.objects), (7, vec![object]));

        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"revision\":7}", "\"revision\":8}")).unwrap();
        assert!(matches!(read(&path), Err(SnapshotError::Checksum(_))), "an altered object");
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        assert!(matches!(read(&path), Err(SnapshotError::Format(..))), "a truncated file");
        std::fs::write(&path, text.replace("\"format\":1", "\"format\":2")).unwrap();
        assert!(matches!(read(&path), Err(SnapshotError::Version(_, 2))));
        assert!(matches!(read(&dir.join("missing")), Err(SnapshotError::Read(..))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
