//! The service object: an upstream, plugins and hosts shared by the routes that name it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plugins::Plugins;
use crate::upstream::{InvalidUpstream, Upstream};
use crate::validate::{self, InvalidId, InvalidLabel};

/// A service as stored under `<prefix>/services/<id>`: an upstream and plugins shared by the routes naming it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Service {
    /// The id, also the last segment of the key.
    #[serde(default, deserialize_with = "crate::id::opt", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    /// An inline upstream, used by routes that set neither `upstream` nor `upstream_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
    /// A reference to `<prefix>/upstreams/<id>`, used like `upstream`.
    #[serde(default, deserialize_with = "crate::id::opt", skip_serializing_if = "Option::is_none")]
    pub upstream_id: Option<String>,
    /// Plugins shared by the service's routes (a route's own configuration of a plugin wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<Plugins>,
    /// Hosts for routes that have none of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// Whether WebSocket upgrades are proxied for the service's routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_websocket: Option<bool>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Creation time (seconds since the epoch) as the Admin API records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<i64>,
    /// Last update time (seconds since the epoch) as the Admin API records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<i64>,
    /// Fields this version does not know; any makes the service invalid.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// Why a service is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidService {
    /// The id breaks APISIX's id rule.
    #[error(transparent)]
    Id(#[from] InvalidId),
    /// A label breaks APISIX's label rule.
    #[error(transparent)]
    Label(#[from] InvalidLabel),
    /// A field this version does not know.
    #[error("unknown field {0:?}")]
    UnknownField(String),
    /// Both `upstream` and `upstream_id` are set.
    #[error("use upstream or upstream_id, not both")]
    Upstreams,
    /// A host is empty or has whitespace.
    #[error("host {0:?} is invalid")]
    Host(String),
    /// The inline upstream is invalid.
    #[error("inline upstream: {0}")]
    Upstream(#[from] InvalidUpstream),
}

impl Service {
    /// Checks the rules a service must follow.
    pub fn validate(&self) -> Result<(), InvalidService> {
        validate::id(self.id.as_deref())?;
        validate::labels(&self.labels)?;
        if let Some(field) = self.unknown.keys().next() {
            return Err(InvalidService::UnknownField(field.clone()));
        }
        if self.upstream.is_some() && self.upstream_id.is_some() {
            return Err(InvalidService::Upstreams);
        }
        if let Some(h) = self.hosts.iter().flatten().find(|h| h.is_empty() || h.contains(char::is_whitespace)) {
            return Err(InvalidService::Host(h.clone()));
        }
        if let Some(up) = &self.upstream {
            up.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{decode_plugin_config, decode_service};

    #[test]
    fn decodes_services_and_plugin_configs() {
        let s = decode_service(
            json!({"id": 1, "upstream_id": 2, "hosts": ["a.com"], "labels": {"k": "v"}}).to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!((s.id.as_deref(), s.upstream_id.as_deref()), (Some("1"), Some("2")));
        assert!(decode_service(br#"{"upstream_id": "u", "upstream": {"nodes": {}}}"#).is_err());
        assert!(decode_service(br#"{"bogus": 1}"#).is_err());
        assert!(decode_service(br#"{"hosts": [""]}"#).is_err());
        assert!(decode_service(b"[").is_err());
        let pc = decode_plugin_config(br#"{"id": "p", "plugins": {}}"#).unwrap();
        assert!(pc.plugins.is_empty());
        assert!(decode_plugin_config(br#"{"plugins": {}, "extra": true}"#).is_err());
    }
}
