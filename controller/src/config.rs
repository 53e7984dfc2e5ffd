//! The desired configuration: every etcd object the controller wants to exist, keyed by id.

use std::collections::BTreeMap;

use sluice_model::{Keys, Kind, Route, Upstream};

/// The whole desired state under the prefix, as produced by the translator.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// Routes by id.
    pub routes: BTreeMap<String, Route>,
    /// Upstreams by id.
    pub upstreams: BTreeMap<String, Upstream>,
}

impl Config {
    /// The objects as etcd keys and JSON values; serialization is deterministic so equal objects give equal bytes.
    pub fn to_kv(&self, keys: &Keys) -> BTreeMap<String, Vec<u8>> {
        let upstreams = self.upstreams.iter().map(|(id, u)| (keys.key(Kind::Upstream, id), to_json(u)));
        let routes = self.routes.iter().map(|(id, r)| (keys.key(Kind::Route, id), to_json(r)));
        upstreams.chain(routes).collect()
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // The model types are plain data with string keys: serializing them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}
