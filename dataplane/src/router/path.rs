//! Route paths as APISIX (lua-resty-radixtree) reads them: exact, `*` prefix, and `:param` segments.
//!
//! A path with parameters is indexed, as radixtree does, under its literal text before the first `:`, and
//! checked segment by segment once that prefix matched: `:name` takes one non-empty segment, a trailing `*` takes
//! the rest, and otherwise the request must end where the pattern ends.

use std::sync::Arc;

use super::Unsupported;

/// One compiled path of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathPattern {
    /// The whole path.
    Exact(Box<str>),
    /// The path before the trailing `*`.
    Prefix(Box<str>),
    /// A path with `:param` segments.
    Params(Params),
}

/// A path with parameters: the literal text before the first `:`, by which the pattern is indexed, and the rest
/// of the pattern as written, checked in place against the rest of the request path (one allocation to read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Params {
    literal: Box<str>,
    /// Segments after the literal, separated by `/`: `:name` takes one non-empty segment, any other must be equal,
    /// and a last segment ending in `*` is a prefix of whatever the request has left.
    rest: Arc<str>,
}

impl PathPattern {
    /// Compiles one `uri` / `uris` entry (already checked to start with `/` and to have `*` only at the end).
    pub(crate) fn compile(path: &str) -> Result<PathPattern, Unsupported> {
        let has_params = path.split('/').any(|s| s.starts_with(':'));
        if !has_params {
            return Ok(match path.strip_suffix('*') {
                Some(prefix) => PathPattern::Prefix(prefix.into()),
                None => PathPattern::Exact(path.into()),
            });
        }
        let (body, open_end) = match path.strip_suffix('*') {
            Some(body) => (body, true),
            None => (path, false),
        };
        let raw: Vec<&str> = body.strip_prefix('/').unwrap_or(body).split('/').collect();
        let mut names: Vec<&str> = Vec::new();
        for (i, seg) in raw.iter().enumerate() {
            if let Some(name) = seg.strip_prefix(':') {
                let bad_name = name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                // `/a/:id*` mixes a parameter with a prefix in one segment; radixtree has no such pattern.
                if bad_name || (open_end && i == raw.len() - 1) || names.contains(&name) {
                    return Err(Unsupported::Path(path.to_string()));
                }
                names.push(name);
            }
        }
        // A parameter starts a segment, so the literal ends with `/` and the rest starts at a segment.
        let at = path.find(':').unwrap_or(path.len());
        Ok(PathPattern::Params(Params { literal: path[..at].into(), rest: path[at..].into() }))
    }

    /// The string the index keys this pattern by, and whether it is an exact key (else a prefix).
    pub(crate) fn key(&self) -> (&str, bool) {
        match self {
            PathPattern::Exact(p) => (p, true),
            PathPattern::Prefix(p) => (p, false),
            PathPattern::Params(p) => (&p.literal, false),
        }
    }

    /// Whether `path` matches, once the index found it under [`PathPattern::key`] (the table checks through
    /// [`PathPattern::params`] instead, without reading the pattern).
    #[cfg(test)]
    pub(crate) fn accepts(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(_) | PathPattern::Prefix(_) => true,
            PathPattern::Params(p) => path.starts_with(&*p.literal) && params_accept(p.literal.len(), &p.rest, path),
        }
    }

    /// For a pattern with parameters: the length of its literal prefix and the rest of the pattern, so a caller
    /// that found the request under [`PathPattern::key`] can check it with [`params_accept`] alone.
    pub(crate) fn params(&self) -> Option<(usize, &Arc<str>)> {
        match self {
            PathPattern::Params(p) => Some((p.literal.len(), &p.rest)),
            _ => None,
        }
    }
}

/// Whether `path`, found under a parameter pattern's literal prefix of `literal_len` bytes, matches the rest of
/// the pattern.
pub(crate) fn params_accept(literal_len: usize, rest: &str, path: &str) -> bool {
    path.get(literal_len..).is_some_and(|tail| rest_matches(rest, tail))
}

/// Whether the rest of a request path (after the literal prefix) matches the rest of a parameter pattern.
fn rest_matches(pattern: &str, path: &str) -> bool {
    let (mut pattern, mut path) = (pattern, path);
    loop {
        let (want, more) = match pattern.split_once('/') {
            Some((w, m)) => (w, Some(m)),
            None => (pattern, None),
        };
        if more.is_none()
            && let Some(prefix) = want.strip_suffix('*')
        {
            // The compiler only lets a literal end in `*`, and only in the last segment.
            return path.starts_with(prefix);
        }
        let (head, tail) = match path.split_once('/') {
            Some((h, t)) => (h, Some(t)),
            None => (path, None),
        };
        let ok = if want.starts_with(':') { !head.is_empty() } else { head == want };
        match (ok, more, tail) {
            (false, _, _) => return false,
            (true, None, tail) => return tail.is_none(),
            (true, Some(_), None) => return false,
            (true, Some(m), Some(t)) => (pattern, path) = (m, t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_parameter_segments() {
        let cases = [
            ("/user/:id", "/user/42", true),
            ("/user/:id", "/user/", false),
            ("/user/:id", "/user/42/", false),
            ("/user/:id", "/user/42/x", false),
            ("/user/:id/posts/:post", "/user/1/posts/2", true),
            ("/user/:id/posts/:post", "/user/1/comments/2", false),
            ("/user/:id/*", "/user/1/a/b", true),
            ("/user/:id/*", "/user/1/", true),
            ("/user/:id/*", "/user/1", false),
            ("/user/:id/file*", "/user/1/file.txt", true),
            ("/user/:id/file*", "/user/1/other", false),
            ("/:tenant/api", "/acme/api", true),
            ("/:tenant/api", "/acme/api/v1", false),
        ];
        for (pattern, path, want) in cases {
            let p = PathPattern::compile(pattern).unwrap();
            let (key, exact) = p.key();
            assert!(!exact && path.starts_with(key), "{pattern} is indexed by its literal prefix {key:?}");
            assert_eq!(p.accepts(path), want, "{pattern} vs {path}");
        }
    }

    #[test]
    fn rejects_odd_parameters() {
        for bad in ["/a/:", "/a/:id*", "/a/:id/:id", "/a/:x-y"] {
            assert!(PathPattern::compile(bad).is_err(), "{bad}");
        }
        assert_eq!(PathPattern::compile("/v1/things:batch").unwrap(), PathPattern::Exact("/v1/things:batch".into()));
    }
}
