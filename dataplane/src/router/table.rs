//! The routing table as a persistent (structurally shared) index, so one route change builds a new snapshot in
//! O(log n) while readers keep using the old one.
//!
//! Levels: host (exact name, then wildcard suffixes longest first, then host-less) → path (exact by hash, then
//! prefixes and parameter patterns by their literal prefix, longest first, found in a trie of path segments) → a
//! small bucket of candidates sorted by priority. Every map is an `imbl` hash trie: cloning the table is O(1), and inserting or removing copies only
//! the nodes on the way to the change. Buckets are immutable slices rebuilt on change (they hold the routes of one
//! host + path, so their size does not grow with the table).

use std::sync::Arc;

use super::path::{PathPattern, params_accept};
use super::rule::{HostPattern, Rule};
use super::{Entry, RequestInfo};

/// A persistent hash map with a fast hasher (keys come from the configuration, not from clients).
type PMap<K, V> = imbl::GenericHashMap<K, V, foldhash::fast::RandomState, imbl::shared_ptr::DefaultSharedPtr>;

/// One route reachable under a key: the route and which of its paths put it there.
struct Candidate<T> {
    entry: Arc<Entry<T>>,
    path: u16,
    /// For a `:param` pattern (the only kind that needs a check once the index matched its key): the length of
    /// its literal prefix and the rest of the pattern, kept here so the check reads one string and not the route.
    params: Option<(usize, Arc<str>)>,
    /// Whether the route has methods, client addresses or `vars` to check; kept here so a route without any is
    /// accepted without reading it (one cache miss less per lookup in a large table).
    check_conditions: bool,
}

impl<T> Clone for Candidate<T> {
    fn clone(&self) -> Self {
        Candidate {
            entry: self.entry.clone(),
            path: self.path,
            params: self.params.clone(),
            check_conditions: self.check_conditions,
        }
    }
}

impl<T> Candidate<T> {
    fn new(entry: &Arc<Entry<T>>, path: u16) -> Candidate<T> {
        let params = entry.rule.paths.get(usize::from(path)).and_then(PathPattern::params);
        let params = params.map(|(len, rest)| (len, rest.clone()));
        Candidate { entry: entry.clone(), path, params, check_conditions: entry.rule.has_conditions() }
    }

    fn accepts(&self, req: &RequestInfo<'_>) -> bool {
        // The index found the request under the pattern's literal prefix, so the path starts with it.
        self.params.as_ref().is_none_or(|(len, rest)| params_accept(*len, rest, req.path))
            && (!self.check_conditions || self.entry.rule.conditions_hold(req))
    }
}

/// The candidates under one key, in the order they are tried.
type Bucket<T> = Arc<[Candidate<T>]>;

fn bucket_with<T>(old: Option<&Bucket<T>>, add: Candidate<T>) -> Bucket<T> {
    let mut items: Vec<Candidate<T>> = old.map(|b| b.to_vec()).unwrap_or_default();
    items.push(add);
    // Higher priority first, then the id, as APISIX orders routes on the same path.
    items.sort_by(|a, b| {
        (b.entry.rule.priority.cmp(&a.entry.rule.priority))
            .then_with(|| a.entry.rule.id.cmp(&b.entry.rule.id))
            .then_with(|| a.path.cmp(&b.path))
    });
    items.into()
}

fn bucket_without<T>(old: &Bucket<T>, entry: &Arc<Entry<T>>) -> Option<Bucket<T>> {
    let items: Vec<Candidate<T>> = old.iter().filter(|c| !Arc::ptr_eq(&c.entry, entry)).cloned().collect();
    (!items.is_empty()).then(|| items.into())
}

/// Maps grouped by key length, longest first, so a lookup probes one map per distinct length.
struct ByLength<V>(Vec<(usize, PMap<Arc<str>, V>)>);

impl<V> Default for ByLength<V> {
    fn default() -> Self {
        ByLength(Vec::new())
    }
}

impl<V: Clone> Clone for ByLength<V> {
    fn clone(&self) -> Self {
        ByLength(self.0.clone())
    }
}

impl<V: Clone> ByLength<V> {
    fn update(&mut self, key: &Arc<str>, f: impl FnOnce(Option<&V>) -> Option<V>) {
        let at = match self.0.binary_search_by(|(len, _)| key.len().cmp(len)) {
            Ok(at) => at,
            Err(at) => {
                self.0.insert(at, (key.len(), PMap::default()));
                at
            }
        };
        let map = &mut self.0[at].1;
        update(map, key, f);
        if map.is_empty() {
            self.0.remove(at);
        }
    }
}

