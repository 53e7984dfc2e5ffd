//! APISIX `vars` expressions (lua-resty-expr): leaves `[var, op, value]` and `[var, "!", op, value]`, combined
//! with `["AND" | "OR" | "!AND" | "!OR", expr, ...]` and nested lists (a list of expressions is an AND).
//!
//! Everything is checked at compile time (variables, operators, value shapes, regexes) so that evaluation on the
//! request path cannot fail and does not allocate except for `remote_addr` compared as text.

use std::borrow::Cow;
use std::net::IpAddr;

use http::HeaderName;
use regex::{Regex, RegexBuilder};
use serde_json::Value;

use super::RequestInfo;
use super::net::IpRange;

/// How deep logical expressions may nest; deeper input is rejected instead of risking the stack.
pub const MAX_DEPTH: usize = 16;

/// Why a `vars` list cannot be evaluated faithfully; the route is rejected rather than matched differently.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VarsError {
    /// The element is neither a leaf `[var, op, value]` / `[var, "!", op, value]` nor a logical expression.
    #[error(
        "vars element {0} must be [var, op, value], [var, \"!\", op, value], a list of expressions or \
         [\"AND\"|\"OR\"|\"!AND\"|\"!OR\", expr, ...]"
    )]
    Shape(String),
    /// Logical expressions nest deeper than [`MAX_DEPTH`].
    #[error("vars nest deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// The variable is not one sluice knows.
    #[error(
        "variable {0:?} is not supported (use uri, host, remote_addr, request_method, request_uri, args, is_args, \
         scheme, http_*, arg_*, cookie_*)"
    )]
    Var(String),
    /// The operator is not one sluice knows.
    #[error("operator {0:?} is not supported (use ==, ~=, >, <, >=, <=, ~~, ~*, in, has, ipmatch)")]
    Op(String),
    /// The value does not suit the operator.
    #[error("value {value} does not suit operator {op:?}")]
    Value {
        /// The operator.
        op: String,
        /// The offending value, as JSON.
        value: String,
    },
    /// The regular expression does not compile.
    #[error("regex {pattern:?}: {reason}")]
    Regex {
        /// The pattern.
        pattern: String,
        /// The compiler's complaint.
        reason: String,
    },
}

/// A compiled `vars` expression; an empty list always holds.
#[derive(Debug, Clone, Default)]
pub struct Vars(Option<Node>);

impl Vars {
    /// Compiles the JSON `vars` of a route: a list of expressions (all must hold), or one logical expression
    /// whose first element is `"AND"`, `"OR"`, `"!AND"` or `"!OR"`.
    pub fn compile(values: &[Value]) -> Result<Vars, VarsError> {
        if values.is_empty() {
            return Ok(Vars(None));
        }
        Node::compile_list(values, 0).map(|n| Vars(Some(n)))
    }

    /// Whether there are no expressions (so nothing needs evaluating).
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Whether the expression holds for `req`.
    pub fn matches(&self, req: &RequestInfo<'_>) -> bool {
        self.0.as_ref().is_none_or(|n| n.eval(req))
    }
}

/// One request variable as nginx names it (`uri`, `host`, `remote_addr`, `request_method`, `http_*`, `arg_*`,
/// `cookie_*`), for other parts of the data plane that read request values (the `chash` balancer's key).
#[derive(Debug, Clone)]
pub struct Variable(Var);

impl Variable {
    /// The variable called `name`; `None` when sluice does not know it.
    pub fn parse(name: &str) -> Option<Variable> {
        Var::parse(name).map(Variable)
    }

    /// Its value for `req`, as nginx gives it (the first one when repeated); `None` when absent.
    pub fn value<'r>(&self, req: &RequestInfo<'r>) -> Option<Cow<'r, str>> {
        self.0.value(req)
    }
}

/// One node of the expression tree.
#[derive(Debug, Clone)]
enum Node {
    Leaf(Expr),
    All(Vec<Node>),
    Any(Vec<Node>),
    /// `!AND` and `!OR`.
    Not(Box<Node>),
}

fn logical(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| matches!(*s, "AND" | "OR" | "!AND" | "!OR"))
}

