//! The bundle of Kubernetes objects the translator reads: one consistent snapshot of every watched kind.

use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sluice_crds::{ApiRoute, Consumer, PluginConfig, Upstream};

/// Every object the translator may look at, as plain values (no IO behind them).
#[derive(Debug, Clone, Default)]
pub struct Resources {
    /// networking.k8s.io/v1 Ingress objects, of every class.
    pub ingresses: Vec<Ingress>,
    /// networking.k8s.io/v1 IngressClass objects.
    pub ingress_classes: Vec<IngressClass>,
    /// v1 Service objects.
    pub services: Vec<Service>,
    /// discovery.k8s.io/v1 EndpointSlice objects.
    pub endpoint_slices: Vec<EndpointSlice>,
    /// v1 Secret objects (credentials, plugin secrets, upstream client certificates).
    pub secrets: Vec<Secret>,
    /// v1 Pods, of which only the metadata is read (labels, for Upstream subsets).
    pub pods: Vec<Pod>,
    /// sluice.dev ApiRoutes.
    pub api_routes: Vec<ApiRoute>,
    /// sluice.dev Upstreams.
    pub upstreams: Vec<Upstream>,
    /// sluice.dev PluginConfigs.
    pub plugin_configs: Vec<PluginConfig>,
    /// sluice.dev Consumers.
    pub consumers: Vec<Consumer>,
}

/// The namespace of an object, `default` when unset (as `kubectl apply` would fill it).
pub fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().filter(|ns| !ns.is_empty()).unwrap_or("default")
}

/// The name of an object, empty when unset.
pub fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}
