//! Resolving a backend to an upstream: Service → port → ready EndpointSlice addresses (or the cluster IP), shaped
//! by the Upstream resource of the same name.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use sluice_model::{Node, Nodes, Upstream, labels};

use super::policy::Policy;
use super::{Problem, Reason, ids};
use crate::resources::{Resources, name, namespace};

/// The label EndpointSlices carry naming their Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Weight given to every endpoint; equal weights spread evenly, and leave room for finer ones.
pub(super) const NODE_WEIGHT: u32 = 100;

/// A Service port, as a backend names it.
#[derive(Debug, Clone, Copy)]
pub(super) enum PortRef<'a> {
    /// By port number.
    Number(i32),
    /// By port name.
    Name(&'a str),
    /// Not given.
    Missing,
}

/// A Service backend as Ingress and ApiRoute name it.
#[derive(Debug, Clone, Copy)]
pub(super) struct BackendRef<'a> {
    pub service: &'a str,
    pub port: PortRef<'a>,
    /// Send to the Service's cluster IP instead of the endpoints.
    pub cluster_ip: bool,
    /// Only endpoints of pods in this subset of the Service's Upstream.
    pub subset: Option<&'a str>,
}

/// Services, EndpointSlices, pod labels and Upstream policies indexed by namespace and name.
pub(super) struct Index<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    pods: HashMap<(&'a str, &'a str), &'a BTreeMap<String, String>>,
    policies: &'a HashMap<(String, String), Policy>,
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
    pub(super) fn new(resources: &'a Resources, policies: &'a HashMap<(String, String), Policy>) -> Self {
        let services = resources.services.iter().map(|s| ((namespace(&s.metadata), name(&s.metadata)), s)).collect();
        let mut slices: HashMap<_, Vec<_>> = HashMap::new();
        for slice in &resources.endpoint_slices {
            if let Some(svc) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                slices.entry((namespace(&slice.metadata), svc.as_str())).or_default().push(slice);
            }
        }
        let pods = resources
            .pods
            .iter()
            .filter_map(|p| Some(((namespace(&p.metadata), name(&p.metadata)), p.metadata.labels.as_ref()?)))
            .collect();
        Index { services, slices, pods, policies }
    }

    /// The Upstream policy for a Service, if one is declared.
    pub(super) fn policy(&self, ns: &str, service: &str) -> Option<&'a Policy> {
        self.policies.get(&(ns.to_string(), service.to_string()))
    }

    /// Resolves a Service backend referenced from namespace `ns`.
    pub(super) fn resolve(&self, ns: &str, backend: &BackendRef) -> Resolved {
        let svc = self.services.get(&(ns, backend.service)).copied();
        let ports = svc.and_then(|s| s.spec.as_ref()).and_then(|s| s.ports.as_deref()).unwrap_or_default();
        let svc_port = match backend.port {
            PortRef::Number(n) => ports.iter().find(|p| p.port == n),
            PortRef::Name(name) => ports.iter().find(|p| p.name.as_deref() == Some(name)),
            PortRef::Missing => None,
        };
        // Keyed by the port number once it resolves, so the same port named and numbered shares one upstream.
        let key = match (svc_port, backend.port) {
            (Some(p), _) => p.port.to_string(),
            (None, PortRef::Number(n)) => n.to_string(),
            (None, PortRef::Name(name)) => name.to_string(),
            (None, PortRef::Missing) => String::new(),
        };
        let mut parts = vec![ns, backend.service, key.as_str()];
        if let Some(subset) = backend.subset {
            parts.push(subset);
        }
        if backend.cluster_ip {
            parts.push("clusterip");
        }
        let upstream_id = ids::make("svc", &parts);
        let upstream = self.upstream(ns, backend, svc, svc_port, &key, &upstream_id);
        Resolved { upstream_id, upstream }
    }

    fn upstream(
        &self,
        ns: &str,
        backend: &BackendRef,
        svc: Option<&Service>,
        svc_port: Option<&ServicePort>,
        key: &str,
        id: &str,
    ) -> Result<Upstream, Problem> {
        let svc_name = backend.service;
        let problem = |reason, message| Problem { reason, message };
        let Some(svc) = svc else {
            return Err(problem(Reason::ServiceNotFound, format!("Service {ns}/{svc_name} not found")));
        };
        if matches!(backend.port, PortRef::Missing) {
            return Err(problem(
                Reason::PortNotFound,
                format!("backend Service {svc_name} needs a port number or name"),
            ));
        }
        let spec = svc.spec.clone().unwrap_or_default();
        let policy = self.policy(ns, svc_name);
        let nodes = if spec.type_.as_deref() == Some("ExternalName") {
            // An ExternalName Service has no ports list to consult: the backend's port number is used as is.
            let port = key.parse::<u16>().map_err(|_| {
                problem(Reason::PortNotFound, format!("ExternalName Service {ns}/{svc_name} needs a port number"))
            })?;
            let target = spec.external_name.unwrap_or_default();
            refused(&target)
                .map_err(|why| problem(Reason::InvalidSpec, format!("ExternalName Service {ns}/{svc_name}: {why}")))?;
            vec![node(target, port)]
        } else {
            let Some(svc_port) = svc_port else {
                return Err(problem(Reason::PortNotFound, format!("Service {ns}/{svc_name} has no port {key}")));
            };
            if backend.cluster_ip {
                let ip = spec.cluster_ip.filter(|ip| !ip.is_empty() && ip != "None");
                let Some(ip) = ip else {
                    let message = format!("Service {ns}/{svc_name} has no cluster IP to resolve to");
                    return Err(problem(Reason::InvalidSpec, message));
                };
                vec![node(ip, u16::try_from(svc_port.port).unwrap_or(0))]
            } else {
                let subset = match backend.subset {
                    None => None,
                    Some(s) => match policy.and_then(|p| p.subsets.get(s)) {
                        Some(labels) => Some(labels),
                        None => {
                            let message = format!("subset {s:?} is not declared by Upstream {ns}/{svc_name}");
                            return Err(problem(Reason::RefNotFound, message));
                        }
                    },
                };
                self.endpoints(ns, svc_name, svc_port, subset)
            }
        };
        let mut upstream = Upstream {
            id: Some(id.to_string()),
            name: Some(format!("{ns}/{svc_name}:{key}")),
            nodes: Nodes::List(nodes),
            labels: labels::owner("Service", ns, svc_name),
            ..Upstream::default()
        };
        if let Some(policy) = policy {
            policy.apply(&mut upstream);
        }
        Ok(upstream)
    }

    /// Ready endpoints of the Service port; when none is ready, endpoints still serving while terminating, so
    /// that a Service in the middle of a rolling update keeps a last resort instead of going dark.
    fn endpoints(
        &self,
        ns: &str,
        svc: &str,
        svc_port: &ServicePort,
        subset: Option<&BTreeMap<String, String>>,
    ) -> Vec<Node> {
        let wanted = svc_port.name.as_deref().unwrap_or("");
        let mut ready = BTreeMap::new();
        let mut serving = BTreeMap::new();
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
                if let Some(wanted) = subset
                    && !self.in_subset(ns, ep, wanted)
                {
                    continue;
                }
                let target = match condition(ep) {
                    Condition::Ready => &mut ready,
                    Condition::ServingTerminating => &mut serving,
                    Condition::Down => continue,
                };
                // The zone goes with the node, for data planes that prefer their own zone; an address listed by
                // two slices is still one node.
                let zone = ep.zone.clone().filter(|z| !z.is_empty());
                target.extend(ep.addresses.iter().map(|a| ((a.clone(), port), zone.clone())));
            }
        }
        let chosen = if ready.is_empty() { serving } else { ready };
        chosen
            .into_iter()
            .map(|((host, port), zone)| Node { metadata: zone.map(|z| Node::zone_metadata(&z)), ..node(host, port) })
            .collect()
    }

    /// Whether the endpoint's pod carries every label of the subset.
    fn in_subset(&self, ns: &str, ep: &Endpoint, wanted: &BTreeMap<String, String>) -> bool {
        let Some(pod) = ep.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod")) else { return false };
        let pod_ns = pod.namespace.as_deref().unwrap_or(ns);
        let Some(labels) = self.pods.get(&(pod_ns, pod.name.as_deref().unwrap_or(""))) else { return false };
        wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// A node with the default weight.
pub(super) fn node(host: String, port: u16) -> Node {
    Node { host, port: Some(port), weight: NODE_WEIGHT, priority: 0, metadata: None }
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

/// A node host the data planes never dial (a link-local or cloud metadata address), with the reason. Names are
/// resolved and checked by the data planes when they connect; loopback and the deployment's own addresses depend
/// on the data plane's flags, which the controller does not know.
pub(super) fn refused(host: &str) -> Result<(), String> {
    match host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        Ok(ip) if sluice_model::address::always_refused(ip) => {
            Err(format!("{host} is refused by the upstream address policy: {}", sluice_model::address::REFUSED_REASON))
        }
        _ => Ok(()),
    }
}
