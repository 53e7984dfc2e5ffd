//! The pure translation from Kubernetes objects to sluice configuration and per-object status.
//!
//! No IO happens here: the same [`Resources`] always give the same [`Translation`]. Problems with one object
//! are collected against that object and never stop the others from being translated.

mod api_route;
mod backend;
mod class;
mod consumer;
mod hosts;
mod ids;
mod ingress;
mod plugins;
mod policy;
mod secrets;
mod status;
mod tls;

use std::fmt;

use k8s_openapi::api::networking::v1::IngressLoadBalancerIngress;

use crate::config::Config;
use crate::resources::Resources;

pub use class::DEFAULT_CONTROLLER_NAME;
pub use ingress::{PLUGIN_CONFIG_ANNOTATION, WEBSOCKET_ANNOTATION};
pub use status::Publish;
pub use tls::{CLIENT_CA_ANNOTATION, CLIENT_DEPTH_ANNOTATION, SSL_REDIRECT_ANNOTATION};

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
    /// A field of a custom resource cannot be used as written.
    InvalidSpec,
    /// A referenced object (Service, Secret, Upstream, PluginConfig) does not exist.
    RefNotFound,
    /// The object's key in etcd holds an object written by someone else.
    Conflict,
    /// Writing to etcd failed; retried.
    SyncFailed,
    /// A host is already served by an older object (for TLS, with another certificate).
    HostConflict,
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
            Reason::InvalidSpec => "InvalidSpec",
            Reason::RefNotFound => "RefNotFound",
            Reason::Conflict => "Conflict",
            Reason::SyncFailed => "SyncFailed",
            Reason::HostConflict => "HostConflict",
        }
    }

    /// Whether the problem makes the affected part unusable (it is left out), as opposed to a reference that
    /// may still resolve.
    pub fn is_invalid_spec(self) -> bool {
        matches!(self, Reason::InvalidPath | Reason::InvalidHost | Reason::InvalidSpec | Reason::UnsupportedBackend)
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
    /// The `metadata.generation` translated, reported as `observedGeneration`.
    pub generation: Option<i64>,
    /// The addresses for an Ingress's `status.loadBalancer.ingress`.
    pub load_balancer: Vec<IngressLoadBalancerIngress>,
    /// Problems found in the object; empty when all of it was translated.
    pub problems: Vec<Problem>,
}

impl StatusUpdate {
    /// A status with no load-balancer addresses (every kind but Ingress).
    pub fn new(object: ObjectRef, generation: Option<i64>, problems: Vec<Problem>) -> StatusUpdate {
        StatusUpdate { object, generation, load_balancer: Vec::new(), problems }
    }
}

/// Translates a snapshot of Kubernetes objects into the desired configuration and per-object statuses.
pub fn translate(resources: &Resources, options: &Options) -> Translation {
    let secrets = secrets::Secrets::new(resources);
    let (policies, mut statuses) = policy::compile(resources, &secrets);
    let index = backend::Index::new(resources, &policies);
    let load_balancer = status::addresses(&options.publish, resources);
    let mut config = Config::default();
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
    let mut claims = tls::Claims::default();
    for ing in ingresses {
        let out = ingress::translate(ing, &index, resources, &secrets, &mut claims, &mut config.upstreams);
        config.routes.extend(out.routes.into_iter().map(|r| (r.id.clone().unwrap_or_default(), r)));
        config.ssls.extend(out.ssls.into_iter().map(|s| (s.id.clone().unwrap_or_default(), s)));
        statuses.push(StatusUpdate {
            object: out.object,
            generation: ing.metadata.generation,
            load_balancer: load_balancer.clone(),
            problems: out.problems,
        });
    }
    statuses.extend(plugins::translate_configs(resources, &secrets, &mut config));
    statuses.extend(consumer::translate(resources, &secrets, &mut config));
    for ar in resources.api_routes.iter().filter(|ar| classes.owns_class(ar.spec.ingress_class_name.as_deref())) {
        statuses.push(api_route::translate(ar, &index, &secrets, resources, &mut config));
    }
    statuses.sort_by(|a, b| a.object.cmp(&b.object));
    Translation { config, statuses }
}
