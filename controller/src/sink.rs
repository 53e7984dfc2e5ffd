//! Writes the desired configuration to etcd: a diff against what is stored, applied in transactions.
//!
//! Only objects labelled as written by the sluice controller are ever changed or deleted; an object someone else
//! wrote under a key we want is left alone and reported. Every write is guarded by the revision it was diffed
//! against, so a concurrent writer makes the transaction fail and the next sync starts from fresh data.

use std::collections::BTreeMap;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use sluice_model::{Keys, Kind, labels};

/// Writes per transaction: well under etcd's default limit of 128 operations.
const TXN_OPS: usize = 64;

/// Why a sync did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// etcd could not be reached or refused a request.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// Someone changed a key between our read and our write; the next sync retries from fresh data.
    #[error("a key changed while syncing; retrying from fresh data")]
    Conflict,
}

/// What one sync changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Applied {
    /// Objects created or updated.
    pub puts: usize,
    /// Objects deleted.
    pub deletes: usize,
    /// Keys we wanted to write but that hold an object written by someone else.
    pub foreign: Vec<String>,
}

/// A connection to etcd plus the key layout it writes under.
pub struct EtcdSink {
    client: Client,
    keys: Keys,
    /// What etcd held after our last successful sync, so that a sync with nothing to change costs no request.
    /// Dropped on any error; every write is guarded by revision, so a stale cache can only fail a transaction,
    /// never overwrite someone else's change.
    cache: Option<BTreeMap<String, Stored>>,
}

struct Stored {
    value: Vec<u8>,
    mod_revision: i64,
}

impl EtcdSink {
    /// Wraps a connected client.
    pub fn new(client: Client, keys: Keys) -> EtcdSink {
        EtcdSink { client, keys, cache: None }
    }

    /// Makes etcd hold exactly `desired` among the objects we own.
    pub async fn apply(&mut self, desired: &BTreeMap<String, Vec<u8>>) -> Result<Applied, SinkError> {
        let result = self.apply_inner(desired).await;
        if result.is_err() {
            self.cache = None;
        }
        result
    }

    async fn apply_inner(&mut self, desired: &BTreeMap<String, Vec<u8>>) -> Result<Applied, SinkError> {
        let mut stored = match self.cache.take() {
            Some(cache) => cache,
            None => self.list().await?,
        };
        let mut applied = Applied::default();
        let mut puts = Vec::new();
        for (key, value) in desired {
            match stored.get(key) {
                Some(s) if &s.value == value => {}
                Some(s) if !owned(&s.value) => applied.foreign.push(key.clone()),
                Some(s) => {
                    puts.push((key, value, Compare::mod_revision(key.as_str(), CompareOp::Equal, s.mod_revision)))
                }
                None => puts.push((key, value, Compare::create_revision(key.as_str(), CompareOp::Equal, 0))),
            }
        }
        let mut deletes: Vec<_> = stored
            .iter()
            .filter(|(key, s)| !desired.contains_key(*key) && self.keys.parse(key).is_some() && owned(&s.value))
            .collect();
        // Referenced objects are created before their referrers and deleted after them, so a data plane watching
        // mid-sync never sees a route pointing at an upstream that is not there yet.
        puts.sort_by_key(|(key, _, _)| self.rank(key));
        deletes.sort_by_key(|(key, _)| std::cmp::Reverse(self.rank(key)));
        applied.puts = puts.len();
        applied.deletes = deletes.len();
        let deletes: Vec<(String, i64)> = deletes.into_iter().map(|(k, s)| (k.clone(), s.mod_revision)).collect();
        let puts: Vec<(String, Vec<u8>, Compare)> =
            puts.into_iter().map(|(k, v, c)| (k.clone(), v.clone(), c)).collect();
        for chunk in puts.chunks(TXN_OPS) {
            let compares: Vec<_> = chunk.iter().map(|(_, _, c)| c.clone()).collect();
            let ops: Vec<_> = chunk.iter().map(|(k, v, _)| TxnOp::put(k.as_str(), v.as_slice(), None)).collect();
            let revision = self.commit(compares, ops).await?;
            for (k, v, _) in chunk {
                stored.insert(k.clone(), Stored { value: v.clone(), mod_revision: revision });
            }
        }
        for chunk in deletes.chunks(TXN_OPS) {
            let compares: Vec<_> =
                chunk.iter().map(|(k, rev)| Compare::mod_revision(k.as_str(), CompareOp::Equal, *rev)).collect();
            let ops: Vec<_> = chunk.iter().map(|(k, _)| TxnOp::delete(k.as_str(), None)).collect();
            self.commit(compares, ops).await?;
            for (k, _) in chunk {
                stored.remove(k);
            }
        }
        // Keys held by others change without our writes failing; while there are any, list again next time
        // rather than trust the cache about them.
        if applied.foreign.is_empty() {
            self.cache = Some(stored);
        }
        Ok(applied)
    }

    fn rank(&self, key: &str) -> usize {
        let kind = self.keys.parse(key).map(|(kind, _)| kind);
        Kind::ALL.iter().position(|k| Some(*k) == kind).unwrap_or(Kind::ALL.len())
    }

    /// Runs one guarded transaction; returns the revision it created.
    async fn commit(&mut self, compares: Vec<Compare>, ops: Vec<TxnOp>) -> Result<i64, SinkError> {
        let resp = self.client.txn(Txn::new().when(compares).and_then(ops)).await?;
        if !resp.succeeded() {
            return Err(SinkError::Conflict);
        }
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Every key under the prefix, read in pages at one revision.
    async fn list(&mut self) -> Result<BTreeMap<String, Stored>, SinkError> {
        let listed = sluice_etcd::list_prefix(&mut self.client, &self.keys.all(), sluice_etcd::PAGE).await?;
        Ok(listed
            .kvs
            .into_iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                (key, Stored { mod_revision: kv.mod_revision(), value: kv.value().to_vec() })
            })
            .collect())
    }
}

/// Whether a stored value carries our `managed-by` label.
fn owned(value: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Labelled {
        #[serde(default)]
        labels: BTreeMap<String, String>,
    }
    serde_json::from_slice::<Labelled>(value).is_ok_and(|v| labels::is_managed(&v.labels))
}
