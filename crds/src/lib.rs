//! sluice's custom resources, group `sluice.dev`, version `v1alpha1`:
//!
//! - [`ApiRoute`]: HTTP routing rules beyond what Ingress can express (methods, expressions, weighted backends,
//!   plugins, timeouts, WebSocket).
//! - [`Upstream`]: how traffic to a Service (of the same name) is balanced, retried and health-checked.
//! - [`PluginConfig`]: a reusable set of plugins.
//! - [`Consumer`]: an API caller with credentials and its own plugins.
//!
//! The CRD YAML under `crds/` (and the Helm chart) and `docs/crd-reference.md` are generated from these types by
//! `sluice-crdgen`; a test fails when the committed files differ from what the types generate.

pub mod api_route;
pub mod common;
pub mod consumer;
pub mod generate;
pub mod plugin_config;
pub mod reference;
pub mod upstream;

pub use api_route::{ApiRoute, ApiRouteSpec};
pub use common::{Plugin, ResourceStatus, SecretReference, Timeout};
pub use consumer::{Consumer, ConsumerSpec};
pub use plugin_config::{PluginConfig, PluginConfigSpec};
pub use upstream::{Upstream, UpstreamSpec};

/// The API group of every sluice custom resource.
pub const GROUP: &str = "sluice.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