impl Node {
    /// A list of values: a logical expression when the first is an operator name, else an AND of its elements.
    fn compile_list(items: &[Value], depth: usize) -> Result<Node, VarsError> {
        if depth > MAX_DEPTH {
            return Err(VarsError::TooDeep);
        }
        if let Some(op) = items.first().and_then(logical) {
            let children = items[1..].iter().map(|v| Node::compile(v, depth + 1)).collect::<Result<Vec<_>, _>>()?;
            if children.is_empty() {
                return Err(VarsError::Shape(Value::Array(items.to_vec()).to_string()));
            }
            return Ok(match op {
                "AND" => Node::All(children),
                "OR" => Node::Any(children),
                "!AND" => Node::Not(Box::new(Node::All(children))),
                _ => Node::Not(Box::new(Node::Any(children))),
            });
        }
        let children = items.iter().map(|v| Node::compile(v, depth + 1)).collect::<Result<Vec<_>, _>>()?;
        Ok(if children.len() == 1 {
            children.into_iter().next().unwrap_or(Node::All(Vec::new()))
        } else {
            Node::All(children)
        })
    }

    /// One element: a leaf, a logical expression, or a nested list.
    fn compile(element: &Value, depth: usize) -> Result<Node, VarsError> {
        let items = element.as_array().ok_or_else(|| VarsError::Shape(element.to_string()))?;
        match items.first() {
            Some(first) if first.is_array() || logical(first).is_some() => Node::compile_list(items, depth),
            _ => Expr::compile(element).map(Node::Leaf),
        }
    }

    fn eval(&self, req: &RequestInfo<'_>) -> bool {
        match self {
            Node::Leaf(e) => e.eval(req),
            Node::All(c) => c.iter().all(|n| n.eval(req)),
            Node::Any(c) => c.iter().any(|n| n.eval(req)),
            Node::Not(n) => !n.eval(req),
        }
    }
}

#[derive(Debug, Clone)]
struct Expr {
    var: Var,
    negate: bool,
    op: Op,
}

#[derive(Debug, Clone)]
enum Var {
    Uri,
    Host,
    RemoteAddr,
    Method,
    /// The path with its query, as the client sent it (`request_uri`).
    RequestUri,
    /// The raw query string (`args`, `query_string`); empty when there is none.
    Args,
    /// `?` when there is a query string, else empty.
    IsArgs,
    /// The scheme the client used.
    Scheme,
    Header(HeaderName),
    Arg(Box<str>),
    Cookie(Box<str>),
}

/// A right-hand value: compared as a number when it was written as a JSON number, as lua-resty-expr does.
#[derive(Debug, Clone)]
struct Scalar {
    text: Box<str>,
    number: Option<f64>,
}

impl Scalar {
    fn from_json(v: &Value) -> Option<Scalar> {
        match v {
            Value::String(s) => Some(Scalar { text: s.as_str().into(), number: None }),
            Value::Number(n) => Some(Scalar { text: n.to_string().into(), number: n.as_f64() }),
            _ => None,
        }
    }

