//! Consumer resources → APISIX consumers with their credential plugins.

use serde_json::{Map, Value, json};
use sluice_model::{Consumer, ConsumerPlugins, labels};

use super::secrets::Secrets;
use super::{ObjectRef, Problem, StatusUpdate, plugins};
use crate::config::Config;
use crate::resources::{Resources, name, namespace};

/// APISIX user names allow letters, digits and `_` only: `<namespace>_<name>` with the rest replaced.
pub(super) fn username(ns: &str, consumer: &str) -> String {
    format!("{ns}_{consumer}").chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

pub(super) fn translate(resources: &Resources, secrets: &Secrets, config: &mut Config) -> Vec<StatusUpdate> {
    let mut statuses = Vec::new();
    for c in &resources.consumers {
        let (ns, c_name) = (namespace(&c.metadata), name(&c.metadata));
        let object = ObjectRef { kind: "Consumer".into(), namespace: ns.into(), name: c_name.into() };
        let mut problems = Vec::new();
        let mut plugins = plugins::raw_map(&c.spec.plugins, ns, secrets, &mut problems);
        if let Some(auth) = &c.spec.auth_parameter {
            let mut credential = |plugin: &str, value: Result<Value, Problem>| match value {
                Ok(v) => {
                    plugins.insert(plugin.to_string(), v);
                }
                Err(p) => problems.push(p),
            };
            if let Some(k) = &auth.key_auth {
                credential(
                    "key-auth",
                    match (&k.value, &k.secret_ref) {
                        (Some(v), _) => Ok(json!({"key": v.key})),
                        (None, Some(s)) => secrets.key(ns, &s.name, "key", "keyAuth").map(|key| json!({"key": key})),
                        (None, None) => Err(invalid("keyAuth needs value or secretRef")),
                    },
                );
            }
            if let Some(b) = &auth.basic_auth {
                credential(
                    "basic-auth",
                    match (&b.value, &b.secret_ref) {
                        (Some(v), _) => Ok(json!({"username": v.username, "password": v.password})),
                        (None, Some(s)) => secrets.key(ns, &s.name, "username", "basicAuth").and_then(|u| {
                            let p = secrets.key(ns, &s.name, "password", "basicAuth")?;
                            Ok(json!({"username": u, "password": p}))
                        }),
                        (None, None) => Err(invalid("basicAuth needs value or secretRef")),
                    },
                );
            }
            if let Some(j) = &auth.jwt_auth {
                credential(
                    "jwt-auth",
                    match (&j.value, &j.secret_ref) {
                        (Some(v), _) => {
                            let mut m = Map::new();
                            m.insert("key".into(), json!(v.key));
                            let optional =
                                [("secret", &v.secret), ("public_key", &v.public_key), ("algorithm", &v.algorithm)];
                            for (k, val) in optional {
                                if let Some(val) = val {
                                    m.insert(k.into(), json!(val));
                                }
                            }
                            if let Some(exp) = v.exp {
                                m.insert("exp".into(), json!(exp));
                            }
                            Ok(Value::Object(m))
                        }
                        (None, Some(s)) => secrets.get(ns, &s.name, "jwtAuth").and_then(|values| {
                            let mut m = Map::new();
                            for k in ["key", "secret", "public_key", "algorithm"] {
                                if let Some(v) = values.get(k) {
                                    m.insert(k.into(), json!(v));
                                }
                            }
                            if let Some(exp) = values.get("exp").and_then(|e| e.parse::<i64>().ok()) {
                                m.insert("exp".into(), json!(exp));
                            }
                            if m.contains_key("key") {
                                Ok(Value::Object(m))
                            } else {
                                Err(invalid("jwtAuth Secret needs a key"))
                            }
                        }),
                        (None, None) => Err(invalid("jwtAuth needs value or secretRef")),
                    },
                );
            }
        }
        // Checked with the data plane's types: credentials against each auth plugin's consumer schema.
        let plugins = match ConsumerPlugins::from_json(plugins) {
            Ok(plugins) => plugins,
            Err(e) => {
                problems.push(invalid(&e.to_string()));
                ConsumerPlugins::default()
            }
        };
        if problems.is_empty() {
            let username = username(ns, c_name);
            let consumer = Consumer {
                username: username.clone(),
                desc: Some(format!("{ns}/{c_name}")),
                plugins,
                labels: labels::owner("Consumer", ns, c_name),
                ..Consumer::default()
            };
            // The data plane's own check of the whole object (a plugin that consumers cannot carry, say).
            match consumer.validate() {
                Ok(()) => {
                    config.consumers.insert(username, consumer);
                }
                Err(e) => problems.push(invalid(&e.to_string())),
            }
        }
        statuses.push(StatusUpdate::new(object, c.metadata.generation, problems));
    }
    statuses
}

fn invalid(message: &str) -> Problem {
    Problem { reason: super::Reason::InvalidSpec, message: message.to_string() }
}