/// Replaces (or removes, when `f` returns `None`) the value under `key`.
fn update<V: Clone>(map: &mut PMap<Arc<str>, V>, key: &Arc<str>, f: impl FnOnce(Option<&V>) -> Option<V>) {
    match f(map.get(&**key)) {
        Some(v) => {
            map.insert(key.clone(), v);
        }
        None => {
            map.remove(&**key);
        }
    }
}

/// Prefix keys in a trie of whole path segments, so a lookup costs one hash probe per segment of the request
/// path instead of one per distinct prefix length. A key `/a/b/c` sits at node `a → b` with the partial segment
/// `c` (`/a/b/` has the empty partial): it matches when the rest of the path after `/a/b/` starts with `c`.
struct PrefixNode<T> {
    /// Keys ending at this node, by partial segment, longest partial first.
    here: Arc<[(Box<str>, Bucket<T>)]>,
    children: PMap<Arc<str>, Arc<PrefixNode<T>>>,
}

impl<T> Default for PrefixNode<T> {
    fn default() -> Self {
        PrefixNode { here: Arc::new([]), children: PMap::default() }
    }
}

impl<T> Clone for PrefixNode<T> {
    fn clone(&self) -> Self {
        PrefixNode { here: self.here.clone(), children: self.children.clone() }
    }
}

impl<T> PrefixNode<T> {
    fn is_empty(&self) -> bool {
        self.here.is_empty() && self.children.is_empty()
    }

    /// Changes the bucket of `partial` under the full segments `segments` (copying only the nodes on the way).
    fn update(&mut self, segments: &[&str], partial: &str, f: impl FnOnce(Option<&Bucket<T>>) -> Option<Bucket<T>>) {
        match segments.split_first() {
            None => {
                let at = self.here.iter().position(|(p, _)| &**p == partial);
                let mut here: Vec<(Box<str>, Bucket<T>)> = self.here.to_vec();
                match (f(at.map(|i| &self.here[i].1)), at) {
                    (Some(b), Some(i)) => here[i].1 = b,
                    (Some(b), None) => {
                        here.push((partial.into(), b));
                        here.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
                    }
                    (None, Some(i)) => {
                        here.remove(i);
                    }
                    (None, None) => return,
                }
                self.here = here.into();
            }
            Some((first, rest)) => {
                let key: Arc<str> = (*first).into();
                update(&mut self.children, &key, |old| {
                    let mut child = old.map(|c| PrefixNode::clone(c)).unwrap_or_default();
                    child.update(rest, partial, f);
                    (!child.is_empty()).then(|| Arc::new(child))
                });
            }
        }
    }

    /// The first accepting candidate under the longest matching key; `rest` is the path after this node.
    fn find<'t>(&'t self, rest: &str, req: &RequestInfo<'_>) -> Option<&'t Arc<Entry<T>>> {
        if !self.children.is_empty()
            && let Some((segment, tail)) = rest.split_once('/')
            && let Some(child) = self.children.get(segment)
            && let Some(found) = child.find(tail, req)
        {
            return Some(found);
        }
        self.here
            .iter()
            .filter(|(partial, _)| rest.starts_with(&**partial))
            .find_map(|(_, bucket)| bucket.iter().find(|c| c.accepts(req)).map(|c| &c.entry))
    }
}

/// The paths of one host group.
struct PathTable<T> {
    exact: PMap<Arc<str>, Bucket<T>>,
    prefixes: PrefixNode<T>,
}

impl<T> Default for PathTable<T> {
    fn default() -> Self {
        PathTable { exact: PMap::default(), prefixes: PrefixNode::default() }
    }
}

impl<T> Clone for PathTable<T> {
    fn clone(&self) -> Self {
        PathTable { exact: self.exact.clone(), prefixes: self.prefixes.clone() }
    }
}

impl<T> PathTable<T> {
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    /// Adds (`add`) or removes the entry under each of its paths.
    fn change(&mut self, entry: &Arc<Entry<T>>, add: bool) {
        for (i, path) in entry.rule.paths.iter().enumerate() {
            let Ok(index) = u16::try_from(i) else { break };
            let (key, exact) = path.key();
            let key: Arc<str> = key.into();
            let f = |old: Option<&Bucket<T>>| match (add, old) {
                // A route listing the same path twice is one candidate per distinct pattern.
                (true, Some(b)) if b.iter().any(|c| Arc::ptr_eq(&c.entry, entry) && same_path(c, path)) => {
                    Some(b.clone())
                }
                (true, old) => Some(bucket_with(old, Candidate::new(entry, index))),
                (false, Some(b)) => bucket_without(b, entry),
                (false, None) => None,
            };
            if exact {
                update(&mut self.exact, &key, f);
            } else {
                // Keys start with `/` (the model checks it); the last piece is the partial segment.
                let body = key.strip_prefix('/').unwrap_or(&key);
                let mut pieces: Vec<&str> = body.split('/').collect();
                let partial = pieces.pop().unwrap_or("");
                self.prefixes.update(&pieces, partial, f);
            }
        }
    }

