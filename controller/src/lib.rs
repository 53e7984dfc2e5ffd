//! The sluice controller: Kubernetes objects (from the API server or a directory of manifests) in, APISIX-shaped
//! configuration in etcd out, with status reported back on each object.

pub mod config;
pub mod manifests;
pub mod resources;
pub mod translate;
