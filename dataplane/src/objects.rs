//! Services and plugin configs in APISIX's JSON shapes.
//!
//! They belong in `sluice-model` next to routes and upstreams; they live here until they move there, with the
//! same conventions: ids as strings or numbers, unknown fields make the object invalid rather than ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use sluice_model::{DecodeError, InvalidUpstream, Upstream};

/// A service as stored under `<prefix>/services/<id>`: an upstream and plugins shared by the routes naming it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Service {
    /// The id, also the last segment of the key.
    #[serde(default, deserialize_with = "opt_id", skip_serializing_if = "Option::is_none")]
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
    #[serde(default, deserialize_with = "opt_id", skip_serializing_if = "Option::is_none")]
    pub upstream_id: Option<String>,
    /// Plugins shared by the service's routes (a route's own configuration of a plugin wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<Map<String, Value>>,
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

/// A reusable plugin set as stored under `<prefix>/plugin_configs/<id>`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PluginConfig {
    /// The id, also the last segment of the key.
    #[serde(default, deserialize_with = "opt_id", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    /// Plugins by name with their configuration (required by APISIX, possibly empty).
    #[serde(default)]
    pub plugins: Map<String, Value>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Creation time (seconds since the epoch) as the Admin API records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<i64>,
    /// Last update time (seconds since the epoch) as the Admin API records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<i64>,
    /// Fields this version does not know; any makes the object invalid.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// Why a service or plugin config is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidObject {
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

/// Why bytes read from etcd are not a usable service or plugin config.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// Not JSON of the expected shape.
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Well-formed JSON breaking a rule.
    #[error("invalid: {0}")]
    Invalid(#[from] InvalidObject),
}

impl From<DecodeError> for ObjectError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Json(j) => ObjectError::Json(j),
            DecodeError::Upstream(u) => ObjectError::Invalid(InvalidObject::Upstream(u)),
            // Not produced for these kinds; keep the message.
            DecodeError::Route(r) => ObjectError::Invalid(InvalidObject::UnknownField(r.to_string())),
        }
    }
}

impl Service {
    /// Checks the rules a service must follow.
    pub fn validate(&self) -> Result<(), InvalidObject> {
        if let Some(field) = self.unknown.keys().next() {
            return Err(InvalidObject::UnknownField(field.clone()));
        }
        if self.upstream.is_some() && self.upstream_id.is_some() {
            return Err(InvalidObject::Upstreams);
        }
        if let Some(h) = self.hosts.iter().flatten().find(|h| h.is_empty() || h.contains(char::is_whitespace)) {
            return Err(InvalidObject::Host(h.clone()));
        }
        if let Some(up) = &self.upstream {
            up.validate()?;
        }
        Ok(())
    }
}

/// Parses and validates a service.
pub fn decode_service(bytes: &[u8]) -> Result<Service, ObjectError> {
    let service: Service = serde_json::from_slice(bytes)?;
    service.validate()?;
    Ok(service)
}

/// Parses and validates a plugin config.
pub fn decode_plugin_config(bytes: &[u8]) -> Result<PluginConfig, ObjectError> {
    let pc: PluginConfig = serde_json::from_slice(bytes)?;
    if let Some(field) = pc.unknown.keys().next() {
        return Err(InvalidObject::UnknownField(field.clone()).into());
    }
    Ok(pc)
}

/// An id written as a JSON string or number.
fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum RawId {
        Text(String),
        Number(serde_json::Number),
    }
    Ok(Option::<RawId>::deserialize(d)?.map(|raw| match raw {
        RawId::Text(s) => s,
        RawId::Number(n) => n.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
