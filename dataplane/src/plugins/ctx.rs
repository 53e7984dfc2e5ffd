//! The per-request context every phase sees, and the consumers authentication plugins look callers up in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Extensions, HeaderValue, Method, StatusCode, Uri};

use super::Chain;

/// An API caller, as the data plane runs it: its name and the plugins it adds once authenticated.
#[derive(Debug)]
pub struct Consumer {
    /// The user name.
    pub username: Arc<str>,
    /// The user name as a header value (`X-Consumer-Username`), when it is a valid one.
    pub username_header: Option<HeaderValue>,
    /// `labels.custom_id` as a header value (`X-Consumer-Custom-ID`).
    pub custom_id: Option<HeaderValue>,
    /// The consumer's own plugins (not its credentials), merged over the route's after authentication.
    pub chain: Chain,
    /// Its credentials as configured, for the authentication plugins to check secrets against.
    pub credentials: Vec<sluice_model::Credential>,
    /// Its jwt-auth key, parsed when the consumer was loaded.
    pub jwt: Option<Arc<super::jwt_auth::JwtKey>>,
}

impl Consumer {
    /// The credential of authentication plugin `name`.
    pub fn credential(&self, name: &str) -> Option<&sluice_model::Credential> {
        self.credentials.iter().find(|c| c.name() == name)
    }
}

/// The credential an authentication plugin looks a caller up by: key-auth's key, basic-auth's user name, jwt-auth's
/// key, hmac-auth's key id.
fn lookup_id(credential: &sluice_model::Credential) -> &str {
    use sluice_model::Credential as C;
    match credential {
        C::KeyAuth(c) => &c.key,
        C::BasicAuth(c) => &c.username,
        C::JwtAuth(c) => &c.key,
        C::HmacAuth(c) => &c.key_id,
    }
}

/// Every consumer, with one index per authentication plugin from credential to consumer (an O(1) lookup). The
/// maps are persistent, so one consumer changes in O(log n) and a snapshot copies in O(1).
#[derive(Debug, Clone, Default)]
pub struct Consumers {
    by_name: imbl::HashMap<Arc<str>, Arc<Consumer>>,
    /// Per authentication plugin (in the order of `Credential::NAMES`): credential id → the consumers holding it,
    /// by user name (more than one is a conflict: the first by name wins, so the outcome does not depend on the
    /// order of writes).
    by_credential: Vec<CredentialIndex>,
}

/// One authentication plugin's index: credential id → the consumers holding it (foldhash: the lookup is on
/// every authenticated request).
type CredentialIndex = imbl::GenericHashMap<
    Arc<str>,
    Arc<[Arc<Consumer>]>,
    foldhash::fast::RandomState,
    imbl::shared_ptr::DefaultSharedPtr,
>;

/// The index of authentication plugin `plugin` among the credential kinds.
fn slot(plugin: &str) -> Option<usize> {
    sluice_model::Credential::NAMES.iter().position(|n| *n == plugin)
}

impl Consumers {
    /// The consumer called `username`.
    pub fn get(&self, username: &str) -> Option<&Arc<Consumer>> {
        self.by_name.get(username)
    }

    /// The consumer whose `plugin` credential is identified by `id`.
    pub fn find(&self, plugin: &str, id: &str) -> Option<&Arc<Consumer>> {
        self.by_credential.get(slot(plugin)?)?.get(id).and_then(|list| list.first())
    }

    /// How many consumers there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Adds or replaces a consumer; returns the credentials another consumer already holds (conflicts).
    pub fn insert(&mut self, consumer: Arc<Consumer>) -> Vec<(&'static str, Arc<str>)> {
        self.remove(&consumer.username.clone());
        let mut conflicts = Vec::new();
        if self.by_credential.is_empty() {
            self.by_credential = vec![CredentialIndex::default(); sluice_model::Credential::NAMES.len()];
        }
        for credential in &consumer.credentials {
            let Some(index) = slot(credential.name()).and_then(|i| self.by_credential.get_mut(i)) else { continue };
            let id = lookup_id(credential);
            let mut holders: Vec<Arc<Consumer>> = index.get(id).map(|l| l.to_vec()).unwrap_or_default();
            if !holders.is_empty() {
                conflicts.push((credential.name(), Arc::from(id)));
            }
            holders.push(consumer.clone());
            holders.sort_by(|a, b| a.username.cmp(&b.username));
            index.insert(Arc::from(id), holders.into());
        }
        self.by_name.insert(consumer.username.clone(), consumer);
        conflicts
    }

    /// Removes the consumer called `username`; returns whether there was one.
    pub fn remove(&mut self, username: &str) -> bool {
        let Some(old) = self.by_name.remove(username) else { return false };
        for credential in &old.credentials {
            let Some(index) = slot(credential.name()).and_then(|i| self.by_credential.get_mut(i)) else { continue };
            let id = lookup_id(credential);
            if let Some(list) = index.get(id) {
                let rest: Vec<Arc<Consumer>> = list.iter().filter(|c| !Arc::ptr_eq(c, &old)).cloned().collect();
                if rest.is_empty() {
                    index.remove(id);
                } else {
                    index.insert(Arc::from(id), rest.into());
                }
            }
        }
        true
    }
}

