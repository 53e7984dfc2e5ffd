//! Plugin configs and consumers: the objects that carry plugin sets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::validate::{self, InvalidId, InvalidLabel};

/// A reusable plugin set under `<prefix>/plugin_configs/<id>`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PluginConfig {
    /// The id, also the last segment of the key.
    #[serde(default, deserialize_with = "crate::id::opt", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    /// Plugins by name with their configuration.
    #[serde(default)]
    pub plugins: Map<String, Value>,
    /// Labels; the controller uses them to record ownership.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Creation time as the Admin API records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<i64>,
    /// Last update time as the Admin API records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<i64>,
    /// Fields this version does not know; any makes the object invalid rather than silently ignored.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// An API caller under `<prefix>/consumers/<username>`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Consumer {
    /// The user name, also the last segment of the key.
    pub username: String,
    /// A free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    /// Plugins by name, credentials (`key-auth`, `basic-auth`, `jwt-auth`) among them.
    #[serde(default)]
    pub plugins: Map<String, Value>,
    /// Labels; the controller uses them to record ownership.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Creation time as the Admin API records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<i64>,
    /// Last update time as the Admin API records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<i64>,
}

/// Why a plugin config or consumer is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidPluginSet {
    /// The id breaks APISIX's id rule.
    #[error(transparent)]
    Id(#[from] InvalidId),
    /// A label breaks APISIX's label rule.
    #[error(transparent)]
    Label(#[from] InvalidLabel),
    /// A consumer user name breaks APISIX's rule.
    #[error("username {0:?} must be 1 to 100 characters of letters, digits and '_'")]
    Username(String),
    /// A field this version does not know.
    #[error("unknown field {0:?}")]
    UnknownField(String),
    /// A plugin's configuration is not an object.
    #[error("plugin {0:?} must be configured with an object")]
    PluginConfig(String),
}

fn plugins(map: &Map<String, Value>) -> Result<(), InvalidPluginSet> {
    match map.iter().find(|(_, v)| !v.is_object()) {
        Some((name, _)) => Err(InvalidPluginSet::PluginConfig(name.clone())),
        None => Ok(()),
    }
}

impl PluginConfig {
    /// Checks the rules APISIX applies to plugin configs.
    pub fn validate(&self) -> Result<(), InvalidPluginSet> {
        validate::id(self.id.as_deref())?;
        validate::labels(&self.labels)?;
        if let Some(field) = self.unknown.keys().next() {
            return Err(InvalidPluginSet::UnknownField(field.clone()));
        }
        plugins(&self.plugins)
    }
}

impl Consumer {
    /// Checks the rules APISIX applies to consumers.
    pub fn validate(&self) -> Result<(), InvalidPluginSet> {
        let u = &self.username;
        if u.is_empty() || u.len() > 100 || !u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(InvalidPluginSet::Username(u.clone()));
        }
        validate::labels(&self.labels)?;
        plugins(&self.plugins)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_admin_api_examples() {
        let c: Consumer = serde_json::from_value(json!({"username": "jack",
            "plugins": {"key-auth": {"key": "auth-one"}, "limit-count": {"count": 2, "time_window": 60}}}))
        .unwrap();
        c.validate().unwrap();
        let p: PluginConfig = serde_json::from_value(json!({"id": 1, "desc": "limits",
            "plugins": {"limit-count": {"count": 2, "time_window": 60, "rejected_code": 503}}}))
        .unwrap();
        p.validate().unwrap();
        assert_eq!(p.id.as_deref(), Some("1"));
        let bad: Consumer = serde_json::from_value(json!({"username": "a-b", "plugins": {}})).unwrap();
        assert!(matches!(bad.validate(), Err(InvalidPluginSet::Username(_))));
        let bad: PluginConfig = serde_json::from_value(json!({"plugins": {"cors": true}})).unwrap();
        assert_eq!(bad.validate(), Err(InvalidPluginSet::PluginConfig("cors".into())));
    }
}
