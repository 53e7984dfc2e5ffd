//! Request path normalisation, before matching: what a route is matched against, the plugins see and the node
//! receives is one and the same path, so no spelling of a path can reach a route (or skip one) that its plain form
//! would not.
//!
//! The policy, close to nginx's `$uri` (which locations match against) and Envoy's `normalize_path` with
//! `merge_slashes` and escaped slashes unescaped and forwarded:
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, and `%2F` too: `/admin%2Fusers` is
//!   `/admin/users`, as most nodes would read it; other escapes are kept, with upper-case hex digits;
//! - runs of `/` become one;
//! - `.` and `..` segments are removed (RFC 3986 section 5.2.4); `..` never climbs above the root;
//! - a `%` not followed by two hex digits makes the request invalid (400), as in nginx.
//!
//! The common path (none of `%`, `//`, `/.`) is checked in one pass and costs no allocation.

use std::borrow::Cow;

/// A path that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid percent-encoding in the path")]
pub struct InvalidPath;

/// The normalised form of `path` (the path only, without the query); borrowed when it is already normal.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, InvalidPath> {
    if is_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path)?;
    Ok(Cow::Owned(remove_dots(&decoded)))
}

/// Whether nothing in `path` needs work: no `%`, no `//`, no segment starting with `.`.
fn is_normal(path: &[u8]) -> bool {
    let mut previous = 0u8;
    for &b in path {
        if b == b'%' || (previous == b'/' && (b == b'/' || b == b'.')) {
            return false;
        }
        previous = b;
    }
    true
}

/// Decodes unreserved escapes and `%2F`, upper-cases the hex of the others, and merges runs of `/`.
fn decode(path: &str) -> Result<String, InvalidPath> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let byte = if b == b'%' {
            let hex = |k: usize| bytes.get(k).and_then(|h| (*h as char).to_digit(16));
            let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2)) else { return Err(InvalidPath) };
            i += 3;
            // Both digits are below 16: the value fits a byte.
            let value = (high * 16 + low) as u8;
            if !(value.is_ascii_alphanumeric() || b"-._~/".contains(&value)) {
                out.push('%');
                out.extend([high, low].map(|d| char::from_digit(d, 16).unwrap_or('0').to_ascii_uppercase()));
                continue;
            }
            value
        } else if !b.is_ascii() {
            // `i` is always at a character boundary: only ASCII bytes and whole characters are stepped over.
            let ch = path[i..].chars().next().ok_or(InvalidPath)?;
            out.push(ch);
            i += ch.len_utf8();
            continue;
        } else {
            i += 1;
            b
        };
        if byte == b'/' && out.ends_with('/') {
            continue;
        }
        out.push(byte as char);
    }
    Ok(out)
}

/// Removes `.` and `..` segments; a trailing `.` or `..` leaves the path ending in `/`.
fn remove_dots(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        trailing_slash = false;
        match segment {
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

/// Normalises `path` and checks that the result is normal: normalising it again changes nothing, and it has no
/// `//` and no dot segment. For the fuzz target `paths` and its corpus replay.
pub fn exercise(path: &str) {
    let Ok(once) = normalize(path) else { return };
    let again = normalize(&once).expect("a normal path stays readable");
    assert_eq!(once, again, "normalising is idempotent for {path:?}");
    if once.starts_with('/') {
        assert!(!once.contains("//"), "no empty segment in {once:?}");
        assert!(!once.split('/').any(|s| s == "." || s == ".."), "no dot segment in {once:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(path: &str) -> String {
        normalize(path).unwrap().into_owned()
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/a/b", "/a/b/", "/a.b/c..d", "/a-b_c~d", "/über"] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn decodes_merges_and_removes_dots() {
        assert_eq!(n("/a//b///c"), "/a/b/c");
        assert_eq!(n("//a"), "/a");
        assert_eq!(n("/a/./b"), "/a/b");
        assert_eq!(n("/a/b/../c"), "/a/c");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/a/."), "/a/");
        assert_eq!(n("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/%61dmin"), "/admin");
        assert_eq!(n("/admin%2Fusers"), "/admin/users");
        assert_eq!(n("/admin%2fusers"), "/admin/users");
        assert_eq!(n("/a%2F%2Fb"), "/a/b");
        assert_eq!(n("/a/%2E%2E/b"), "/b");
        assert_eq!(n("/a/%2e/b"), "/a/b");
        assert_eq!(n("/a%20b"), "/a%20b");
        assert_eq!(n("/a%3fb"), "/a%3Fb");
        assert_eq!(n("/a%5Cb"), "/a%5Cb");
        assert_eq!(n("/über//x"), "/über/x");
        assert_eq!(n("/%C3%BC"), "/%C3%BC");
        // Dot segments only: `..x` and `.x` are names.
        assert_eq!(n("/a/..x/.y"), "/a/..x/.y");
    }

    #[test]
    fn rejects_broken_escapes() {
        for p in ["/a%", "/a%2", "/a%zz", "/%g0/b"] {
            assert_eq!(normalize(p), Err(InvalidPath), "{p}");
        }
    }
}
