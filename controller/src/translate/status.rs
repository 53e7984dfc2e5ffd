//! The address every owned Ingress reports in `status.loadBalancer`.

use k8s_openapi::api::networking::v1::IngressLoadBalancerIngress;

use crate::resources::{Resources, name, namespace};

/// Where the published address comes from.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Publish {
    /// Nothing is published.
    #[default]
    None,
    /// The load-balancer addresses (or external IPs) of a Service, usually the data plane's.
    Service {
        /// The Service's namespace.
        namespace: String,
        /// The Service's name.
        name: String,
    },
    /// Fixed addresses: IPs or host names.
    Addresses(Vec<String>),
}

impl Publish {
    /// Parses `NAMESPACE/NAME` for `--publish-service`.
    pub fn service(spec: &str) -> Option<Publish> {
        let (ns, name) = spec.split_once('/')?;
        (!ns.is_empty() && !name.is_empty() && !name.contains('/'))
            .then(|| Publish::Service { namespace: ns.to_string(), name: name.to_string() })
    }
}

fn entry(address: &str) -> IngressLoadBalancerIngress {
    if address.parse::<std::net::IpAddr>().is_ok() {
        IngressLoadBalancerIngress { ip: Some(address.to_string()), ..Default::default() }
    } else {
        IngressLoadBalancerIngress { hostname: Some(address.to_string()), ..Default::default() }
    }
}

/// Resolves the published addresses against the current Services.
pub(super) fn addresses(publish: &Publish, resources: &Resources) -> Vec<IngressLoadBalancerIngress> {
    match publish {
        Publish::None => Vec::new(),
        Publish::Addresses(list) => list.iter().map(|a| entry(a)).collect(),
        Publish::Service { namespace: ns, name: svc_name } => {
            let Some(svc) =
                resources.services.iter().find(|s| namespace(&s.metadata) == ns && name(&s.metadata) == svc_name)
            else {
                return Vec::new();
            };
            let lb = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
            let from_lb: Vec<_> = lb
                .into_iter()
                .flatten()
                .map(|i| IngressLoadBalancerIngress { ip: i.ip.clone(), hostname: i.hostname.clone(), ports: None })
                .collect();
            if !from_lb.is_empty() {
                return from_lb;
            }
            let external = svc.spec.as_ref().and_then(|s| s.external_ips.as_ref());
            external.into_iter().flatten().map(|a| entry(a)).collect()
        }
    }
}
