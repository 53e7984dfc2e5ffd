//! The pure translation from Kubernetes objects to sluice configuration and per-object status.
//!
//! No IO happens here: the same [`Resources`] always give the same [`Translation`]. Problems with one object
//! are collected against that object and never stop the others from being translated.

mod backend;
mod class;
mod ids;
mod ingress;
mod status;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::networking::v1::IngressLoadBalancerIngress;

use crate::config::Config;
use crate::resources::Resources;

pub use class::DEFAULT_CONTROLLER_NAME;
pub use status::Publish;

/// Settings that shape translation but come from flags, not from Kubernetes objects.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `spec.controller` value of IngressClasses this controller serves.
    pub controller_name: String,
    /// Where the address written to each Ingress's `status.loadBalancer` comes from.
    pub publish: Publish,
}

impl Default for Options {
    fn default() -> Self {
        Options { controller_name: DEFAULT_CONTROLLER_NAME.to_string(), publish: Publish::None }
    }
}

/// The result of one translation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Translation {
    /// Everything that should be in etcd.
    pub config: Config,
    /// What each Kubernetes object this controller owns should report.
    pub statuses: Vec<StatusUpdate>,
}

/// A Kubernetes object by kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// The kind, for example `Ingress`.
    pub kind: String,
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Why part of an object could not be translated as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// A backend names a Service that does not exist.
    ServiceNotFound,
    /// A backend names a port the Service does not have.
    PortNotFound,
    /// A path cannot be expressed (for example it does not start with `/`).
    InvalidPath,
    /// A host cannot be expressed.
    InvalidHost,
    /// A backend kind sluice does not support (for example `resource`).
    UnsupportedBackend,
}

impl Reason {
    /// The reason as a CamelCase word, for logs, metrics and conditions.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ServiceNotFound => "ServiceNotFound",
            Reason::PortNotFound => "PortNotFound",
            Reason::InvalidPath => "InvalidPath",
            Reason::InvalidHost => "InvalidHost",
            Reason::UnsupportedBackend => "UnsupportedBackend",
        }
    }
}

/// One problem found while translating an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The kind of problem.
    pub reason: Reason,
    /// What is wrong and what to do, for a human.
    pub message: String,
}

/// What one owned Kubernetes object should report after this translation.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    /// The object.
    pub object: ObjectRef,
    /// The addresses for an Ingress's `status.loadBalancer.ingress`.
    pub load_balancer: Vec<IngressLoadBalancerIngress>,
    /// Problems found in the object; empty when all of it was translated.
    pub problems: Vec<Problem>,
}

/// Translates a snapshot of Kubernetes objects into the desired configuration and per-object statuses.
pub fn translate(resources: &Resources, options: &Options) -> Translation {
    let index = backend::Index::new(resources);
    let load_balancer = status::addresses(&options.publish, resources);
    let mut config = Config::default();
    let mut statuses = Vec::new();
    let mut upstreams = BTreeMap::new();
    let classes = class::Classes::new(&resources.ingress_classes, &options.controller_name);
    let mut ingresses: Vec<_> = resources.ingresses.iter().filter(|i| classes.owns(i)).collect();
    // Oldest first, so that when two Ingresses claim the same thing the older one is listed first.
    ingresses.sort_by(|a, b| {
        (&a.metadata.creation_timestamp, crate::resources::namespace(&a.metadata), &a.metadata.name).cmp(&(
            &b.metadata.creation_timestamp,
            crate::resources::namespace(&b.metadata),
            &b.metadata.name,
        ))
    });
    for ing in ingresses {
        let out = ingress::translate(ing, &index, &mut upstreams);
        config.routes.extend(out.routes.into_iter().map(|r| (r.id.clone().unwrap_or_default(), r)));
        statuses.push(StatusUpdate {
            object: out.object,
            load_balancer: load_balancer.clone(),
            problems: out.problems,
        });
    }
    config.upstreams = upstreams;
    Translation { config, statuses }
}
