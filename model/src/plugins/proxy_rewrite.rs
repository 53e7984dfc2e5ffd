//! `proxy-rewrite`: changes the URI, method, host and headers of the request sent to the node.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::fault_injection::Scalar;
use super::header_ops::Form;
use super::{FieldError, Schema, check};

/// Methods proxy-rewrite may set (APISIX's list, WebDAV included).
pub const METHODS: [&str; 14] = [
    "GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "MKCOL", "COPY", "MOVE", "PROPFIND", "LOCK", "UNLOCK", "PATCH",
    "TRACE",
];

/// `proxy-rewrite`'s configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyRewrite {
    /// The new path (and query) for the node; `$var` names are replaced by request variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The method sent to the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Pairs of regex and template (`$1` for captures) tried in order on the path; the first match rewrites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex_uri: Option<Vec<String>>,
    /// The Host sent to the node (overrides the upstream's `pass_host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Header changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    /// Sends the raw request target instead of the normalised path (APISIX calls it very unsafe).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub use_real_request_uri_unsafe: bool,
}

/// Header changes, applied in the order add, set, remove. The legacy form (a plain map of names to values)
/// decodes as `set`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Headers {
    /// Values appended to what the request has.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, HeaderValues>,
    /// Values replacing what the request has.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, HeaderValues>,
    /// Headers removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Headers, D::Error> {
        let (add, set, remove) = Form::<BTreeMap<String, HeaderValues>, HeaderValues>::deserialize(d)?.parts();
        Ok(Headers { add, set, remove })
    }
}

/// One header's values: a string or number, or a list of them (one header line each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderValues(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum ValuesForm {
    One(Scalar),
    Many(Vec<Scalar>),
}

impl<'de> Deserialize<'de> for HeaderValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HeaderValues, D::Error> {
        Ok(HeaderValues(match ValuesForm::deserialize(d)? {
            ValuesForm::One(s) => vec![s.text()],
            ValuesForm::Many(list) => list.iter().map(Scalar::text).collect(),
        }))
    }
}

impl Serialize for HeaderValues {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl From<&str> for HeaderValues {
    fn from(value: &str) -> HeaderValues {
        HeaderValues(vec![value.to_string()])
    }
}

impl Schema for ProxyRewrite {
    const NAME: &'static str = "proxy-rewrite";

    fn check(&self) -> Result<(), FieldError> {
        if *self == ProxyRewrite::default() {
            return Err(FieldError::new("", "set at least one of uri, regex_uri, method, host and headers"));
        }
        if let Some(uri) = &self.uri
            && (!uri.starts_with('/') || uri.len() > 4096)
        {
            return Err(FieldError::new("uri", "must start with '/' and have at most 4096 characters"));
        }
        if let Some(m) = &self.method
            && !METHODS.contains(&m.as_str())
        {
            return Err(FieldError::new("method", format!("must be one of {METHODS:?}")));
        }
        if let Some(pairs) = &self.regex_uri {
            check::min_items("regex_uri", pairs, 2)?;
            if pairs.len() % 2 != 0 {
                return Err(FieldError::new("regex_uri", "must hold pairs of pattern and replacement"));
            }
            for (i, pattern) in pairs.iter().step_by(2).enumerate() {
                check::regex(&format!("regex_uri[{}]", i * 2), pattern)?;
            }
        }
        if let Some(host) = &self.host {
            let (name, port) = match host.rsplit_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (host.as_str(), None),
            };
            let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            let port_ok = port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
            if !name_ok || !port_ok {
                return Err(FieldError::new("host", format!("{host:?} must be a host name with an optional port")));
            }
        }
        if let Some(h) = &self.headers {
            if h.add.is_empty() && h.set.is_empty() && h.remove.is_empty() {
                return Err(FieldError::new("headers", "must change at least one header"));
            }
            for (op, map) in [("add", &h.add), ("set", &h.set)] {
                for (name, values) in map {
                    let field = format!("headers.{op}.{name}");
                    check::header_name(&field, name)?;
                    check::min_items(&field, &values.0, 1)?;
                    values.0.iter().try_for_each(|v| check::header_value(&field, v))?;
                }
            }
            h.remove.iter().try_for_each(|name| check::header_name("headers.remove", name))?;
        }
        Ok(())
    }
}
