//! sluice's custom resources (ApiRoute, Upstream, PluginConfig, Consumer) live in this API group and version.
//! The resource types themselves, with their generated CRD YAML, arrive with the CRD work; the controller and
//! data plane do not depend on them yet.

/// The API group of every sluice custom resource.
pub const GROUP: &str = "sluice.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
