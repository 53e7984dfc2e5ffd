//! Why a request was not proxied, and the one place where each reason maps to a status and a body.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use sluice_model::{DecodeError, Kind};

use crate::router;

/// A request that ends in the data plane instead of at a node.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matches.
    #[error("no route matches")]
    RouteNotFound,
    /// The client's request body broke off or was malformed while it was being sent on: the client's fault, so
    /// neither logged as a node failure nor counted against the node.
    #[error("the request body could not be read from the client: {0}")]
    ClientBody(String),
    /// The client stopped sending its request body for longer than `--client-body-timeout`.
    #[error("the client stopped sending its request body")]
    ClientTimeout,
    /// The request target is longer than `--max-uri-bytes`.
    #[error("the request target is longer than {0} bytes")]
    UriTooLong(usize),
    /// The request body is declared larger than `--max-body-bytes`.
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(u64),
    /// The request path cannot be normalised (a broken percent-encoding).
    #[error(transparent)]
    BadPath(#[from] crate::router::normalize::InvalidPath),
    /// The host requires a client certificate that this TLS connection's handshake did not verify (the client
    /// asked for another name, or for none), or its certificate is refused; the client should connect again with
    /// the host as its server name.
    #[error("the connection's TLS handshake does not cover this host")]
    Misdirected,
    /// The route names an object that is absent (or was rejected), or has no upstream at all.
    #[error("{0}")]
    Unresolved(Unresolved),
    /// The upstream has no node with a positive weight.
    #[error("upstream {0} has no nodes with a positive weight")]
    NoNodes(Arc<str>),
    /// Every node tried refused or timed out the connection.
    #[error("could not connect to any node of upstream {upstream} (tried {tried}): {reason}")]
    Connect {
        /// The upstream.
        upstream: Arc<str>,
        /// How many nodes were tried.
        tried: usize,
        /// The last connect error.
        reason: String,
    },
    /// The node did not send response headers in time.
    #[error("node {node} did not answer within {seconds} s")]
    Timeout {
        /// The node's address.
        node: String,
        /// The limit that passed.
        seconds: f64,
    },
    /// The exchange with the node failed after connecting.
    #[error("node {node} failed: {reason}")]
    Upstream {
        /// The node's address.
        node: String,
        /// What went wrong.
        reason: String,
    },
}

impl ProxyError {
    /// Whether a node failed (it refused, timed out or broke the exchange), which is worth a warning; the other
    /// answers are the client's or the configuration's doing and are counted, not logged per request.
    pub fn blames_node(&self) -> bool {
        matches!(self, ProxyError::Connect { .. } | ProxyError::Timeout { .. } | ProxyError::Upstream { .. })
    }

    /// The status the client receives.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::RouteNotFound => StatusCode::NOT_FOUND,
            ProxyError::BadPath(_) | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ProxyError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::Unresolved(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NoNodes(_) | ProxyError::Connect { .. } | ProxyError::Upstream { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The JSON body the client receives, in APISIX's `{"error_msg": ...}` shape.
    pub fn body(&self) -> Bytes {
        match self {
            // Exactly APISIX's body, which clients and tests compare byte for byte.
            ProxyError::RouteNotFound => Bytes::from_static(br#"{"error_msg":"404 Route Not Found"}"#),
            ProxyError::BadPath(e) => error_body(&format!("400 Bad Request: {e}")),
            ProxyError::ClientBody(_) => error_body("400 Bad Request: the request body could not be read"),
            ProxyError::UriTooLong(_) => error_body("414 Request-URI Too Large"),
            ProxyError::ClientTimeout => error_body("408 Request Timeout"),
            ProxyError::BodyTooLarge(_) => error_body("413 Request Entity Too Large"),
            ProxyError::Misdirected => {
                error_body("421 Misdirected Request: connect with this host as the TLS server name")
            }
            ProxyError::Unresolved(reason) => error_body(&format!("503 Service Unavailable: {reason}")),
            ProxyError::NoNodes(_) | ProxyError::Connect { .. } | ProxyError::Upstream { .. } => {
                error_body("502 Bad Gateway")
            }
            ProxyError::Timeout { .. } => error_body("504 Gateway Timeout"),
        }
    }

    /// The whole response.
    pub fn response(&self) -> Response<Full<Bytes>> {
        self.reply().map(Full::new)
    }

    /// The gRPC status code for a gRPC client (as gRPC's HTTP mapping gives it, with the data plane's own timeout
    /// as `DEADLINE_EXCEEDED`).
    pub fn grpc_status(&self) -> u8 {
        match self {
            ProxyError::RouteNotFound => 12,                          // UNIMPLEMENTED
            ProxyError::BadPath(_) | ProxyError::ClientBody(_) => 13, // INTERNAL, as gRPC maps HTTP 400
            ProxyError::Misdirected
            | ProxyError::UriTooLong(_)
            | ProxyError::BodyTooLarge(_)
            | ProxyError::ClientTimeout => 2, // UNKNOWN
            ProxyError::Unresolved(_)
            | ProxyError::NoNodes(_)
            | ProxyError::Connect { .. }
            | ProxyError::Upstream { .. } => 14, // UNAVAILABLE
            ProxyError::Timeout { .. } => 4,                          // DEADLINE_EXCEEDED
        }
    }

    /// The answer for a gRPC client: HTTP 200 with `grpc-status` and `grpc-message` and no body (a trailers-only
    /// response), which is how gRPC clients read an error; an HTTP error status would surface as a transport
    /// failure instead of the reason.
    pub fn grpc_reply(&self) -> Response<Bytes> {
        let mut resp = Response::new(Bytes::new());
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from(u16::from(self.grpc_status())));
        let message = match self {
            // The same words as the HTTP body, without the JSON.
            ProxyError::RouteNotFound => "404 Route Not Found".to_string(),
            e => format!("{} {}: {e}", e.status().as_u16(), e.status().canonical_reason().unwrap_or("")),
        };
        if let Ok(value) = HeaderValue::from_str(&grpc_message(&message)) {
            headers.insert("grpc-message", value);
        }
        resp
    }

    /// The whole response, its body in one piece (as plugins' response phases take it).
    pub fn reply(&self) -> Response<Bytes> {
        let mut resp = Response::new(self.body());
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }
}

/// Whether a request is a gRPC call (`content-type: application/grpc`, with or without a `+format` suffix).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|ct| {
        let ct = ct.as_bytes();
        ct.len() >= 16
            && ct[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(ct.get(16), None | Some(b'+' | b';'))
    })
}

