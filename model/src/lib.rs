//! The configuration objects sluice stores in etcd, in the APISIX 3.x JSON shapes.
//!
//! This crate does no IO: it is the contract between the controller, which writes these objects, and the data
//! plane, which reads them. Decoding is `serde`; validation is explicit and returns typed errors so that one
//! bad object can be rejected alone with a reason a human can act on.

pub mod address;
pub mod admin;
pub mod data_plane;
mod id;
pub mod keys;
pub mod labels;
pub mod plugin_config;
pub mod plugins;
pub mod route;
pub mod sealed;
pub mod service;
pub mod ssl;
pub mod upstream;
mod validate;

pub use data_plane::ServerInfo;
pub use keys::{DEFAULT_PREFIX, Keys, Kind};
pub use plugin_config::{Consumer, GlobalRule, InvalidPluginSet, PluginConfig};
pub use plugins::{ConsumerPlugins, Credential, InvalidPlugin, Meta, Plugin, PluginConf, Plugins};
pub use route::{InvalidRoute, Route, Status};
pub use service::{InvalidService, Service};
pub use ssl::{InvalidSsl, Ssl};
pub use upstream::{InvalidUpstream, LoadBalancer, Node, Nodes, PassHost, Scheme, Timeout, Upstream};
pub use validate::{InvalidId, InvalidLabel};

/// Why bytes read from etcd could not become a usable object.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The value is not JSON of the expected shape.
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON is well formed but a route field breaks a rule.
    #[error("invalid route: {0}")]
    Route(#[from] InvalidRoute),
    /// The JSON is well formed but an upstream field breaks a rule.
    #[error("invalid upstream: {0}")]
    Upstream(#[from] InvalidUpstream),
    /// The JSON is well formed but a service field breaks a rule.
    #[error("invalid service: {0}")]
    Service(#[from] InvalidService),
    /// The JSON is well formed but a plugin config or consumer field breaks a rule.
    #[error("invalid plugin set: {0}")]
    PluginSet(#[from] InvalidPluginSet),
    /// The JSON is well formed but an ssl field breaks a rule.
    #[error("invalid ssl: {0}")]
    Ssl(#[from] InvalidSsl),
}

/// Parses and validates a route as stored in etcd.
pub fn decode_route(bytes: &[u8]) -> Result<Route, DecodeError> {
    let route: Route = serde_json::from_slice(bytes)?;
    route.validate()?;
    Ok(route)
}

/// Parses and validates an upstream as stored in etcd.
pub fn decode_upstream(bytes: &[u8]) -> Result<Upstream, DecodeError> {
    let upstream: Upstream = serde_json::from_slice(bytes)?;
    upstream.validate()?;
    Ok(upstream)
}

/// Parses and validates a service as stored in etcd.
pub fn decode_service(bytes: &[u8]) -> Result<Service, DecodeError> {
    let service: Service = serde_json::from_slice(bytes)?;
    service.validate()?;
    Ok(service)
}

/// Parses and validates a plugin config as stored in etcd.
pub fn decode_plugin_config(bytes: &[u8]) -> Result<PluginConfig, DecodeError> {
    let pc: PluginConfig = serde_json::from_slice(bytes)?;
    pc.validate()?;
    Ok(pc)
}

/// Parses and validates a consumer as stored in etcd.
pub fn decode_consumer(bytes: &[u8]) -> Result<Consumer, DecodeError> {
    let consumer: Consumer = serde_json::from_slice(bytes)?;
    consumer.validate()?;
    Ok(consumer)
}

/// Parses and validates a global rule as stored in etcd.
pub fn decode_global_rule(bytes: &[u8]) -> Result<GlobalRule, DecodeError> {
    let rule: GlobalRule = serde_json::from_slice(bytes)?;
    rule.validate()?;
    Ok(rule)
}

/// Parses an ssl object without checking it: for a reader that opens its sealed private keys
/// ([`sealed::open_ssl`]) before it calls [`Ssl::validate`].
pub fn parse_ssl(bytes: &[u8]) -> Result<Ssl, DecodeError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Parses and validates an ssl object as stored in etcd.
pub fn decode_ssl(bytes: &[u8]) -> Result<Ssl, DecodeError> {
    let ssl: Ssl = serde_json::from_slice(bytes)?;
    ssl.validate()?;
    Ok(ssl)
}
