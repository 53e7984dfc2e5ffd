//! Plugin lists from the resources → APISIX `plugins` maps, and PluginConfig resources → `plugin_configs`.

use serde_json::{Map, Value};
use sluice_crds::Plugin;
use sluice_model::{PluginConfig, Plugins, labels};

use super::secrets::Secrets;
use super::{ObjectRef, Problem, Reason, StatusUpdate, ids};
use crate::config::Config;
use crate::resources::{Resources, name, namespace};

/// The enabled plugins, checked with the data plane's own types: a plugin that is unknown or whose configuration
/// breaks a rule is left out and reported (`InvalidSpec`, naming the plugin and the field).
pub(super) fn map(plugins: &[Plugin], ns: &str, secrets: &Secrets, problems: &mut Vec<Problem>) -> Plugins {
    let mut out = Plugins::default();
    for (name, config) in raw_map(plugins, ns, secrets, problems) {
        match sluice_model::Plugin::decode(&name, config) {
            // Upstream ids are the controller's own: a resource may not aim at another namespace's upstream.
            Ok(sluice_model::Plugin { conf: sluice_model::PluginConf::TrafficSplit(split), .. })
                if split.shares().any(|s| s.upstream_id.is_some()) =>
            {
                let message = "plugin \"traffic-split\": upstream_id cannot be used from a resource; give the rule's \
                               backends a split instead"
                    .to_string();
                problems.push(Problem { reason: Reason::InvalidSpec, message });
            }
            Ok(plugin) => out.insert(plugin),
            Err(e) => problems.push(Problem { reason: Reason::InvalidSpec, message: e.to_string() }),
        }
    }
    out
}

/// The enabled plugins as an APISIX JSON map, not yet checked; a plugin's Secret keys are merged over its
/// written config.
pub(super) fn raw_map(
    plugins: &[Plugin],
    ns: &str,
    secrets: &Secrets,
    problems: &mut Vec<Problem>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for p in plugins.iter().filter(|p| p.enable) {
        let mut config = match &p.config {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                let message = format!("plugin {:?}: config must be an object", p.name);
                problems.push(Problem { reason: Reason::InvalidSpec, message });
                continue;
            }
        };
        if let Some(secret) = &p.secret_ref {
            match secrets.get(ns, secret, &format!("plugin {:?}", p.name)) {
                Ok(values) => config.extend(values.iter().map(|(k, v)| (k.clone(), Value::String(v.clone())))),
                Err(problem) => {
                    problems.push(problem);
                    continue;
                }
            }
        }
        out.insert(p.name.clone(), Value::Object(config));
    }
    out
}

/// The etcd id of the PluginConfig `ns/name`.
pub(super) fn config_id(ns: &str, name: &str) -> String {
    ids::make("pc", &[ns, name])
}

/// Every PluginConfig resource → a plugin config object.
pub(super) fn translate_configs(resources: &Resources, secrets: &Secrets, config: &mut Config) -> Vec<StatusUpdate> {
    let mut statuses = Vec::new();
    for pc in &resources.plugin_configs {
        let (ns, pc_name) = (namespace(&pc.metadata), name(&pc.metadata));
        let object = ObjectRef { kind: "PluginConfig".into(), namespace: ns.into(), name: pc_name.into() };
        let mut problems = Vec::new();
        let plugins = map(&pc.spec.plugins, ns, secrets, &mut problems);
        if problems.is_empty() {
            let id = config_id(ns, pc_name);
            let object = PluginConfig {
                id: Some(id.clone()),
                name: Some(format!("{ns}/{pc_name}")),
                plugins,
                labels: labels::owner("PluginConfig", ns, pc_name),
                ..PluginConfig::default()
            };
            config.plugin_configs.insert(id, object);
        }
        statuses.push(StatusUpdate::new(object, pc.metadata.generation, problems));
    }
    statuses
}

/// Whether a PluginConfig resource `ns/name` exists (a missing one is reported, and the route answers 503
/// until it appears, as APISIX does for an unresolved `plugin_config_id`).
pub(super) fn config_exists(resources: &Resources, ns: &str, pc_name: &str) -> bool {
    resources.plugin_configs.iter().any(|pc| namespace(&pc.metadata) == ns && name(&pc.metadata) == pc_name)
}
