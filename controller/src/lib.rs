//! The sluice controller: Kubernetes objects (from the API server or a directory of manifests) in, APISIX-shaped
//! configuration in etcd out, with status reported back on each object.

pub mod admin;
pub mod conditions;
pub mod config;
pub mod kubernetes;
pub mod leader;
pub mod manifest_source;
pub mod manifests;
pub mod metrics;
pub mod pipeline;
pub mod resources;
pub mod sealing;
pub mod sink;
pub mod translate;
