//! Route matching with APISIX semantics, as a pure data structure: no IO, tested with plain values.
//!
//! Precedence: routes whose host matches exactly, then wildcard hosts (longer suffix first), then routes without
//! hosts. Within each group: the exact path, then prefixes from longest to shortest; for one path, higher
//! `priority` first and then the id. The first candidate whose methods, client address and `vars` hold wins;
//! if none does, the next group is tried. Lookups are hash probes per group and per distinct prefix length, so
//! the cost does not grow with the number of routes.

mod net;
pub mod vars;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method};
use sluice_model::Route;
use sluice_model::route::METHODS;

pub use net::IpRange;
pub use vars::{Vars, VarsError};

/// What the router looks at in a request; built once per request without allocating.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The host, lowercase and without port (see [`normalize_host`]).
    pub host: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The client address.
    pub remote_addr: IpAddr,
}

/// Strips the port from a `Host` value and lowercases it, allocating only when it has uppercase letters.
pub fn normalize_host(raw: &str) -> Cow<'_, str> {
    let host = if raw.starts_with('[') {
        // `[v6]:port`: keep the brackets, drop the port.
        raw.find(']').map_or(raw, |end| &raw[..=end])
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// A route field the router cannot honour; the route is rejected rather than matched differently.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unsupported {
    /// A host pattern other than a name or a leading `*.` wildcard.
    #[error("host {0:?} is not supported: use a name or a leading '*.' wildcard")]
    Host(String),
    /// A path with `:param` segments (radixtree parameters).
    #[error("path {0:?} uses ':param' segments, which are not supported")]
    Path(String),
    /// A client address that is neither an IP address nor a CIDR block.
    #[error("remote address {0:?} is not an IP address or CIDR block")]
    RemoteAddr(String),
    /// A `vars` expression outside the supported subset.
    #[error("vars: {0}")]
    Vars(#[from] VarsError),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HostPattern {
    Exact(Box<str>),
    /// The suffix after the `*`, starting with `.`.
    Wildcard(Box<str>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PathPattern {
    Exact(Box<str>),
    /// The path before the trailing `*`.
    Prefix(Box<str>),
}

/// The matching part of one route, compiled.
#[derive(Debug, Clone)]
pub struct Rule {
    id: Arc<str>,
    priority: i64,
    enabled: bool,
    hosts: Vec<HostPattern>,
    paths: Vec<PathPattern>,
    /// Bit `i` set means `METHODS[i]` is allowed; `None` allows any method.
    methods: Option<u16>,
    remote_addrs: Vec<IpRange>,
    vars: Vars,
}

impl Rule {
    /// Compiles the matching fields of a (validated) route.
    pub fn from_route(id: &str, route: &Route) -> Result<Rule, Unsupported> {
        let hosts = route.host_list().map(compile_host).collect::<Result<Vec<_>, _>>()?;
        let paths = route.paths().map(compile_path).collect::<Result<Vec<_>, _>>()?;
        let methods =
            route.methods.as_ref().map(|list| list.iter().filter_map(|m| method_bit(m)).fold(0, |a, b| a | b));
        let remote_addrs = route
            .remote_addr_list()
            .map(|a| IpRange::parse(a).ok_or_else(|| Unsupported::RemoteAddr(a.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let vars = Vars::compile(route.vars.as_deref().unwrap_or_default())?;
        Ok(Rule {
            id: id.into(),
            priority: route.priority,
            enabled: route.is_enabled(),
            hosts,
            paths,
            methods,
            remote_addrs,
            vars,
        })
    }

    /// The route id.
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// Whether the method, client address and `vars` conditions hold (host and path were matched by the index).
    fn conditions_hold(&self, req: &RequestInfo<'_>) -> bool {
        if let Some(allowed) = self.methods
            && method_bit(req.method.as_str()).is_none_or(|bit| allowed & bit == 0)
        {
            return false;
        }
        if !self.remote_addrs.is_empty() && !self.remote_addrs.iter().any(|r| r.contains(req.remote_addr)) {
            return false;
        }
        self.vars.is_empty() || self.vars.matches(req)
    }
}

fn method_bit(method: &str) -> Option<u16> {
    METHODS.iter().position(|m| *m == method).map(|i| 1 << i)
}

fn compile_host(host: &str) -> Result<HostPattern, Unsupported> {
    let lower = host.to_ascii_lowercase();
    match lower.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 && !suffix.contains('*') => {
            Ok(HostPattern::Wildcard(suffix.into()))
        }
        Some(_) => Err(Unsupported::Host(host.to_string())),
        None if lower.contains('*') => Err(Unsupported::Host(host.to_string())),
        None => Ok(HostPattern::Exact(normalize_host(&lower).into())),
    }
}

fn compile_path(path: &str) -> Result<PathPattern, Unsupported> {
    if path.split('/').any(|segment| segment.starts_with(':')) {
        return Err(Unsupported::Path(path.to_string()));
    }
    Ok(match path.strip_suffix('*') {
        Some(prefix) => PathPattern::Prefix(prefix.into()),
        None => PathPattern::Exact(path.into()),
    })
}

/// A routed value with the rule that matched it.
#[derive(Debug)]
pub struct Entry<T> {
    /// The compiled matching rule.
    pub rule: Rule,
    /// What the route leads to.
    pub value: T,
}

type Candidates<T> = Vec<Arc<Entry<T>>>;

/// Strings grouped by length, longest first, so a lookup probes one hash map per distinct length.
#[derive(Debug)]
struct ByLength<V>(Vec<(usize, HashMap<Box<str>, V>)>);

impl<V: Default> ByLength<V> {
    fn slot(&mut self, key: &str) -> &mut V {
        // Sorted by length, descending.
        let at = match self.0.binary_search_by(|(len, _)| key.len().cmp(len)) {
            Ok(at) => at,
            Err(at) => {
                self.0.insert(at, (key.len(), HashMap::new()));
                at
            }
        };
        self.0[at].1.entry(key.into()).or_default()
    }
}

impl<V> ByLength<V> {
    fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.0.iter_mut().flat_map(|(_, m)| m.values_mut())
    }
}

impl<V> Default for ByLength<V> {
    fn default() -> Self {
        ByLength(Vec::new())
    }
}

/// Paths of one host group: exact paths by hash, prefixes grouped by length (longest first).
#[derive(Debug)]
struct PathTable<T> {
    exact: HashMap<Box<str>, Candidates<T>>,
    prefixes: ByLength<Candidates<T>>,
}

impl<T> Default for PathTable<T> {
    fn default() -> Self {
        PathTable { exact: HashMap::new(), prefixes: ByLength::default() }
    }
}

impl<T> PathTable<T> {
    fn insert(&mut self, path: &PathPattern, entry: &Arc<Entry<T>>) {
        let slot = match path {
            PathPattern::Exact(p) => self.exact.entry(p.clone()).or_default(),
            PathPattern::Prefix(p) => self.prefixes.slot(p),
        };
        // A route listing the same path twice is one candidate.
        if !slot.iter().any(|e| Arc::ptr_eq(e, entry)) {
            slot.push(entry.clone());
        }
    }

    fn sort(&mut self) {
        let order = |a: &Arc<Entry<T>>, b: &Arc<Entry<T>>| {
            b.rule.priority.cmp(&a.rule.priority).then_with(|| a.rule.id.cmp(&b.rule.id))
        };
        self.exact.values_mut().for_each(|c| c.sort_by(order));
        self.prefixes.values_mut().for_each(|c| c.sort_by(order));
    }

    fn find<'t>(&'t self, req: &RequestInfo<'_>) -> Option<&'t Arc<Entry<T>>> {
        let first = |c: &'t Candidates<T>| c.iter().find(move |e| e.rule.conditions_hold(req));
        if let Some(found) = self.exact.get(req.path).and_then(first) {
            return Some(found);
        }
        self.prefixes
            .0
            .iter()
            .filter(|(len, _)| *len <= req.path.len() && req.path.is_char_boundary(*len))
            .find_map(|(len, map)| map.get(&req.path[..*len]).and_then(first))
    }
}

/// The compiled routing table: immutable once built, shared by every request through the config snapshot.
#[derive(Debug)]
pub struct Router<T> {
    exact_hosts: HashMap<Box<str>, PathTable<T>>,
    /// Wildcard suffixes grouped by length, longest first.
    wildcard_hosts: ByLength<PathTable<T>>,
    any_host: PathTable<T>,
    routes: usize,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router {
            exact_hosts: HashMap::new(),
            wildcard_hosts: ByLength::default(),
            any_host: PathTable::default(),
            routes: 0,
        }
    }
}

impl<T> Router<T> {
    /// Builds a router from rules and their values; disabled rules (`status: 0`) are left out.
    pub fn new(rules: impl IntoIterator<Item = (Rule, T)>) -> Router<T> {
        let mut router = Router::default();
        for (rule, value) in rules {
            if rule.enabled {
                router.insert(Arc::new(Entry { rule, value }));
            }
        }
        router.exact_hosts.values_mut().for_each(PathTable::sort);
        router.wildcard_hosts.values_mut().for_each(PathTable::sort);
        router.any_host.sort();
        router
    }

    fn insert(&mut self, entry: Arc<Entry<T>>) {
        self.routes += 1;
        let rule = &entry.rule;
        if rule.hosts.is_empty() {
            rule.paths.iter().for_each(|p| self.any_host.insert(p, &entry));
        }
        for host in &rule.hosts {
            let table = match host {
                HostPattern::Exact(h) => self.exact_hosts.entry(h.clone()).or_default(),
                HostPattern::Wildcard(suffix) => self.wildcard_hosts.slot(suffix),
            };
            rule.paths.iter().for_each(|p| table.insert(p, &entry));
        }
    }

    /// The number of enabled routes.
    pub fn len(&self) -> usize {
        self.routes
    }

    /// Whether there are no enabled routes.
    pub fn is_empty(&self) -> bool {
        self.routes == 0
    }

    /// The route a request goes to, if any.
    pub fn find(&self, req: &RequestInfo<'_>) -> Option<&Arc<Entry<T>>> {
        let host = req.host;
        if let Some(found) = self.exact_hosts.get(host).and_then(|t| t.find(req)) {
            return Some(found);
        }
        for (len, suffixes) in &self.wildcard_hosts.0 {
            // `*.foo.com` needs at least one label before `.foo.com`.
            if host.len() > *len
                && host.is_char_boundary(host.len() - len)
                && let Some(found) = suffixes.get(&host[host.len() - len..]).and_then(|t| t.find(req))
            {
                return Some(found);
            }
        }
        self.any_host.find(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn route(v: Value) -> Route {
        let mut v = v;
        v["upstream_id"] = json!("u");
        sluice_model::decode_route(v.to_string().as_bytes()).unwrap()
    }

    fn router(routes: Vec<(&str, Value)>) -> Router<String> {
        Router::new(routes.into_iter().map(|(id, v)| (Rule::from_route(id, &route(v)).unwrap(), id.to_string())))
    }

    struct Req {
        method: Method,
        host: String,
        path: String,
        query: Option<String>,
        headers: HeaderMap,
        addr: IpAddr,
    }

    fn req(method: &str, host: &str, uri: &str) -> Req {
        let (path, query) = match uri.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (uri.to_string(), None),
        };
        Req {
            method: method.parse().unwrap(),
            host: normalize_host(host).into_owned(),
            path,
            query,
            headers: HeaderMap::new(),
            addr: "127.0.0.1".parse().unwrap(),
        }
    }

    fn find<'r>(r: &'r Router<String>, q: &Req) -> Option<&'r str> {
        let info = RequestInfo {
            method: &q.method,
            host: &q.host,
            path: &q.path,
            query: q.query.as_deref(),
            headers: &q.headers,
            remote_addr: q.addr,
        };
        r.find(&info).map(|e| e.value.as_str())
    }

    #[test]
    fn normalizes_hosts() {
        assert_eq!(normalize_host("Foo.COM:8080"), "foo.com");
        assert!(matches!(normalize_host("foo.com:80"), Cow::Borrowed("foo.com")));
        assert_eq!(normalize_host("[::1]:9080"), "[::1]");
        assert_eq!(normalize_host("foo.com."), "foo.com");
        assert_eq!(normalize_host(""), "");
    }

    /// Table of (routes, request, expected route id).
    #[test]
    fn follows_apisix_precedence() {
        type Case = (Vec<(&'static str, Value)>, (&'static str, &'static str, &'static str), Option<&'static str>);
        let cases: Vec<Case> = vec![
            // APISIX black box: a host-bound route answers nothing without that host.
            (vec![("r1", json!({"uri": "/hello", "host": "foo.com"}))], ("GET", "bar.com", "/hello"), None),
            (vec![("r1", json!({"uri": "/hello", "host": "foo.com"}))], ("GET", "foo.com", "/hello"), Some("r1")),
            (vec![("r1", json!({"uri": "/hello", "host": "foo.com"}))], ("GET", "FOO.com:9080", "/hello"), Some("r1")),
            // Exact paths are exact.
            (vec![("r1", json!({"uri": "/hello"}))], ("GET", "x", "/hello/"), None),
            (vec![("r1", json!({"uri": "/hello"}))], ("GET", "x", "/hello"), Some("r1")),
            (vec![("r1", json!({"uri": "/hello"}))], ("GET", "x", "/hello?a=1"), Some("r1")),
            // Prefixes.
            (vec![("r1", json!({"uri": "/foo/*"}))], ("GET", "x", "/foo/bar/baz"), Some("r1")),
            (vec![("r1", json!({"uri": "/foo/*"}))], ("GET", "x", "/foo"), None),
            (vec![("r1", json!({"uri": "/foo*"}))], ("GET", "x", "/foobar"), Some("r1")),
            (vec![("r1", json!({"uri": "/*"}))], ("GET", "x", "/anything/at/all"), Some("r1")),
            // Exact over prefix, longer prefix first, whatever the priority.
            (
                vec![("a", json!({"uri": "/api/*", "priority": 10})), ("b", json!({"uri": "/api/v1"}))],
                ("GET", "x", "/api/v1"),
                Some("b"),
            ),
            (
                vec![("a", json!({"uri": "/api/*", "priority": 10})), ("b", json!({"uri": "/api/v1/*"}))],
                ("GET", "x", "/api/v1/x"),
                Some("b"),
            ),
            (
                vec![("a", json!({"uri": "/api/*"})), ("b", json!({"uri": "/api/v1/*"}))],
                ("GET", "x", "/api/v2/x"),
                Some("a"),
            ),
            // Same path: higher priority, then id.
            (
                vec![("a", json!({"uri": "/p", "priority": 1})), ("b", json!({"uri": "/p", "priority": 5}))],
                ("GET", "x", "/p"),
                Some("b"),
            ),
            (vec![("b", json!({"uri": "/p"})), ("a", json!({"uri": "/p"}))], ("GET", "x", "/p"), Some("a")),
            // A failed condition falls through to the next candidate.
            (
                vec![
                    ("a", json!({"uri": "/p", "priority": 5, "methods": ["POST"]})),
                    ("b", json!({"uri": "/p", "methods": ["GET"]})),
                ],
                ("GET", "x", "/p"),
                Some("b"),
            ),
            (vec![("a", json!({"uri": "/p", "methods": ["POST"]}))], ("GET", "x", "/p"), None),
            (vec![("a", json!({"uri": "/p", "methods": ["PURGE"]}))], ("PURGE", "x", "/p"), Some("a")),
            // Host-bound routes before host-less ones, and fall back when the host group has no match.
            (
                vec![("any", json!({"uri": "/*"})), ("foo", json!({"uri": "/*", "host": "foo.com"}))],
                ("GET", "foo.com", "/x"),
                Some("foo"),
            ),
            (
                vec![("any", json!({"uri": "/*"})), ("foo", json!({"uri": "/only", "host": "foo.com"}))],
                ("GET", "foo.com", "/x"),
                Some("any"),
            ),
            // Wildcard hosts: any deeper subdomain, not the bare domain; exact host first; longer suffix first.
            (vec![("w", json!({"uri": "/*", "host": "*.foo.com"}))], ("GET", "a.b.foo.com", "/"), Some("w")),
            (vec![("w", json!({"uri": "/*", "host": "*.foo.com"}))], ("GET", "foo.com", "/"), None),
            (vec![("w", json!({"uri": "/*", "host": "*.foo.com"}))], ("GET", "afoo.com", "/"), None),
            (
                vec![
                    ("w", json!({"uri": "/*", "host": "*.foo.com"})),
                    ("e", json!({"uri": "/*", "host": "a.foo.com"})),
                ],
                ("GET", "a.foo.com", "/"),
                Some("e"),
            ),
            (
                vec![
                    ("short", json!({"uri": "/*", "host": "*.foo.com"})),
                    ("long", json!({"uri": "/*", "host": "*.bar.foo.com"})),
                ],
                ("GET", "x.bar.foo.com", "/"),
                Some("long"),
            ),
            (
                vec![("w", json!({"uri": "/*", "hosts": ["*.Foo.com", "other.com"]}))],
                ("GET", "X.FOO.COM", "/"),
                Some("w"),
            ),
            // The controller's one-label Ingress wildcard.
            (
                vec![(
                    "w",
                    json!({"uri": "/*", "hosts": ["*.example.com"],
                    "vars": [["host", "~~", "^[^.]+\\.example\\.com$"]]}),
                )],
                ("GET", "a.example.com", "/"),
                Some("w"),
            ),
            (
                vec![(
                    "w",
                    json!({"uri": "/*", "hosts": ["*.example.com"],
                    "vars": [["host", "~~", "^[^.]+\\.example\\.com$"]]}),
                )],
                ("GET", "a.b.example.com", "/"),
                None,
            ),
            // Several uris.
            (vec![("m", json!({"uris": ["/a", "/b/*"]}))], ("GET", "x", "/b/c"), Some("m")),
            // Disabled routes are not routed.
            (vec![("off", json!({"uri": "/p", "status": 0}))], ("GET", "x", "/p"), None),
            (
                vec![("off", json!({"uri": "/p", "status": 0, "priority": 9})), ("on", json!({"uri": "/p"}))],
                ("GET", "x", "/p"),
                Some("on"),
            ),
            // vars.
            (vec![("v", json!({"uri": "/p", "vars": [["arg_v", "==", "2"]]}))], ("GET", "x", "/p?v=2"), Some("v")),
            (vec![("v", json!({"uri": "/p", "vars": [["arg_v", "==", "2"]]}))], ("GET", "x", "/p?v=3"), None),
        ];
        for (routes, (method, host, uri), want) in cases {
            let desc = format!("{routes:?} {method} {host}{uri}");
            let r = router(routes);
            assert_eq!(find(&r, &req(method, host, uri)), want, "{desc}");
        }
    }

    #[test]
    fn matches_client_addresses() {
        let r = router(vec![
            ("lan", json!({"uri": "/p", "remote_addrs": ["192.168.0.0/16", "fd00::/8"], "priority": 1})),
            ("one", json!({"uri": "/p", "remote_addr": "10.0.0.1"})),
        ]);
        let with = |addr: &str| {
            let mut q = req("GET", "x", "/p");
            q.addr = addr.parse().unwrap();
            find(&r, &q).map(str::to_string)
        };
        assert_eq!(with("192.168.4.2").as_deref(), Some("lan"));
        assert_eq!(with("fd12::1").as_deref(), Some("lan"));
        assert_eq!(with("10.0.0.1").as_deref(), Some("one"));
        assert_eq!(with("10.0.0.2"), None);
    }

    #[test]
    fn matches_headers_in_vars() {
        let r = router(vec![("canary", json!({"uri": "/p", "vars": [["http_x_canary", "==", "yes"]]}))]);
        let mut q = req("GET", "x", "/p");
        assert_eq!(find(&r, &q), None);
        q.headers.insert("x-canary", "yes".parse().unwrap());
        assert_eq!(find(&r, &q), Some("canary"));
    }

    #[test]
    fn counts_enabled_routes() {
        let r = router(vec![("a", json!({"uri": "/a"})), ("b", json!({"uri": "/b", "status": 0}))]);
        assert_eq!(r.len(), 1);
        assert!(!r.is_empty());
    }

    #[test]
    fn rejects_unsupported_fields() {
        let bad = |v: Value| Rule::from_route("r", &route(v)).unwrap_err();
        assert!(matches!(bad(json!({"uri": "/user/:id"})), Unsupported::Path(_)));
        assert!(matches!(bad(json!({"uri": "/a", "host": "foo.*.com"})), Unsupported::Host(_)));
        assert!(matches!(bad(json!({"uri": "/a", "host": "*"})), Unsupported::Host(_)));
        assert!(matches!(bad(json!({"uri": "/a", "remote_addr": "10.0.0.0/40"})), Unsupported::RemoteAddr(_)));
        assert!(matches!(bad(json!({"uri": "/a", "vars": [["arg_a", "~~", "("]]})), Unsupported::Vars(_)));
    }
}