/// `grpc-message` is percent-encoded: bytes outside printable ASCII, and `%` itself.
fn grpc_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn error_body(msg: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "error_msg": msg }).to_string())
}

/// Why an object is not served.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    /// The bytes are not a valid object of their kind.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The router cannot honour a matching field.
    #[error(transparent)]
    Match(#[from] router::Unsupported),
    /// Fields that contradict each other.
    #[error("conflicting definition: {0}")]
    Conflict(String),
    /// A setting with a value outside what it allows.
    #[error("invalid {0}")]
    Invalid(String),
    /// A feature this data plane does not implement yet.
    #[error("{0} is not supported yet")]
    Unsupported(String),
    /// A plugin cannot be run as configured (not enabled here, or unusable settings).
    #[error(transparent)]
    Plugin(#[from] crate::plugins::BuildError),
}

/// Why a route that is in the table cannot be proxied: it answers 503 until this is fixed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    /// It names an object that is absent (or was rejected).
    #[error("{kind} {id} not found")]
    Missing {
        /// The kind of the missing object.
        kind: Kind,
        /// Its id.
        id: Arc<str>,
    },
    /// Neither the route nor its service has an upstream.
    #[error("no upstream configured in the route or its service")]
    NoUpstream,
    /// It, or an object it needs, was rejected and there is no good version to serve instead.
    #[error("{kind} {id} was rejected")]
    Rejected {
        /// The kind of the rejected object.
        kind: Kind,
        /// Its id.
        id: Arc<str>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_clients_get_statuses_in_headers() {
        let mut h = http::HeaderMap::new();
        for (ct, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC; charset=x", true),
            ("application/grpc-web", false),
            ("application/json", false),
        ] {
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            assert_eq!(is_grpc(&h), grpc, "{ct}");
        }
        let reply = ProxyError::RouteNotFound.grpc_reply();
        assert_eq!(reply.status(), StatusCode::OK);
        assert_eq!(reply.headers()["grpc-status"], "12");
        assert_eq!(reply.headers()["grpc-message"], "404 Route Not Found");
        let timeout = ProxyError::Timeout { node: "10.0.0.1:80".into(), seconds: 1.5 };
        assert_eq!(timeout.grpc_reply().headers()["grpc-status"], "4");
        assert_eq!(grpc_message("50% ü"), "50%25 %C3%BC");
        assert!(
            timeout.blames_node()
                && !ProxyError::RouteNotFound.blames_node()
                && !ProxyError::ClientTimeout.blames_node()
        );
    }

    #[test]
    fn maps_errors_to_statuses_and_bodies() {
        let e = ProxyError::RouteNotFound;
        assert_eq!(
            (e.status(), &e.body()[..]),
            (StatusCode::NOT_FOUND, &br#"{"error_msg":"404 Route Not Found"}"#[..])
        );
        let e = ProxyError::Unresolved(Unresolved::Missing { kind: sluice_model::Kind::Upstream, id: "u1".into() });
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(&e.body()[..], br#"{"error_msg":"503 Service Unavailable: upstream u1 not found"}"#);
        let e = ProxyError::Unresolved(Unresolved::Missing { kind: sluice_model::Kind::Service, id: "s".into() });
        assert_eq!(&e.body()[..], br#"{"error_msg":"503 Service Unavailable: service s not found"}"#);
        assert_eq!(ProxyError::NoNodes("u".into()).status(), StatusCode::BAD_GATEWAY);
        let t = ProxyError::Timeout { node: "n".into(), seconds: 1.0 };
        assert_eq!(t.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(t.response().headers()["content-type"], "application/json");
    }
}
