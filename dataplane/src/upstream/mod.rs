//! Everything on the node side of the proxy: an upstream compiled for the request path ([`runtime`]), the
//! balancer that picks a node, the health of nodes (passive from real traffic, active probes), the connection
//! pool, the addresses it may dial ([`policy`]), the two transports behind it (HTTP/1.1 driven in the request's
//! own task, HTTP/2 for gRPC) and TLS to nodes. The configuration compiler builds these; the proxy uses them; none
//! of them reads the configuration.

pub mod balancer;
pub mod health;
pub mod http1;
pub mod http2;
pub mod policy;
pub mod pool;
pub mod runtime;
pub mod tls;

pub use runtime::{DEFAULT_TIMEOUT, NodeRuntime, Timeouts, UpstreamRuntime, UpstreamSpec};
