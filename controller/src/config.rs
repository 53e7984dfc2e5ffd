//! The desired configuration: every etcd object the controller wants to exist, keyed by id.

use std::collections::BTreeMap;

use sluice_model::{Consumer, Keys, Kind, PluginConfig, Route, Ssl, Upstream};

/// The whole desired state under the prefix, as produced by the translator.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// Routes by id.
    pub routes: BTreeMap<String, Route>,
    /// Upstreams by id.
    pub upstreams: BTreeMap<String, Upstream>,
    /// Plugin configs by id.
    pub plugin_configs: BTreeMap<String, PluginConfig>,
    /// Consumers by user name.
    pub consumers: BTreeMap<String, Consumer>,
    /// Certificates (from Ingress TLS Secrets) by id.
    pub ssls: BTreeMap<String, Ssl>,
}

impl Config {
    /// The objects as etcd keys and JSON values; serialization is deterministic so equal objects give equal bytes.
    pub fn to_kv(&self, keys: &Keys) -> BTreeMap<String, Vec<u8>> {
        let mut kv = BTreeMap::new();
        kv.extend(self.upstreams.iter().map(|(id, u)| (keys.key(Kind::Upstream, id), to_json(u))));
        kv.extend(self.plugin_configs.iter().map(|(id, p)| (keys.key(Kind::PluginConfig, id), to_json(p))));
        kv.extend(self.consumers.iter().map(|(id, c)| (keys.key(Kind::Consumer, id), to_json(c))));
        kv.extend(self.ssls.iter().map(|(id, s)| (keys.key(Kind::Ssl, id), to_json(s))));
        kv.extend(self.routes.iter().map(|(id, r)| (keys.key(Kind::Route, id), to_json(r))));
        kv
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // The model types are plain data with string keys: serializing them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}
