//! Text with variables, as APISIX writes it in plugin settings and `chash` keys: `$name` or `${name}` is replaced
//! by a request variable (see [`Variable`]), `$1`…`$9` by a regex capture where the caller has captures, and
//! the variables of the request's context (`route_id`, `service_id`, `consumer_name`) where it has one.
//!
//! A template is compiled once; an unknown variable is an error at compile time rather than an empty string on
//! the request path, so a typo rejects the configuration instead of changing what is sent.

use std::borrow::Cow;

use super::{RequestInfo, Variable};

/// The context variables a template may read, beside the request's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    /// The matched route.
    pub route_id: Option<&'a str>,
    /// The route's service.
    pub service_id: Option<&'a str>,
    /// The authenticated consumer.
    pub consumer_name: Option<&'a str>,
    /// The client's port.
    pub remote_port: Option<u16>,
    /// Regex captures (`$0` is the whole match).
    pub captures: Option<&'a regex::Captures<'a>>,
}

#[derive(Debug, Clone)]
enum Piece {
    Text(Box<str>),
    Var(Variable),
    Capture(usize),
    RouteId,
    ServiceId,
    ConsumerName,
    RemotePort,
}

/// A compiled template.
#[derive(Debug, Clone)]
pub struct Template {
    pieces: Vec<Piece>,
    /// Whether it reads context variables (so callers without a context can refuse it).
    contextual: bool,
}

impl Template {
    /// Compiles `text`; `captures` allows `$1`-style references.
    pub fn compile(text: &str, captures: bool) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        let mut contextual = false;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, used) = match after.strip_prefix('{') {
                Some(inner) => match inner.find('}') {
                    Some(end) => (&inner[..end], end + 2),
                    None => return Err(format!("{text:?}: `${{` without `}}`")),
                },
                None => {
                    let end = if after.starts_with(|c: char| c.is_ascii_digit()) {
                        // `$1x` is capture 1 then `x`, as nginx reads it.
                        after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len())
                    } else {
                        after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len())
                    };
                    (&after[..end], end)
                }
            };
            if name.is_empty() {
                // A lone `$` stays as it is.
                literal.push('$');
                rest = after;
                continue;
            }
            let piece = if name.bytes().all(|b| b.is_ascii_digit()) {
                if !captures {
                    return Err(format!("{text:?}: ${name} refers to a regex capture, and there is no regex here"));
                }
                Piece::Capture(name.parse().map_err(|_| format!("{text:?}: capture ${name} is too large"))?)
            } else {
                match name {
                    "route_id" => Piece::RouteId,
                    "service_id" => Piece::ServiceId,
                    "consumer_name" => Piece::ConsumerName,
                    "remote_port" => Piece::RemotePort,
                    _ => {
                        Piece::Var(Variable::parse(name).ok_or_else(|| format!("{text:?}: unknown variable ${name}"))?)
                    }
                }
            };
            contextual |= matches!(piece, Piece::RouteId | Piece::ServiceId | Piece::ConsumerName | Piece::RemotePort);
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal).into()));
            }
            pieces.push(piece);
            rest = &after[used..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal.into()));
        }
        Ok(Template { pieces, contextual })
    }

    /// The text when there are no variables at all.
    pub fn literal(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [] => Some(""),
            [Piece::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// Whether it reads the request's context (route, service, consumer, port).
    pub fn is_contextual(&self) -> bool {
        self.contextual
    }

    /// The text for this request; absent variables are empty, as in APISIX. `escape` is applied to every
    /// variable's value (not to the literal parts).
    pub fn render<'t>(
        &'t self,
        req: &RequestInfo<'_>,
        scope: &Scope<'_>,
        escape: fn(&str) -> Cow<'_, str>,
    ) -> Cow<'t, str> {
        if let Some(text) = self.literal() {
            return Cow::Borrowed(text);
        }
        let mut out = String::new();
        for piece in &self.pieces {
            let port;
            let value: Option<Cow<'_, str>> = match piece {
                Piece::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Piece::Var(v) => v.value(req),
                Piece::Capture(i) => scope.captures.and_then(|c| c.get(*i)).map(|m| Cow::Borrowed(m.as_str())),
                Piece::RouteId => scope.route_id.map(Cow::Borrowed),
                Piece::ServiceId => scope.service_id.map(Cow::Borrowed),
                Piece::ConsumerName => scope.consumer_name.map(Cow::Borrowed),
                Piece::RemotePort => {
                    port = scope.remote_port.map(|p| p.to_string());
                    port.as_deref().map(Cow::Borrowed)
                }
            };
            if let Some(v) = value {
                out.push_str(&escape(&v));
            }
        }
        Cow::Owned(out)
    }
}

/// No escaping.
pub fn verbatim(value: &str) -> Cow<'_, str> {
    Cow::Borrowed(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method};

    fn render(text: &str, scope: &Scope<'_>) -> String {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "ann".parse().unwrap());
        let req = RequestInfo {
            method: &Method::GET,
            host: "h.com",
            path: "/a/b",
            query: Some("x=1"),
            headers: &headers,
            remote_addr: "10.0.0.1".parse().unwrap(),
            tls: false,
        };
        Template::compile(text, true).unwrap().render(&req, scope, verbatim).into_owned()
    }

    #[test]
    fn renders_variables_captures_and_context() {
        let none = Scope::default();
        assert_eq!(render("/x$uri?$args", &none), "/x/a/b?x=1");
        assert_eq!(render("${http_x_user}-$host$is_args", &none), "ann-h.com?");
        assert_eq!(render("$request_uri|$arg_x|$arg_missing|", &none), "/a/b?x=1|1||");
        assert_eq!(render("cost $ 5", &none), "cost $ 5");
        let re = regex::Regex::new("^/(a)/(b)$").unwrap();
        let caps = re.captures("/a/b").unwrap();
        let scope = Scope { captures: Some(&caps), route_id: Some("r1"), consumer_name: Some("jack"), ..none };
        assert_eq!(render("/$2_$1x/$0/$route_id/$consumer_name/$service_id", &scope), "/b_ax//a/b/r1/jack/");
        assert!(Template::compile("$nope", false).is_err());
        assert!(Template::compile("$1", false).is_err());
        assert!(Template::compile("${uri", false).is_err());
        assert_eq!(Template::compile("plain", false).unwrap().literal(), Some("plain"));
        assert!(Template::compile("$consumer_name", false).unwrap().is_contextual());
    }
}
