//! The bearer token the admin listeners of both components require, once one is configured, for everything but
//! the probes: `/metrics` names every route, upstream and consumer, and a listener the chart exposes on the pod
//! network is reachable by any pod. Kept here so that the controller and the data plane check it the same way.

use subtle::ConstantTimeEq;

/// Paths answered without a token: the kubelet's probes carry none.
pub const OPEN_PATHS: &[&str] = &["/healthz", "/readyz"];

/// Whether a request for `path` whose `Authorization` header is `authorization` may be answered. `token` is the
/// token file's contents (`None`: no token configured, everything is open); an empty token admits nothing but the
/// probes, so a token file that cannot be read fails closed.
pub fn admits(path: &str, authorization: Option<&[u8]>, token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    if OPEN_PATHS.contains(&path) {
        return true;
    }
    let token = token.trim();
    let Some(header) = authorization else { return false };
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let given = match header.split_at_checked(7) {
        Some((scheme, given)) if scheme.eq_ignore_ascii_case(b"bearer ") => given.trim_ascii(),
        _ => return false,
    };
    !token.is_empty() && bool::from(given.ct_eq(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_opens_anything_but_the_probes() {
        assert!(admits("/metrics", None, None), "no token configured");
        assert!(admits("/healthz", None, Some("s3cret")) && admits("/readyz", None, Some("s3cret")));
        assert!(!admits("/metrics", None, Some("s3cret")));
        assert!(!admits("/metrics", Some(b"Bearer wrong"), Some("s3cret")));
        assert!(!admits("/metrics", Some(b"Bearer s3cre"), Some("s3cret")));
        assert!(!admits("/metrics", Some(b"Basic s3cret"), Some("s3cret")));
        assert!(admits("/metrics", Some(b"Bearer s3cret"), Some("s3cret\n")), "the file's newline is not the token's");
        assert!(admits("/metrics", Some(b"bearer s3cret"), Some("s3cret")));
        assert!(!admits("/metrics", Some(b"Bearer "), Some("")), "an empty token admits nothing");
        assert!(!admits("/metrics/", Some(b""), Some("s3cret")));
    }
}
