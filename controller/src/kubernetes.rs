//! Kubernetes-API mode: reflectors keep a local copy of every watched kind, any change fires the trigger, and
//! status goes back with server-side apply (Ingress `status.loadBalancer`, conditions on sluice resources), with
//! an Event for each new problem.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, IngressLoadBalancerIngress};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter as EventReporter};
use kube::runtime::reflector::{self, ObjectRef as KubeRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use sluice_crds::{ApiRoute, Consumer, PluginConfig, ResourceStatus, Upstream};
use tokio::sync::Notify;

use crate::conditions;
use crate::pipeline::{Reporter, Source};
use crate::resources::Resources;
use crate::translate::{ObjectRef, StatusUpdate};

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

const WATCH: &[&str] = &["list", "watch"];
const PATCH: &[&str] = &["patch"];

/// Every permission the controller uses, and nothing more: reflectors list and watch, status is patched, Events
/// are created (and patched when they repeat), the leader Lease is read, created and renewed.
/// The mocked-API test checks every request against this list; the Helm chart's RBAC is checked against it.
pub const ACCESS: &[Access] = &[
    Access { api_group: "networking.k8s.io", resource: "ingresses", verbs: WATCH },
    Access { api_group: "networking.k8s.io", resource: "ingresses/status", verbs: PATCH },
    Access { api_group: "networking.k8s.io", resource: "ingressclasses", verbs: WATCH },
    Access { api_group: "", resource: "services", verbs: WATCH },
    Access { api_group: "", resource: "secrets", verbs: WATCH },
    Access { api_group: "", resource: "pods", verbs: WATCH },
    Access { api_group: "discovery.k8s.io", resource: "endpointslices", verbs: WATCH },
    Access { api_group: "sluice.dev", resource: "apiroutes", verbs: WATCH },
    Access { api_group: "sluice.dev", resource: "apiroutes/status", verbs: PATCH },
    Access { api_group: "sluice.dev", resource: "upstreams", verbs: WATCH },
    Access { api_group: "sluice.dev", resource: "upstreams/status", verbs: PATCH },
    Access { api_group: "sluice.dev", resource: "pluginconfigs", verbs: WATCH },
    Access { api_group: "sluice.dev", resource: "pluginconfigs/status", verbs: PATCH },
    Access { api_group: "sluice.dev", resource: "consumers", verbs: WATCH },
    Access { api_group: "sluice.dev", resource: "consumers/status", verbs: PATCH },
    Access { api_group: "events.k8s.io", resource: "events", verbs: &["create", "patch"] },
    Access { api_group: "coordination.k8s.io", resource: "leases", verbs: &["get", "create", "update"] },
];

/// Local copies of every watched kind, kept current by reflectors.
#[derive(Clone)]
pub struct KubeSource {
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    secrets: Store<Secret>,
    pods: Store<PartialObjectMeta<Pod>>,
    api_routes: Store<ApiRoute>,
    upstreams: Store<Upstream>,
    plugin_configs: Store<PluginConfig>,
    consumers: Store<Consumer>,
}

fn copy<K: Clone + Resource>(store: &Store<K>) -> Vec<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store.state().iter().map(|o| (**o).clone()).collect()
}

impl Source for KubeSource {
    fn snapshot(&mut self) -> Resources {
        Resources {
            ingresses: copy(&self.ingresses),
            ingress_classes: copy(&self.classes),
            services: copy(&self.services),
            endpoint_slices: copy(&self.slices),
            secrets: copy(&self.secrets),
            pods: self.pods.state().iter().map(|p| Pod { metadata: p.metadata.clone(), ..Pod::default() }).collect(),
            api_routes: copy(&self.api_routes),
            upstreams: copy(&self.upstreams),
            plugin_configs: copy(&self.plugin_configs),
            consumers: copy(&self.consumers),
        }
    }
}