    fn equals(&self, left: &str) -> bool {
        match self.number {
            Some(n) => left.trim().parse::<f64>().is_ok_and(|l| l == n),
            None => left == &*self.text,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Eq(Scalar),
    Ne(Scalar),
    Gt(f64),
    Lt(f64),
    Ge(f64),
    Le(f64),
    Regex(Regex),
    In(Vec<Scalar>),
    Has(Box<str>),
    IpMatch(Vec<IpRange>),
}

impl Expr {
    fn compile(element: &Value) -> Result<Expr, VarsError> {
        let shape = || VarsError::Shape(element.to_string());
        let items = element.as_array().ok_or_else(shape)?;
        let (name, negate, op, value) = match items.as_slice() {
            [name, op, value] => (name, false, op, value),
            [name, bang, op, value] if bang.as_str() == Some("!") => (name, true, op, value),
            _ => return Err(shape()),
        };
        let name = name.as_str().ok_or_else(shape)?;
        let op_name = op.as_str().ok_or_else(shape)?;
        let var = Var::parse(name).ok_or_else(|| VarsError::Var(name.to_string()))?;
        let bad_value = || VarsError::Value { op: op_name.to_string(), value: value.to_string() };
        let number = || match value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        let op = match op_name {
            "==" => Op::Eq(Scalar::from_json(value).ok_or_else(bad_value)?),
            "~=" => Op::Ne(Scalar::from_json(value).ok_or_else(bad_value)?),
            ">" => Op::Gt(number().ok_or_else(bad_value)?),
            "<" => Op::Lt(number().ok_or_else(bad_value)?),
            ">=" => Op::Ge(number().ok_or_else(bad_value)?),
            "<=" => Op::Le(number().ok_or_else(bad_value)?),
            "~~" | "~*" => {
                let pattern = value.as_str().ok_or_else(bad_value)?;
                let regex = RegexBuilder::new(pattern)
                    .case_insensitive(op_name == "~*")
                    .build()
                    .map_err(|e| VarsError::Regex { pattern: pattern.to_string(), reason: e.to_string() })?;
                Op::Regex(regex)
            }
            "in" => {
                let list = value.as_array().ok_or_else(bad_value)?;
                Op::In(list.iter().map(Scalar::from_json).collect::<Option<Vec<_>>>().ok_or_else(bad_value)?)
            }
            "has" => Op::Has(Scalar::from_json(value).ok_or_else(bad_value)?.text),
            "ipmatch" => {
                // One address or block, or a list of them.
                let list: Vec<&Value> = match value {
                    Value::Array(items) if !items.is_empty() => items.iter().collect(),
                    Value::String(_) => vec![value],
                    _ => return Err(bad_value()),
                };
                let ranges = list.iter().map(|v| v.as_str().and_then(IpRange::parse)).collect::<Option<Vec<_>>>();
                Op::IpMatch(ranges.ok_or_else(bad_value)?)
            }
            other => return Err(VarsError::Op(other.to_string())),
        };
        Ok(Expr { var, negate, op })
    }

    fn eval(&self, req: &RequestInfo<'_>) -> bool {
        let held = match &self.op {
            // `has` looks at every value of a repeated header, argument or cookie.
            Op::Has(want) => self.var.any_value(req, |v| v == &**want),
            Op::IpMatch(ranges) => self.var.ip(req).is_some_and(|ip| ranges.iter().any(|r| r.contains(ip))),
            op => {
                let value = self.var.value(req);
                let value = value.as_deref();
                match op {
                    Op::Eq(s) => value.is_some_and(|v| s.equals(v)),
                    // As in lua-resty-expr, an absent variable is "not equal" to anything.
                    Op::Ne(s) => value.is_none_or(|v| !s.equals(v)),
                    Op::Gt(n) => numeric(value).is_some_and(|v| v > *n),
                    Op::Lt(n) => numeric(value).is_some_and(|v| v < *n),
                    Op::Ge(n) => numeric(value).is_some_and(|v| v >= *n),
                    Op::Le(n) => numeric(value).is_some_and(|v| v <= *n),
                    Op::Regex(re) => value.is_some_and(|v| re.is_match(v)),
                    Op::In(list) => value.is_some_and(|v| list.iter().any(|s| s.equals(v))),
                    Op::Has(_) | Op::IpMatch(_) => false,
                }
            }
        };
        held != self.negate
    }
}

fn numeric(value: Option<&str>) -> Option<f64> {
    value?.trim().parse().ok()
}

impl Var {
    fn parse(name: &str) -> Option<Var> {
        let var = match name {
            "uri" => Var::Uri,
            "host" => Var::Host,
            "remote_addr" => Var::RemoteAddr,
            "request_method" => Var::Method,
            "request_uri" => Var::RequestUri,
            "args" | "query_string" => Var::Args,
            "is_args" => Var::IsArgs,
            "scheme" => Var::Scheme,
            _ => {
                if let Some(h) = name.strip_prefix("http_") {
                    // nginx spells header variables in lowercase with `_` for `-`.
                    let header = h.replace('_', "-").to_ascii_lowercase();
                    Var::Header(HeaderName::from_bytes(header.as_bytes()).ok()?)
                } else if let Some(a) = name.strip_prefix("arg_").filter(|a| !a.is_empty()) {
                    Var::Arg(a.into())
                } else if let Some(c) = name.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
                    Var::Cookie(c.into())
                } else {
                    return None;
                }
            }
        };
        Some(var)
    }

    /// The first value, as nginx's variable of the same name gives it; `None` when absent.
    fn value<'r>(&self, req: &RequestInfo<'r>) -> Option<Cow<'r, str>> {
        match self {
            Var::Uri => Some(Cow::Borrowed(req.path)),
            Var::Host => Some(Cow::Borrowed(req.host)),
            Var::RemoteAddr => Some(Cow::Owned(req.remote_addr.to_string())),
            Var::Method => Some(Cow::Borrowed(req.method.as_str())),
            Var::RequestUri => Some(match req.query {
                Some(q) => Cow::Owned(format!("{}?{q}", req.path)),
                None => Cow::Borrowed(req.path),
            }),
            Var::Args => Some(Cow::Borrowed(req.query.unwrap_or(""))),
            Var::IsArgs => Some(Cow::Borrowed(if req.query.is_some() { "?" } else { "" })),
            Var::Scheme => Some(Cow::Borrowed(if req.tls { "https" } else { "http" })),
            Var::Header(name) => req.headers.get(name).and_then(|v| v.to_str().ok()).map(Cow::Borrowed),
            Var::Arg(name) => query_args(req.query).find(|(k, _)| *k == &**name).map(|(_, v)| Cow::Borrowed(v)),
            Var::Cookie(name) => cookies(req).find(|(k, _)| *k == &**name).map(|(_, v)| Cow::Borrowed(v)),
        }
    }

    /// The value as an IP address: the client address itself for `remote_addr`, else the text parsed.
    fn ip(&self, req: &RequestInfo<'_>) -> Option<IpAddr> {
        match self {
            Var::RemoteAddr => Some(req.remote_addr),
            other => other.value(req)?.trim().parse().ok(),
        }
    }

    fn any_value(&self, req: &RequestInfo<'_>, mut f: impl FnMut(&str) -> bool) -> bool {
        match self {
            Var::Header(name) => req
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|v| f(v.trim())),
            Var::Arg(name) => query_args(req.query).filter(|(k, _)| *k == &**name).any(|(_, v)| f(v)),
            Var::Cookie(name) => cookies(req).filter(|(k, _)| *k == &**name).any(|(_, v)| f(v)),
            other => other.value(req).is_some_and(|v| f(&v)),
        }
    }
}

