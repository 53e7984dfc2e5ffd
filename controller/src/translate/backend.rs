//! Resolving an Ingress backend to an upstream: Service → port → ready EndpointSlice addresses.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::api::networking::v1::IngressServiceBackend;
use sluice_model::{Node, Nodes, Upstream, labels};

use super::{Problem, Reason, ids};
use crate::resources::{name, namespace};

/// The label EndpointSlices carry naming their Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Weight given to every endpoint; equal weights spread evenly, and leave room for finer ones later.
const NODE_WEIGHT: u32 = 100;

/// Services and EndpointSlices indexed by namespace and Service name.
pub(super) struct Index<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
}

/// A backend resolved as far as it could be.
pub(super) struct Resolved {
    /// The upstream id the route references, derived from Service and port, so it is stable even while the
    /// Service is missing (the route then answers 503 until the upstream appears).
    pub upstream_id: String,
    /// The upstream to write, or why there is none.
    pub upstream: Result<Upstream, Problem>,
}

impl<'a> Index<'a> {
    pub(super) fn new(resources: &'a crate::resources::Resources) -> Self {
        let services = resources.services.iter().map(|s| ((namespace(&s.metadata), name(&s.metadata)), s)).collect();
        let mut slices: HashMap<_, Vec<_>> = HashMap::new();
        for slice in &resources.endpoint_slices {
            if let Some(svc) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                slices.entry((namespace(&slice.metadata), svc.as_str())).or_default().push(slice);
            }
        }
        Index { services, slices }
    }

    /// Resolves a Service backend referenced from namespace `ns`.
    pub(super) fn resolve(&self, ns: &str, backend: &IngressServiceBackend) -> Resolved {
        let port = backend.port.as_ref();
        let port_key = match (port.and_then(|p| p.number), port.and_then(|p| p.name.as_deref())) {
            (Some(n), _) => n.to_string(),
            (None, Some(name)) => name.to_string(),
            (None, None) => String::new(),
        };
        // A port named in the backend is keyed by the Service's port number once it resolves, so that the same
        // port referenced by name and by number shares one upstream.
        let svc = self.services.get(&(ns, backend.name.as_str()));
        let number = svc
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.ports.as_ref())
            .and_then(|ports| ports.iter().find(|p| p.name.as_deref() == Some(port_key.as_str())))
            .map(|p| p.port.to_string());
        let key = number.as_deref().unwrap_or(&port_key);
        let upstream_id = ids::make("svc", &[ns, &backend.name, key]);
        let upstream = self.upstream(ns, &backend.name, &port_key, &upstream_id).map(|mut u| {
            u.name = Some(format!("{ns}/{}:{key}", backend.name));
            u
        });
        Resolved { upstream_id, upstream }
    }

    fn upstream(&self, ns: &str, svc_name: &str, port_key: &str, id: &str) -> Result<Upstream, Problem> {
        let problem = |reason, message| Problem { reason, message };
        let Some(svc) = self.services.get(&(ns, svc_name)) else {
            return Err(problem(Reason::ServiceNotFound, format!("Service {ns}/{svc_name} not found")));
        };
        if port_key.is_empty() {
            return Err(problem(
                Reason::PortNotFound,
                format!("backend Service {svc_name} needs a port number or name"),
            ));
        }
        let spec = svc.spec.clone().unwrap_or_default();
        let nodes = if spec.type_.as_deref() == Some("ExternalName") {
            // An ExternalName Service has no ports list to consult: the backend's port number is used as is.
            let port = port_key.parse::<u16>().map_err(|_| {
                problem(Reason::PortNotFound, format!("ExternalName Service {ns}/{svc_name} needs a port number"))
            })?;
            let host = spec.external_name.unwrap_or_default();
            vec![Node { host, port: Some(port), weight: NODE_WEIGHT, priority: 0, metadata: None }]
        } else {
            let ports = spec.ports.unwrap_or_default();
            let svc_port = ports.iter().find(|p| p.port.to_string() == port_key || p.name.as_deref() == Some(port_key));
            let Some(svc_port) = svc_port else {
                return Err(problem(Reason::PortNotFound, format!("Service {ns}/{svc_name} has no port {port_key}")));
            };
            self.endpoints(ns, svc_name, svc_port)
        };
        Ok(Upstream {
            id: Some(id.to_string()),
            nodes: Nodes::List(nodes),
            labels: labels::owner("Service", ns, svc_name),
            ..Upstream::default()
        })
    }

    /// Ready endpoints of the Service port; when none is ready, endpoints still serving while terminating, so
    /// that a Service in the middle of a rolling update keeps a last resort instead of going dark.
    fn endpoints(&self, ns: &str, svc: &str, svc_port: &ServicePort) -> Vec<Node> {
        let wanted = svc_port.name.as_deref().unwrap_or("");
        let mut ready = BTreeSet::new();
        let mut serving = BTreeSet::new();
        for slice in self.slices.get(&(ns, svc)).into_iter().flatten() {
            let port = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref().unwrap_or("") == wanted && p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok());
            let Some(port) = port else { continue };
            for ep in &slice.endpoints {
                let target = match condition(ep) {
                    Condition::Ready => &mut ready,
                    Condition::ServingTerminating => &mut serving,
                    Condition::Down => continue,
                };
                target.extend(ep.addresses.iter().map(|a| (a.clone(), port)));
            }
        }
        let chosen = if ready.is_empty() { serving } else { ready };
        chosen
            .into_iter()
            .map(|(host, port)| Node { host, port: Some(port), weight: NODE_WEIGHT, priority: 0, metadata: None })
            .collect()
    }
}

enum Condition {
    Ready,
    ServingTerminating,
    Down,
}

/// Reads the conditions as the EndpointSlice API defines them: an unset `ready` means ready, an unset
/// `serving` means the same as `ready`.
fn condition(ep: &Endpoint) -> Condition {
    let c = ep.conditions.clone().unwrap_or_default();
    let ready = c.ready.unwrap_or(true);
    let serving = c.serving.unwrap_or(ready);
    let terminating = c.terminating.unwrap_or(false);
    if ready && !terminating {
        Condition::Ready
    } else if serving {
        Condition::ServingTerminating
    } else {
        Condition::Down
    }
}
