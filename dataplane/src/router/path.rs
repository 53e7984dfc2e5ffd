//! Route paths as APISIX (lua-resty-radixtree) reads them: exact, `*` prefix, and `:param` segments.
//!
//! A path with parameters is indexed, as radixtree does, under its literal text before the first `:`, and
//! checked segment by segment once that prefix matched: `:name` takes one non-empty segment, a trailing `*` takes
//! the rest, and otherwise the request must end where the pattern ends.

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

/// The segments of a path with parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Params {
    /// The literal text before the first `:`, by which the pattern is indexed.
    literal: Box<str>,
    /// The segments after the leading `/`.
    segments: Box<[Segment]>,
    /// Whether the last segment ends in `*`: its literal part is then a prefix of the rest of the request path.
    open_end: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Param,
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
        let mut segments = Vec::with_capacity(raw.len());
        let mut names: Vec<&str> = Vec::new();
        for (i, seg) in raw.iter().enumerate() {
            match seg.strip_prefix(':') {
                Some(name) => {
                    let bad_name = name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                    // `/a/:id*` mixes a parameter with a prefix in one segment; radixtree has no such pattern.
                    if bad_name || (open_end && i == raw.len() - 1) || names.contains(&name) {
                        return Err(Unsupported::Path(path.to_string()));
                    }
                    names.push(name);
                    segments.push(Segment::Param);
                }
                None => segments.push(Segment::Literal((*seg).into())),
            }
        }
        let literal = path.find(':').map_or(path, |at| &path[..at]);
        Ok(PathPattern::Params(Params { literal: literal.into(), segments: segments.into(), open_end }))
    }

    /// The string the index keys this pattern by, and whether it is an exact key (else a prefix).
    pub(crate) fn key(&self) -> (&str, bool) {
        match self {
            PathPattern::Exact(p) => (p, true),
            PathPattern::Prefix(p) => (p, false),
            PathPattern::Params(p) => (&p.literal, false),
        }
    }

    /// Whether `path` matches, once the index found it under [`PathPattern::key`].
    pub(crate) fn accepts(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(_) | PathPattern::Prefix(_) => true,
            PathPattern::Params(p) => p.accepts(path),
        }
    }
}

impl Params {
    fn accepts(&self, path: &str) -> bool {
        let Some(mut rest) = path.strip_prefix('/') else { return false };
        let last = self.segments.len().saturating_sub(1);
        for (i, seg) in self.segments.iter().enumerate() {
            if i == last && self.open_end {
                // The compiler guarantees the last segment of an open pattern is literal.
                return matches!(seg, Segment::Literal(l) if rest.starts_with(&**l));
            }
            let (head, tail) = match rest.split_once('/') {
                Some((h, t)) => (h, Some(t)),
                None => (rest, None),
            };
            let ok = match seg {
                Segment::Literal(l) => head == &**l,
                Segment::Param => !head.is_empty(),
            };
            if !ok {
                return false;
            }
            match tail {
                _ if i == last => return tail.is_none(),
                Some(t) => rest = t,
                None => return false,
            }
        }
        false
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
