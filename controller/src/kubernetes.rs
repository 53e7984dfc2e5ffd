//! Kubernetes-API mode: reflectors keep a local copy of every watched kind, any change fires the trigger, and
//! Ingress status is written back with server-side apply.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, IngressLoadBalancerIngress};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef as KubeRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::pipeline::{Reporter, Source};
use crate::resources::Resources;
use crate::translate::StatusUpdate;

/// The field manager that owns every status field sluice writes.
pub const FIELD_MANAGER: &str = "sluice-controller";

/// One RBAC permission the controller needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Access {
    /// The API group (`""` for the core group).
    pub api_group: &'static str,
    /// The resource, with `/status` for the status subresource.
    pub resource: &'static str,
    /// The verbs used.
    pub verbs: &'static [&'static str],
}

/// Every permission the controller uses, and nothing more: reflectors list and watch, status is patched.
/// The mocked-API test checks every request against this list; the Helm chart's RBAC is checked against it.
pub const ACCESS: &[Access] = &[
    Access { api_group: "networking.k8s.io", resource: "ingresses", verbs: &["list", "watch"] },
    Access { api_group: "networking.k8s.io", resource: "ingresses/status", verbs: &["patch"] },
    Access { api_group: "networking.k8s.io", resource: "ingressclasses", verbs: &["list", "watch"] },
    Access { api_group: "", resource: "services", verbs: &["list", "watch"] },
    Access { api_group: "discovery.k8s.io", resource: "endpointslices", verbs: &["list", "watch"] },
];

/// Local copies of every watched kind, kept current by reflectors.
#[derive(Clone)]
pub struct KubeSource {
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
}

impl Source for KubeSource {
    fn snapshot(&mut self) -> Resources {
        fn copy<K: Clone + Resource>(store: &Store<K>) -> Vec<K>
        where
            K::DynamicType: Eq + Hash + Clone,
        {
            store.state().iter().map(|o| (**o).clone()).collect()
        }
        Resources {
            ingresses: copy(&self.ingresses),
            ingress_classes: copy(&self.classes),
            services: copy(&self.services),
            endpoint_slices: copy(&self.slices),
        }
    }
}

/// Writes `status.loadBalancer` of owned Ingresses when it differs from what the API server has.
pub struct StatusWriter {
    client: Client,
    ingresses: Store<Ingress>,
    /// What we last wrote per Ingress, with the resourceVersion the cache held then: until the cache shows a
    /// newer version, our write is assumed to be in flight rather than lost, so it is not repeated every sync.
    written: HashMap<KubeRef<Ingress>, (Option<String>, Vec<IngressLoadBalancerIngress>)>,
}

impl Reporter for StatusWriter {
    async fn report(&mut self, statuses: &[StatusUpdate]) {
        for s in statuses.iter().filter(|s| s.object.kind == "Ingress") {
            let key = KubeRef::new(&s.object.name).within(&s.object.namespace);
            let cached = self.ingresses.get(&key);
            let version = cached.as_ref().and_then(|i| i.metadata.resource_version.clone());
            let current: Vec<IngressLoadBalancerIngress> = cached
                .and_then(|i| i.status.clone())
                .and_then(|st| st.load_balancer)
                .and_then(|lb| lb.ingress)
                .unwrap_or_default();
            let in_flight = self.written.get(&key).is_some_and(|(v, lb)| *v == version && *lb == s.load_balancer);
            if current == s.load_balancer || in_flight {
                continue;
            }
            let api: Api<Ingress> = Api::namespaced(self.client.clone(), &s.object.namespace);
            let patch = serde_json::json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "status": {"loadBalancer": {"ingress": s.load_balancer}},
            });
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match api.patch_status(&s.object.name, &params, &Patch::Apply(&patch)).await {
                Ok(_) => {
                    tracing::info!(object = %s.object, "status updated");
                    self.written.insert(key, (version, s.load_balancer.clone()));
                }
                Err(e) => tracing::warn!(object = %s.object, error = %e, "status update failed; retried on next sync"),
            }
        }
    }
}

/// Starts a reflector per watched kind and waits until each has listed once, so the first translation never
/// sees a half-loaded cluster (which would delete routes whose Services are simply not listed yet).
pub async fn start(client: Client, trigger: Arc<Notify>) -> (KubeSource, StatusWriter) {
    let source = KubeSource {
        ingresses: reflect(Api::all(client.clone()), trigger.clone()),
        classes: reflect(Api::all(client.clone()), trigger.clone()),
        services: reflect(Api::all(client.clone()), trigger.clone()),
        slices: reflect(Api::all(client.clone()), trigger),
    };
    let waits = [
        source.ingresses.wait_until_ready().await,
        source.classes.wait_until_ready().await,
        source.services.wait_until_ready().await,
        source.slices.wait_until_ready().await,
    ];
    if waits.iter().any(Result::is_err) {
        tracing::error!("a reflector stopped before its first list completed");
    }
    tracing::info!("initial list of every watched kind complete");
    let reporter = StatusWriter { client, ingresses: source.ingresses.clone(), written: HashMap::new() };
    (source, reporter)
}

fn reflect<K>(api: Api<K>, trigger: Arc<Notify>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    // managedFields are large and never read: dropping them keeps the cache small in big clusters.
    let stream = watcher(api, watcher::Config::default()).default_backoff().modify(|o: &mut K| {
        o.managed_fields_mut().clear();
    });
    let mut events = Box::pin(reflector::reflector(writer, stream));
    let kind = K::kind(&K::DynamicType::default()).to_string();
    tokio::spawn(async move {
        let mut failures: HashMap<String, u32> = HashMap::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => trigger.notify_one(),
                Err(e) => {
                    let n = failures.entry(e.to_string()).or_default();
                    *n += 1;
                    tracing::warn!(%kind, error = %e, repeats = *n, "watch failed; retrying with backoff");
                }
            }
        }
    });
    store
}