/// What the logs and metrics say about a route, worked out when the route is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMeta {
    /// The route's id.
    pub id: Arc<str>,
    /// Its `name`.
    pub name: Option<Arc<str>>,
    /// Its service.
    pub service_id: Option<Arc<str>>,
    /// The service's `name`.
    pub service_name: Option<Arc<str>>,
    /// Its path pattern (the first, when it has several), as the `matched_uri` label.
    pub matched_uri: Arc<str>,
    /// Its host pattern (the first, when it has several), as the `matched_host` label.
    pub matched_host: Arc<str>,
}

/// Per-request state handed to every phase.
#[derive(Debug)]
pub struct Ctx {
    /// The matched route; `None` when no route matched (global rules still run).
    pub route: Option<Arc<RouteMeta>>,
    /// The client's address; `real-ip` may replace it with the address a trusted proxy reports.
    pub client: SocketAddr,
    /// Whether the request came over TLS (`$scheme` is `https`).
    pub tls: bool,
    /// When the request arrived.
    pub started: Instant,
    /// The request as the client sent it (for logs and metrics, whatever plugins change later).
    pub method: Method,
    /// The request target as the client sent it.
    pub uri: Uri,
    /// The `Host` the client sent.
    pub host: Option<HeaderValue>,
    /// The consumers of the snapshot the request was matched in.
    pub consumers: Arc<Consumers>,
    /// The authenticated caller, once an authentication plugin found it.
    pub consumer: Option<Arc<Consumer>>,
    /// The `Host` to send to the node instead of what the upstream's `pass_host` gives (proxy-rewrite's `host`).
    pub upstream_host: Option<HeaderValue>,
    /// The upstream the request went to, once chosen.
    pub upstream: Option<Arc<str>>,
    /// The node the response came from.
    pub node: Option<Arc<str>>,
    /// The node's status, when a node answered.
    pub upstream_status: Option<StatusCode>,
    /// Time from sending to the node until its response head arrived.
    pub upstream_latency: Option<Duration>,
    /// The status sent to the client, once known.
    pub status: Option<StatusCode>,
    /// Response body bytes sent to the client so far.
    pub response_bytes: u64,
    /// Request body bytes read from the client, when known.
    pub request_bytes: u64,
    /// The size of the request head as received (request line and header fields); measured only when a plugin
    /// has a log phase.
    pub request_head_bytes: u64,
    /// The size of the response head as sent; measured only when a plugin has a log phase.
    pub response_head_bytes: u64,
    /// The route's own request body limit (`client-control`), in place of the listener's; 0 lifts it.
    pub max_body_size: Option<u64>,
    /// Where the request stands against `limit-count`, for its response headers.
    pub quota: Option<super::limit_count::Quota>,
    /// The `limit-conn` keys this request counts against while it is in flight.
    pub held: Vec<super::limit_conn::Held>,
    /// The traffic-split share chosen for this request (numbered over every rule), whose upstream replaces the
    /// route's.
    pub split: Option<usize>,
    /// Values plugins hand to later phases or to other plugins.
    pub extensions: Extensions,
}

impl Ctx {
    /// A context for a request from `client`, matched (or not) to `route`.
    pub fn new(
        route: Option<Arc<RouteMeta>>,
        client: SocketAddr,
        req: &http::request::Parts,
        consumers: Arc<Consumers>,
    ) -> Ctx {
        Ctx {
            route,
            client,
            tls: false,
            started: Instant::now(),
            method: req.method.clone(),
            uri: req.uri.clone(),
            host: req.headers.get(http::header::HOST).cloned(),
            consumers,
            consumer: None,
            upstream_host: None,
            upstream: None,
            node: None,
            upstream_status: None,
            upstream_latency: None,
            status: None,
            response_bytes: 0,
            request_bytes: 0,
            request_head_bytes: 0,
            response_head_bytes: 0,
            max_body_size: None,
            quota: None,
            held: Vec::new(),
            split: None,
            extensions: Extensions::new(),
        }
    }

    /// The matched route's id.
    pub fn route_id(&self) -> Option<&str> {
        self.route.as_deref().map(|r| &*r.id)
    }

    /// The matched route's service id.
    pub fn service_id(&self) -> Option<&str> {
        self.route.as_deref().and_then(|r| r.service_id.as_deref())
    }

    /// The consumer's user name, once authenticated.
    pub fn consumer_name(&self) -> Option<&str> {
        self.consumer.as_ref().map(|c| &*c.username)
    }
}

/// The size of an HTTP/1.1 head: request (or status) line and fields, as counted for bandwidth.
pub fn head_size(method: &Method, uri: &Uri, headers: &http::HeaderMap) -> u64 {
    let line = method.as_str().len() + uri.path_and_query().map_or(1, |p| p.as_str().len()) + 11;
    (line + fields_size(headers) + 2) as u64
}

/// The bytes of `name: value\r\n` for every field.
pub fn fields_size(headers: &http::HeaderMap) -> usize {
    headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum()
}
