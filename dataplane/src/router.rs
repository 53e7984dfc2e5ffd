//! Route matching with APISIX semantics, as a pure data structure: no IO, tested with plain values.
//!
//! Precedence: routes whose host matches exactly, then wildcard hosts (longer suffix first), then routes without
//! hosts. Within each group: the exact path, then prefixes (`/*` and the literal part of `:param` paths) from
//! longest to shortest; for one key, higher `priority` first and then the id. The first candidate whose path
//! pattern, methods, client address and `vars` hold wins; if none does, the next group is tried. Lookups are
//! hash probes per group and per distinct prefix length, so the cost does not grow with the number of routes, and
//! the table is persistent ([`table`]) so one route changes in O(log n).

mod net;
pub mod normalize;
mod path;
mod rule;
pub mod table;
pub mod template;
pub mod vars;

use std::borrow::Cow;
use std::net::IpAddr;

use http::{HeaderMap, Method};

pub use net::IpRange;
pub use rule::{Hosts, Rule};
pub use table::Router;
pub use vars::{Variable, Vars, VarsError};

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
    /// Whether the request came over TLS (`scheme` is `https`).
    pub tls: bool,
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
    /// A `:param` segment radixtree would not accept, or that conflicts with another in the same path.
    #[error(
        "path {0:?}: a ':param' segment must be a whole segment named with letters, digits or '_', \
         used once per path and not followed by '*'"
    )]
    Path(String),
    /// A client address that is neither an IP address nor a CIDR block.
    #[error("remote address {0:?} is not an IP address or CIDR block")]
    RemoteAddr(String),
    /// A `vars` expression that does not compile.
    #[error("vars: {0}")]
    Vars(#[from] VarsError),
}

/// A routed value with the rule that matched it.
#[derive(Debug)]
pub struct Entry<T> {
    /// The compiled matching rule.
    pub rule: Rule,
    /// What the route leads to.
    pub value: T,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use sluice_model::Route;
    use std::sync::Arc;

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
            tls: false,
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
            // `:param` matches one segment; exact paths win over it; literal prefixes order it among prefixes.
            (vec![("p", json!({"uri": "/user/:id"}))], ("GET", "x", "/user/42"), Some("p")),
            (vec![("p", json!({"uri": "/user/:id"}))], ("GET", "x", "/user/42/x"), None),
            (vec![("p", json!({"uri": "/user/:id"}))], ("GET", "x", "/user/"), None),
            (
                vec![("p", json!({"uri": "/user/:id", "priority": 9})), ("me", json!({"uri": "/user/me"}))],
                ("GET", "x", "/user/me"),
                Some("me"),
            ),
            (
                vec![("p", json!({"uri": "/api/:ver/users"})), ("v1", json!({"uri": "/api/v1/*"}))],
                ("GET", "x", "/api/v1/users"),
                Some("v1"),
            ),
            (
                vec![("p", json!({"uri": "/api/:ver/users"})), ("v1", json!({"uri": "/api/v1/*"}))],
                ("GET", "x", "/api/v2/users"),
                Some("p"),
            ),
            (
                vec![("p", json!({"uri": "/api/:ver", "priority": 1})), ("all", json!({"uri": "/api/*"}))],
                ("GET", "x", "/api/v2"),
                Some("p"),
            ),
            (
                vec![("p", json!({"uri": "/api/:ver", "priority": 1})), ("all", json!({"uri": "/api/*"}))],
                ("GET", "x", "/api/v2/deeper"),
                Some("all"),
            ),
            (
                vec![("any", json!({"uri": "/u/:id"})), ("host", json!({"uri": "/u/:id", "host": "h.com"}))],
                ("GET", "h.com", "/u/1"),
                Some("host"),
            ),
            (vec![("w", json!({"uri": "/t/:tenant/*", "host": "*.h.com"}))], ("GET", "a.h.com", "/t/x/y"), Some("w")),
            // vars.
            (vec![("v", json!({"uri": "/p", "vars": [["arg_v", "==", "2"]]}))], ("GET", "x", "/p?v=2"), Some("v")),
            (
                vec![("v", json!({"uri": "/p", "vars": [["OR", ["arg_v", "==", "2"], ["arg_w", "==", "1"]]]}))],
                ("GET", "x", "/p?w=1"),
                Some("v"),
            ),
            (
                vec![("v", json!({"uri": "/p", "vars": [["remote_addr", "ipmatch", ["127.0.0.0/8"]]]}))],
                ("GET", "x", "/p"),
                Some("v"),
            ),
            (
                vec![("v", json!({"uri": "/p", "vars": [["host", "~*", "^X\\.com$"]]}))],
                ("GET", "X.com", "/p"),
                Some("v"),
            ),
            (
                vec![("v", json!({"uri": "/p", "vars": [["request_method", "!", "in", ["POST", "PUT"]]]}))],
                ("GET", "x", "/p"),
                Some("v"),
            ),
            (vec![("v", json!({"uri": "/p", "vars": [["uri", ">", 1]]}))], ("GET", "x", "/p"), None),
            (
                vec![("v", json!({"uri": "/p", "vars": [["http_x_n", ">=", 1], ["http_x_n", "<", 5]]}))],
                ("GET", "x", "/p"),
                None,
            ),
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

