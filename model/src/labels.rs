//! Owner labels carried by every object the controller writes, so ownership follows from the stored data.

use std::collections::BTreeMap;

/// Label naming the writer; only objects with this label set to [`MANAGED_BY_VALUE`] are ever changed or deleted.
pub const MANAGED_BY: &str = "managed-by";
/// The value of [`MANAGED_BY`] on objects written by the sluice controller.
pub const MANAGED_BY_VALUE: &str = "sluice-controller";
/// Label holding the Kubernetes kind of the object that produced this one.
pub const OWNER_KIND: &str = "k8s/kind";
/// Label holding the namespace of the producing Kubernetes object.
pub const OWNER_NAMESPACE: &str = "k8s/namespace";
/// Label holding the name of the producing Kubernetes object.
pub const OWNER_NAME: &str = "k8s/name";

/// The full label set for an object owned by one Kubernetes object.
pub fn owner(kind: &str, namespace: &str, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
        (OWNER_KIND.to_string(), kind.to_string()),
        (OWNER_NAMESPACE.to_string(), namespace.to_string()),
        (OWNER_NAME.to_string(), name.to_string()),
    ])
}

/// Whether a label set marks an object as written by the sluice controller.
pub fn is_managed(labels: &BTreeMap<String, String>) -> bool {
    labels.get(MANAGED_BY).map(String::as_str) == Some(MANAGED_BY_VALUE)
}
