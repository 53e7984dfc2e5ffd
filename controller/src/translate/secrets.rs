//! Secret values by namespace and name, decoded to text (`data` is base64 on the wire; `stringData`, allowed in
//! manifests, is plain).

use std::collections::{BTreeMap, HashMap};

use super::{Problem, Reason};
use crate::resources::{Resources, name, namespace};

/// Every Secret's keys as text.
pub(super) struct Secrets {
    by_name: HashMap<(String, String), BTreeMap<String, String>>,
}

impl Secrets {
    pub(super) fn new(resources: &Resources) -> Secrets {
        let by_name = resources
            .secrets
            .iter()
            .map(|s| {
                let mut values: BTreeMap<String, String> = s
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                values.extend(s.string_data.clone().unwrap_or_default());
                ((namespace(&s.metadata).to_string(), name(&s.metadata).to_string()), values)
            })
            .collect();
        Secrets { by_name }
    }

    /// The keys of Secret `ns/name`, or a `RefNotFound` problem naming who wanted it.
    pub(super) fn get(&self, ns: &str, name: &str, wanted_by: &str) -> Result<&BTreeMap<String, String>, Problem> {
        self.by_name.get(&(ns.to_string(), name.to_string())).ok_or_else(|| Problem {
            reason: Reason::RefNotFound,
            message: format!("{wanted_by}: Secret {ns}/{name} not found"),
        })
    }

    /// One key of Secret `ns/name`, or a problem saying which is missing.
    pub(super) fn key(&self, ns: &str, name: &str, key: &str, wanted_by: &str) -> Result<String, Problem> {
        self.get(ns, name, wanted_by)?.get(key).cloned().ok_or_else(|| Problem {
            reason: Reason::InvalidSpec,
            message: format!("{wanted_by}: Secret {ns}/{name} has no key {key:?}"),
        })
    }
}
