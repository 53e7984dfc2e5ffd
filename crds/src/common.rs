//! Types shared by several resources: plugins, timeouts, Secret references and the status block.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One plugin with its configuration, as in APISIX's `plugins` map.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plugin {
    /// The plugin name, for example `key-auth` or `limit-count`.
    #[schemars(length(min = 1, max = 64), pattern(r"^[a-z0-9][a-z0-9-]*$"))]
    pub name: String,
    /// Whether the plugin runs; a disabled plugin is kept in the spec but not written.
    #[serde(default = "enabled")]
    pub enable: bool,
    /// The plugin's configuration, passed through as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub config: Option<serde_json::Value>,
    /// A Secret in the same namespace whose keys are merged into `config`, for sensitive values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
}

fn enabled() -> bool {
    true
}

/// A free-form JSON object that the API server keeps as written.
pub fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// Timeouts as durations such as `5s`, `500ms` or `1m`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeout {
    /// Time allowed to open a connection to a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+(\.[0-9]+)?(ms|s|m)$"))]
    pub connect: Option<String>,
    /// Time allowed between two writes to a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+(\.[0-9]+)?(ms|s|m)$"))]
    pub send: Option<String>,
    /// Time allowed between two reads from a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+(\.[0-9]+)?(ms|s|m)$"))]
    pub read: Option<String>,
}

/// A Secret by name, in the namespace of the referring object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The status every sluice resource reports: `Accepted` and `Programmed` conditions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// `Accepted`: the spec is valid and its references resolve. `Programmed`: it is written to etcd.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Parses `5s`, `500ms`, `1.5m` into seconds.
pub fn parse_duration(text: &str) -> Option<f64> {
    let (number, unit) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        return None;
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value > 0.0).then_some(value * unit)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("5s"), Some(5.0));
        assert_eq!(parse_duration("500ms"), Some(0.5));
        assert_eq!(parse_duration("1.5m"), Some(90.0));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("5h"), None);
    }
}