    fn find<'t>(&'t self, req: &RequestInfo<'_>) -> Option<&'t Arc<Entry<T>>> {
        let first = |b: &'t Bucket<T>| b.iter().find(|c| c.accepts(req)).map(|c| &c.entry);
        if let Some(found) = self.exact.get(req.path).and_then(first) {
            return Some(found);
        }
        let rest = req.path.strip_prefix('/')?;
        self.prefixes.find(rest, req)
    }
}

fn same_path<T>(c: &Candidate<T>, path: &PathPattern) -> bool {
    c.entry.rule.paths.get(usize::from(c.path)) == Some(path)
}

/// The compiled routing table: an immutable snapshot once published, cheap to clone and to change.
pub struct Router<T> {
    exact_hosts: PMap<Arc<str>, Arc<PathTable<T>>>,
    /// Wildcard suffixes grouped by length, longest first.
    wildcard_hosts: ByLength<Arc<PathTable<T>>>,
    any_host: PathTable<T>,
    routes: usize,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router {
            exact_hosts: PMap::default(),
            wildcard_hosts: ByLength::default(),
            any_host: PathTable::default(),
            routes: 0,
        }
    }
}

impl<T> Clone for Router<T> {
    fn clone(&self) -> Self {
        Router {
            exact_hosts: self.exact_hosts.clone(),
            wildcard_hosts: self.wildcard_hosts.clone(),
            any_host: self.any_host.clone(),
            routes: self.routes,
        }
    }
}

impl<T> std::fmt::Debug for Router<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("routes", &self.routes).finish_non_exhaustive()
    }
}

impl<T> Router<T> {
    /// Builds a router from rules and their values; disabled rules (`status: 0`) are left out.
    pub fn new(rules: impl IntoIterator<Item = (Rule, T)>) -> Router<T> {
        let mut router = Router::default();
        for (rule, value) in rules {
            router.insert(&Arc::new(Entry { rule, value }));
        }
        router
    }

    /// Adds a route; a disabled one is ignored. Its cost depends on the route's hosts and paths, not on the table.
    pub fn insert(&mut self, entry: &Arc<Entry<T>>) {
        if entry.rule.is_enabled() {
            self.change(entry, true);
            self.routes += 1;
        }
    }

    /// Removes a route previously inserted (the same `Arc`); anything else is ignored.
    pub fn remove(&mut self, entry: &Arc<Entry<T>>) {
        if entry.rule.is_enabled() {
            self.change(entry, false);
            self.routes = self.routes.saturating_sub(1);
        }
    }

    fn change(&mut self, entry: &Arc<Entry<T>>, add: bool) {
        let rule = &entry.rule;
        if rule.hosts.is_empty() {
            self.any_host.change(entry, add);
        }
        for host in rule.hosts.iter() {
            let f = |old: Option<&Arc<PathTable<T>>>| {
                let mut table = old.map(|t| PathTable::clone(t)).unwrap_or_default();
                table.change(entry, add);
                (!table.is_empty()).then(|| Arc::new(table))
            };
            match host {
                HostPattern::Exact(h) => update(&mut self.exact_hosts, h, f),
                HostPattern::Wildcard(suffix) => self.wildcard_hosts.update(suffix, f),
            }
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

    /// The route a request goes to, if any. Does not allocate.
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
    use serde_json::json;

    fn entry(id: &str, v: serde_json::Value) -> Arc<Entry<String>> {
        let mut v = v;
        v["upstream_id"] = json!("u");
        let route = sluice_model::decode_route(v.to_string().as_bytes()).unwrap();
        Arc::new(Entry { rule: Rule::from_route(id, &route).unwrap(), value: id.to_string() })
    }

    #[test]
    fn removes_every_trace_of_a_route() {
        let mut r = Router::default();
        let a = entry("a", json!({"uris": ["/a", "/p/*", "/u/:id"], "hosts": ["x.com", "*.y.com"]}));
        let b = entry("b", json!({"uri": "/a"}));
        r.insert(&a);
        r.insert(&b);
        let before = r.clone();
        r.remove(&a);
        assert_eq!((r.len(), before.len()), (1, 2));
        assert!(r.exact_hosts.is_empty() && r.wildcard_hosts.0.is_empty(), "empty host tables are dropped");
        assert!(r.any_host.prefixes.children.is_empty());
        r.remove(&b);
        assert!(r.any_host.is_empty());
        // The snapshot taken before is untouched.
        assert_eq!(before.exact_hosts.len(), 1);
    }
}
