//! Plugin configs and consumers: the objects that carry plugin sets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plugins::{ConsumerPlugins, Plugins};

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
    pub plugins: Plugins,
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

/// Plugins run on every request, under `<prefix>/global_rules/<id>`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GlobalRule {
    /// The id, also the last segment of the key.
    #[serde(default, deserialize_with = "crate::id::opt", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Plugins by name with their configuration.
    #[serde(default)]
    pub plugins: Plugins,
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
    /// Credentials of authentication plugins (`key-auth`, `basic-auth`, `jwt-auth`, `hmac-auth`) and other
    /// plugins, which run for the consumer's requests.
    #[serde(default)]
    pub plugins: ConsumerPlugins,
    /// Labels; the controller uses them to record ownership.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Creation time as the Admin API records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<i64>,
    /// Last update time as the Admin API records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<i64>,
    /// Fields this version does not know; any makes the consumer invalid rather than silently ignored.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
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
    /// A plugin that works only where a route resolves its upstreams (routes, services, plugin configs).
    #[error("plugin {plugin:?} cannot be used on a {object}")]
    Misplaced {
        /// The plugin.
        plugin: &'static str,
        /// The kind of object carrying it.
        object: &'static str,
    },
}

/// Plugins that choose among upstreams: resolved with the route, so not on consumers or global rules.
const ROUTE_ONLY: &[&str] = &["traffic-split"];

fn route_only(plugins: &crate::Plugins, object: &'static str) -> Result<(), InvalidPluginSet> {
    match ROUTE_ONLY.iter().find(|name| plugins.get(name).is_some()) {
        Some(plugin) => Err(InvalidPluginSet::Misplaced { plugin, object }),
        None => Ok(()),
    }
}

impl PluginConfig {
    /// Checks the rules APISIX applies to plugin configs.
    pub fn validate(&self) -> Result<(), InvalidPluginSet> {
        validate::id(self.id.as_deref())?;
        validate::labels(&self.labels)?;
        unknown(&self.unknown)
    }
}

impl GlobalRule {
    /// Checks the rules APISIX applies to global rules.
    pub fn validate(&self) -> Result<(), InvalidPluginSet> {
        validate::id(self.id.as_deref())?;
        route_only(&self.plugins, "global rule")?;
        unknown(&self.unknown)
    }
}

fn unknown(fields: &BTreeMap<String, Value>) -> Result<(), InvalidPluginSet> {
    match fields.keys().next() {
        Some(field) => Err(InvalidPluginSet::UnknownField(field.clone())),
        None => Ok(()),
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
        route_only(&self.plugins.plugins, "consumer")?;
        unknown(&self.unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_admin_api_examples() {
        let c: Consumer = serde_json::from_value(json!({"username": "jack",
            "plugins": {"key-auth": {"key": "auth-one"}, "proxy-rewrite": {"uri": "/x"}}}))
        .unwrap();
        c.validate().unwrap();
        assert!(c.plugins.credential("key-auth").is_some() && c.plugins.plugins.get("proxy-rewrite").is_some());
        let p: PluginConfig = serde_json::from_value(json!({"id": 1, "desc": "rewrite",
            "plugins": {"proxy-rewrite": {"uri": "/x"}}}))
        .unwrap();
        p.validate().unwrap();
        assert_eq!(p.id.as_deref(), Some("1"));
        let bad: Consumer = serde_json::from_value(json!({"username": "a-b", "plugins": {}})).unwrap();
        assert!(matches!(bad.validate(), Err(InvalidPluginSet::Username(_))));
        assert!(serde_json::from_value::<PluginConfig>(json!({"plugins": {"proxy-rewrite": true}})).is_err());
        assert!(serde_json::from_value::<Consumer>(json!({"username": "a", "plugins": {"key-auth": {}}})).is_err());
        let g: GlobalRule = serde_json::from_value(json!({"id": "g", "plugins": {"prometheus": {}}})).unwrap();
        g.validate().unwrap();
        let split = json!({"traffic-split": {"rules": []}});
        let g: GlobalRule = serde_json::from_value(json!({"id": "g", "plugins": split.clone()})).unwrap();
        assert!(matches!(g.validate(), Err(InvalidPluginSet::Misplaced { plugin: "traffic-split", .. })));
        let c: Consumer = serde_json::from_value(json!({"username": "a", "plugins": split})).unwrap();
        assert_eq!(c.validate().unwrap_err().to_string(), "plugin \"traffic-split\" cannot be used on a consumer");
    }
}