/// Writes status back to the API server when it differs from what the cache shows, and records Events.
pub struct StatusWriter {
    client: Client,
    source: KubeSource,
    recorder: Recorder,
    /// What we last wrote per object, with the resourceVersion the cache held then: until the cache shows a
    /// newer version, our write is assumed to be in flight rather than lost, so it is not repeated every sync.
    written: HashMap<ObjectRef, (Option<String>, String)>,
    /// Problems already announced with an Event.
    announced: BTreeSet<(ObjectRef, String)>,
}

/// What the cache knows of one object.
struct Cached {
    version: Option<String>,
    reference: ObjectReference,
    conditions: Vec<Condition>,
    load_balancer: Vec<IngressLoadBalancerIngress>,
}

fn cached<K>(store: &Store<K>, object: &ObjectRef, status: impl Fn(&K) -> Option<&ResourceStatus>) -> Option<Cached>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let found = store.get(&KubeRef::new(&object.name).within(&object.namespace))?;
    Some(Cached {
        version: found.meta().resource_version.clone(),
        reference: found.object_ref(&()),
        conditions: status(&found).map(|s| s.conditions.clone()).unwrap_or_default(),
        load_balancer: Vec::new(),
    })
}

impl StatusWriter {
    fn lookup(&self, object: &ObjectRef) -> Option<Cached> {
        let s = &self.source;
        match object.kind.as_str() {
            "Ingress" => {
                let found = s.ingresses.get(&KubeRef::new(&object.name).within(&object.namespace))?;
                let lb = found.status.as_ref().and_then(|st| st.load_balancer.as_ref()).and_then(|l| l.ingress.clone());
                Some(Cached {
                    version: found.metadata.resource_version.clone(),
                    reference: found.object_ref(&()),
                    conditions: Vec::new(),
                    load_balancer: lb.unwrap_or_default(),
                })
            }
            "ApiRoute" => cached(&s.api_routes, object, |o| o.status.as_ref()),
            "Upstream" => cached(&s.upstreams, object, |o| o.status.as_ref()),
            "PluginConfig" => cached(&s.plugin_configs, object, |o| o.status.as_ref()),
            "Consumer" => cached(&s.consumers, object, |o| o.status.as_ref()),
            _ => None,
        }
    }

    async fn announce(&mut self, update: &StatusUpdate, reference: &ObjectReference) {
        for p in &update.problems {
            let key = (update.object.clone(), p.message.clone());
            if self.announced.contains(&key) {
                continue;
            }
            let event = Event {
                type_: EventType::Warning,
                reason: p.reason.as_str().to_string(),
                note: Some(p.message.chars().take(1024).collect()),
                action: "Translate".into(),
                secondary: None,
            };
            match self.recorder.publish(&event, reference).await {
                Ok(()) => {
                    self.announced.insert(key);
                }
                Err(e) => tracing::warn!(object = %update.object, error = %e, "recording an Event failed"),
            }
        }
        self.announced.retain(|(o, m)| o != &update.object || update.problems.iter().any(|p| &p.message == m));
    }
}

async fn apply_status<K>(client: &Client, object: &ObjectRef, body: serde_json::Value) -> kube::Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &object.namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&object.name, &params, &Patch::Apply(&body)).await.map(|_| ())
}