/// `a=1&b=2` as raw (not percent-decoded) pairs, like nginx's `$arg_*`.
pub(crate) fn query_args(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query.unwrap_or("").split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// The `name=value` pairs of every `Cookie` header.
pub(crate) fn cookies<'r>(req: &RequestInfo<'r>) -> impl Iterator<Item = (&'r str, &'r str)> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method};
    use serde_json::json;

    fn req<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> RequestInfo<'a> {
        RequestInfo {
            method: &Method::GET,
            host: "api.example.com",
            path: "/v1/items",
            query,
            headers,
            remote_addr: "10.1.2.3".parse().unwrap(),
            tls: false,
        }
    }

    fn eval(vars: Value, req: &RequestInfo<'_>) -> bool {
        let list = vars.as_array().unwrap().clone();
        Vars::compile(&list).unwrap().matches(req)
    }

    #[test]
    fn evaluates_operators() {
        let mut headers = HeaderMap::new();
        headers.insert("x-version", "2".parse().unwrap());
        headers.insert("user-agent", "Mozilla/5.0 Firefox".parse().unwrap());
        headers.append("x-tag", "a, b".parse().unwrap());
        headers.append("x-tag", "c".parse().unwrap());
        headers.insert("cookie", "session=abc; theme=dark".parse().unwrap());
        let r = req(&headers, Some("name=json&id=7&id=8&flag"));
        let cases = [
            (json!([["arg_name", "==", "json"]]), true),
            (json!([["arg_name", "==", "xml"]]), false),
            (json!([["arg_name", "~=", "xml"]]), true),
            (json!([["arg_missing", "~=", "x"]]), true),
            (json!([["arg_missing", "==", "x"]]), false),
            (json!([["arg_id", "==", 7]]), true),
            (json!([["arg_id", "has", "8"]]), true),
            (json!([["arg_flag", "==", ""]]), true),
            (json!([["http_x_version", ">", 1]]), true),
            (json!([["http_x_version", ">=", "2"]]), true),
            (json!([["http_x_version", "<", 2]]), false),
            (json!([["http_x_version", "<=", 2.5]]), true),
            (json!([["http_x_missing", ">", 1]]), false),
            (json!([["http_user_agent", "~~", "Firefox$"]]), true),
            (json!([["http_user_agent", "~~", "firefox"]]), false),
            (json!([["http_user_agent", "~*", "firefox"]]), true),
            (json!([["http_x_tag", "has", "b"]]), true),
            (json!([["http_x_tag", "has", "c"]]), true),
            (json!([["http_x_tag", "has", "d"]]), false),
            (json!([["request_method", "in", ["POST", "GET"]]]), true),
            (json!([["request_method", "in", ["POST"]]]), false),
            (json!([["cookie_theme", "==", "dark"]]), true),
            (json!([["cookie_session", "!", "==", "abc"]]), false),
            (json!([["uri", "~~", "^/v1/"]]), true),
            (json!([["host", "~~", "^[^.]+\\.example\\.com$"]]), true),
            (json!([["host", "!", "~~", "^[^.]+\\.example\\.com$"]]), false),
            (json!([["remote_addr", "==", "10.1.2.3"]]), true),
            (json!([["arg_name", "==", "json"], ["http_x_version", "==", "3"]]), false),
            (json!([]), true),
            // ipmatch, on the client address or on a header holding one.
            (json!([["remote_addr", "ipmatch", ["10.0.0.0/8", "::1"]]]), true),
            (json!([["remote_addr", "ipmatch", "10.1.2.3"]]), true),
            (json!([["remote_addr", "ipmatch", ["192.168.0.0/16"]]]), false),
            (json!([["remote_addr", "!", "ipmatch", ["192.168.0.0/16"]]]), true),
            (json!([["http_x_version", "ipmatch", ["0.0.0.0/0"]]]), false),
            // Logical nesting.
            (json!(["AND", ["arg_name", "==", "json"], ["arg_id", "==", "7"]]), true),
            (json!(["AND", ["arg_name", "==", "json"], ["arg_id", "==", "9"]]), false),
            (json!(["OR", ["arg_name", "==", "xml"], ["arg_id", "==", "7"]]), true),
            (json!(["OR", ["arg_name", "==", "xml"], ["arg_id", "==", "9"]]), false),
            (json!(["!AND", ["arg_name", "==", "json"], ["arg_id", "==", "9"]]), true),
            (json!(["!OR", ["arg_name", "==", "xml"], ["arg_id", "==", "7"]]), false),
            (
                json!([[
                    "OR",
                    ["arg_name", "==", "xml"],
                    ["AND", ["arg_id", "==", 7], ["cookie_theme", "==", "dark"]]
                ]]),
                true,
            ),
            (json!([[["arg_name", "==", "json"], ["arg_id", "==", 7]], ["uri", "==", "/v1/items"]]), true),
            (json!([[["arg_name", "==", "json"], ["arg_id", "==", 8]]]), false),
        ];
        for (vars, want) in cases {
            assert_eq!(eval(vars.clone(), &r), want, "{vars}");
        }
    }

    #[test]
    fn rejects_what_it_cannot_evaluate() {
        let bad = |v: Value| Vars::compile(v.as_array().unwrap()).unwrap_err();
        assert!(matches!(bad(json!([["arg_a", "regex", "x"]])), VarsError::Op(_)));
        assert!(matches!(bad(json!([["server_port", "==", "80"]])), VarsError::Var(_)));
        assert!(matches!(bad(json!([["arg_a", "~~", "("]])), VarsError::Regex { .. }));
        assert!(matches!(bad(json!([["arg_a", ">", "x"]])), VarsError::Value { .. }));
        assert!(matches!(bad(json!([["arg_a", "in", "x"]])), VarsError::Value { .. }));
        assert!(matches!(bad(json!([["arg_a", "==", {"x": 1}]])), VarsError::Value { .. }));
        assert!(matches!(bad(json!(["AND"])), VarsError::Shape(_)));
        assert!(matches!(bad(json!([["OR", "x"]])), VarsError::Shape(_)));
        assert!(matches!(bad(json!([["remote_addr", "ipmatch", ["10.0.0.0/99"]]])), VarsError::Value { .. }));
        assert!(matches!(bad(json!([["remote_addr", "ipmatch", []]])), VarsError::Value { .. }));
        let mut deep = json!(["arg_a", "==", "1"]);
        for _ in 0..40 {
            deep = json!(["AND", deep]);
        }
        assert!(matches!(Vars::compile(&[deep]).unwrap_err(), VarsError::TooDeep));
        assert!(matches!(bad(json!([["arg_a", "?", "==", "1"]])), VarsError::Shape(_)));
        assert!(matches!(bad(json!(["arg_a"])), VarsError::Shape(_)));
    }
}