    /// Inserting and removing routes one at a time answers exactly as building the final set from scratch.
    #[test]
    fn incremental_changes_match_a_fresh_build() {
        let defs: Vec<(String, Value)> = (0..60)
            .map(|i| {
                let uri = match i % 4 {
                    0 => format!("/s/{}", i % 7),
                    1 => format!("/p/{}/*", i % 5),
                    2 => format!("/u/:id/{}", i % 3),
                    _ => "/*".to_string(),
                };
                let mut v = json!({"uri": uri, "priority": i % 3});
                if i % 5 == 0 {
                    v["host"] = json!(if i % 2 == 0 { "a.com" } else { "*.b.com" });
                }
                (format!("r{i:02}"), v)
            })
            .collect();
        let mut live = Router::default();
        let mut entries = std::collections::HashMap::new();
        for (id, v) in &defs {
            let e = Arc::new(Entry { rule: Rule::from_route(id, &route(v.clone())).unwrap(), value: id.clone() });
            live.insert(&e);
            entries.insert(id.clone(), e);
        }
        // Remove every third route.
        let kept: Vec<&(String, Value)> =
            defs.iter().filter(|(id, _)| id[1..].parse::<u32>().unwrap() % 3 != 0).collect();
        for (id, _) in defs.iter().filter(|(id, _)| id[1..].parse::<u32>().unwrap() % 3 == 0) {
            live.remove(&entries[id]);
        }
        let fresh = router(kept.iter().map(|(id, v)| (id.as_str(), v.clone())).collect());
        assert_eq!(live.len(), fresh.len());
        for host in ["a.com", "x.b.com", "other"] {
            for path in ["/s/1", "/s/3", "/p/2/x", "/p/4/", "/u/7/1", "/u/7/2", "/nothing", "/"] {
                let q = req("GET", host, path);
                assert_eq!(find(&live, &q), find(&fresh, &q), "{host}{path}");
            }
        }
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
        assert!(matches!(bad(json!({"uri": "/user/:id:x"})), Unsupported::Path(_)));
        assert!(matches!(bad(json!({"uri": "/user/:id/:id"})), Unsupported::Path(_)));
        assert!(matches!(bad(json!({"uri": "/a", "host": "foo.*.com"})), Unsupported::Host(_)));
        assert!(matches!(bad(json!({"uri": "/a", "host": "*"})), Unsupported::Host(_)));
        assert!(matches!(bad(json!({"uri": "/a", "remote_addr": "10.0.0.0/40"})), Unsupported::RemoteAddr(_)));
        assert!(matches!(bad(json!({"uri": "/a", "vars": [["arg_a", "~~", "("]]})), Unsupported::Vars(_)));
    }
}