impl Reporter for StatusWriter {
    async fn report(&mut self, statuses: &[StatusUpdate], synced: Result<(), &str>) {
        for update in statuses {
            let Some(cached) = self.lookup(&update.object) else { continue };
            self.announce(update, &cached.reference).await;
            let kind = update.object.kind.as_str();
            // The digest leaves out transition times, so that an unchanged status is recognised as unchanged.
            let (body, digest) = if kind == "Ingress" {
                if cached.load_balancer == update.load_balancer {
                    continue;
                }
                let body = serde_json::json!({
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "Ingress",
                    "status": {"loadBalancer": {"ingress": update.load_balancer}},
                });
                let digest = body.to_string();
                (body, digest)
            } else {
                let wanted = conditions::conditions(update, synced, &cached.conditions);
                if conditions::same(&wanted, &cached.conditions) {
                    continue;
                }
                let digest: Vec<_> = wanted
                    .iter()
                    .map(|c| (&c.type_, &c.status, &c.reason, &c.message, c.observed_generation))
                    .collect();
                let digest = format!("{digest:?}");
                let body = serde_json::json!({
                    "apiVersion": "sluice.dev/v1alpha1",
                    "kind": kind,
                    "status": {"conditions": wanted, "observedGeneration": update.generation},
                });
                (body, digest)
            };
            if self.written.get(&update.object).is_some_and(|(v, d)| *v == cached.version && *d == digest) {
                continue;
            }
            let result = match kind {
                "Ingress" => apply_status::<Ingress>(&self.client, &update.object, body).await,
                "ApiRoute" => apply_status::<ApiRoute>(&self.client, &update.object, body).await,
                "Upstream" => apply_status::<Upstream>(&self.client, &update.object, body).await,
                "PluginConfig" => apply_status::<PluginConfig>(&self.client, &update.object, body).await,
                "Consumer" => apply_status::<Consumer>(&self.client, &update.object, body).await,
                _ => continue,
            };
            match result {
                Ok(()) => {
                    tracing::info!(object = %update.object, "status updated");
                    self.written.insert(update.object.clone(), (cached.version, digest));
                }
                Err(e) => {
                    tracing::warn!(object = %update.object, error = %e, "status update failed; retried on next sync")
                }
            }
        }
    }
}

/// Starts a reflector per watched kind and waits until each has listed once, so the first translation never
/// sees a half-loaded cluster (which would delete routes whose Services are simply not listed yet).
pub async fn start(client: Client, trigger: Arc<Notify>, instance: String) -> (KubeSource, StatusWriter) {
    let pods = {
        let (store, writer) = reflector::store();
        let stream = watcher(Api::<PartialObjectMeta<Pod>>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(|p: &mut PartialObjectMeta<Pod>| p.managed_fields_mut().clear());
        drive("Pod", reflector::reflector(writer, stream), trigger.clone());
        store
    };
    let source = KubeSource {
        ingresses: reflect(Api::all(client.clone()), trigger.clone()),
        classes: reflect(Api::all(client.clone()), trigger.clone()),
        services: reflect(Api::all(client.clone()), trigger.clone()),
        slices: reflect(Api::all(client.clone()), trigger.clone()),
        secrets: reflect(Api::all(client.clone()), trigger.clone()),
        pods,
        api_routes: reflect(Api::all(client.clone()), trigger.clone()),
        upstreams: reflect(Api::all(client.clone()), trigger.clone()),
        plugin_configs: reflect(Api::all(client.clone()), trigger.clone()),
        consumers: reflect(Api::all(client.clone()), trigger),
    };
    let s = &source;
    let waits = [
        s.ingresses.wait_until_ready().await,
        s.classes.wait_until_ready().await,
        s.services.wait_until_ready().await,
        s.slices.wait_until_ready().await,
        s.secrets.wait_until_ready().await,
        s.pods.wait_until_ready().await,
        s.api_routes.wait_until_ready().await,
        s.upstreams.wait_until_ready().await,
        s.plugin_configs.wait_until_ready().await,
        s.consumers.wait_until_ready().await,
    ];
    if waits.iter().any(Result::is_err) {
        tracing::error!("a reflector stopped before its first list completed");
    }
    tracing::info!("initial list of every watched kind complete");
    let reporter = EventReporter { controller: FIELD_MANAGER.into(), instance: Some(instance) };
    let writer = StatusWriter {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        source: source.clone(),
        written: HashMap::new(),
        announced: BTreeSet::new(),
    };
    (source, writer)
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
    let kind = K::kind(&K::DynamicType::default()).to_string();
    drive(&kind, reflector::reflector(writer, stream), trigger);
    store
}

/// Runs a reflector stream, firing the trigger on every event.
fn drive<S, T>(kind: &str, stream: S, trigger: Arc<Notify>)
where
    S: futures::Stream<Item = Result<T, watcher::Error>> + Send + 'static,
{
    let kind = kind.to_string();
    let mut events = Box::pin(stream);
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => trigger.notify_one(),
                Err(e) => tracing::warn!(%kind, error = %e, "watch failed; retrying with backoff"),
            }
        }
    });
}
