//! PluginConfig: a reusable set of plugins, referenced by ApiRoute rules and Ingresses.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{Plugin, ResourceStatus};

/// The plugins of a PluginConfig.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "PluginConfig",
    plural = "pluginconfigs",
    shortname = "pc",
    category = "sluice",
    namespaced,
    status = "ResourceStatus",
    printcolumn = r#"{"name":"Plugins","type":"string","jsonPath":".spec.plugins[*].name"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PluginConfigSpec {
    /// The plugins, each name at most once.
    #[schemars(length(min = 1, max = 100))]
    #[x_kube(validation = Rule::new("self.all(a, self.filter(b, b.name == a.name).size() == 1)").message("plugin names must be unique"))]
    pub plugins: Vec<Plugin>,
}
