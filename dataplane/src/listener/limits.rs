//! Limits at the edge, applied before a request reaches routing: the size and count of header fields (431), the
//! length of the request target (414), the body size (413), how long a client may take to send a request
//! head (which also bounds how long an idle keep-alive connection stays open) and may pause inside a body (408),
//! and how many client connections
//! are served at once (beyond that, new connections wait in the kernel's accept queue).
//!
//! The defaults follow nginx where it has one (8 KiB request targets, unlimited bodies as APISIX's
//! `client_max_body_size 0`), and hyper's for the field count.

use std::time::Duration;

/// The limits of the proxy listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest request head (request line and header fields) in bytes; HTTP/2's header list too. At least
    /// 8 KiB. Larger: 431.
    pub max_header_bytes: usize,
    /// The most header fields in one request. More: 431.
    pub max_headers: usize,
    /// The longest request target (path and query) in bytes. Longer: 414.
    pub max_uri_bytes: usize,
    /// The largest request body, declared by `Content-Length` or counted as a chunked body arrives; `None`: no
    /// limit. Larger: 413.
    pub max_body_bytes: Option<u64>,
    /// How long a client may take to send a request head, and how long an idle keep-alive connection is kept.
    pub header_timeout: Duration,
    /// How long a client may pause while sending a request body (nginx's `client_body_timeout`). Longer: 408.
    pub body_timeout: Duration,
    /// Client connections served at once, per listener.
    pub max_connections: usize,
}

/// The smallest head buffer hyper accepts.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: None,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            max_connections: 65_536,
        }
    }
}
