//! What the authentication plugins share: attaching the consumer they found, and their 401 answers.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue, WWW_AUTHENTICATE};
use http::{StatusCode, request};

use super::{Consumer, Ctx, Flow, Reply, message};

/// `X-Consumer-Username`: who the gateway authenticated, for the node.
pub const CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
/// `X-Credential-Identifier`: which credential of the consumer matched (credential objects only).
pub const CREDENTIAL_IDENTIFIER: HeaderName = HeaderName::from_static("x-credential-identifier");
/// `X-Consumer-Custom-ID`: the consumer's `labels.custom_id`.
pub const CONSUMER_CUSTOM_ID: HeaderName = HeaderName::from_static("x-consumer-custom-id");

/// Makes `consumer` the request's caller and tells the node who it is, overwriting whatever the client sent in
/// those headers (APISIX 3.11+), so a client cannot claim an identity.
pub fn attach(ctx: &mut Ctx, req: &mut request::Parts, consumer: Arc<Consumer>) {
    // Clients rarely send these: one scan over the few fields spares a hashed removal of each.
    let claimed =
        req.headers.keys().any(|k| *k == CREDENTIAL_IDENTIFIER || *k == CONSUMER_CUSTOM_ID || *k == CONSUMER_USERNAME);
    match &consumer.username_header {
        Some(name) => drop(req.headers.insert(CONSUMER_USERNAME, name.clone())),
        None if claimed => drop(req.headers.remove(CONSUMER_USERNAME)),
        None => {}
    }
    // Credentials are inline in consumers here (no credential objects), so there is no credential id to send.
    if claimed {
        req.headers.remove(CREDENTIAL_IDENTIFIER);
    }
    match &consumer.custom_id {
        Some(id) => drop(req.headers.insert(CONSUMER_CUSTOM_ID, id.clone())),
        None if claimed => drop(req.headers.remove(CONSUMER_CUSTOM_ID)),
        None => {}
    }
    ctx.consumer = Some(consumer);
}

/// The `WWW-Authenticate` value `<scheme> realm="<realm>"` (the realm was checked to be quotable).
pub fn challenge(scheme: &str, realm: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("{scheme} realm=\"{realm}\"")).unwrap_or_else(|_| HeaderValue::from_static("Basic"))
}

/// A 401 with APISIX's `{"message": ...}` body and the plugin's challenge.
pub fn unauthorized(text: &str, challenge: &HeaderValue) -> Reply {
    let mut reply = message(StatusCode::UNAUTHORIZED, text);
    reply.headers_mut().insert(WWW_AUTHENTICATE, challenge.clone());
    reply
}

/// Falls back to the `anonymous_consumer` when a request carries no valid credential, as APISIX does; the 401
/// APISIX gives when that consumer does not exist either.
pub fn anonymous(ctx: &mut Ctx, req: &mut request::Parts, name: &str, challenge: &HeaderValue) -> Flow {
    match ctx.consumers.get(name).cloned() {
        Some(consumer) => {
            attach(ctx, req, consumer);
            Flow::Continue
        }
        None => {
            tracing::warn!(consumer = name, "anonymous consumer not found");
            Flow::Respond(unauthorized("Invalid user authorization", challenge))
        }
    }
}

/// The value of query argument `name`, percent-decoded (`+` as a space), as nginx's `get_uri_args` gives it.
pub fn query_arg<'q>(query: Option<&'q str>, name: &str) -> Option<Cow<'q, str>> {
    let raw = crate::router::vars::query_args(query).find(|(k, _)| *k == name).map(|(_, v)| v)?;
    Some(decode_component(raw))
}

/// Percent-decodes one query component (`+` is a space); invalid UTF-8 is replaced.
pub fn decode_component(raw: &str) -> Cow<'_, str> {
    if !raw.contains(['%', '+']) {
        return Cow::Borrowed(raw);
    }
    let spaced = raw.replace('+', " ");
    Cow::Owned(percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
}

/// `uri` without query argument `name` (every occurrence).
pub fn without_query_arg(uri: &http::Uri, name: &str) -> http::Uri {
    let Some(query) = uri.query() else { return uri.clone() };
    let kept: Vec<&str> =
        query.split('&').filter(|p| !p.is_empty() && p.split_once('=').map_or(*p, |(k, _)| k) != name).collect();
    let path = uri.path();
    let target = if kept.is_empty() { path.to_string() } else { format!("{path}?{}", kept.join("&")) };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = target.parse().ok();
    http::Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}
