//! What loggers share: the request and response heads kept for the log phase, the variables a log format may
//! name (checked when the plugin is built), and APISIX's default log entry.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, request, response};
use serde_json::{Map, Value, json};

use super::Ctx;
use crate::router::{RequestInfo, Variable, normalize_host};

/// The request and response heads, kept for loggers (the proxy moves the request on to the node).
#[derive(Debug, Clone, Default)]
pub(super) struct Captured {
    request: HeaderMap,
    response: HeaderMap,
}

/// Keeps the request's headers for the log phase (once, whichever logger asks first).
pub(super) fn capture_request(ctx: &mut Ctx, req: &request::Parts) {
    if ctx.extensions.get::<Captured>().is_none() {
        ctx.extensions.insert(Captured { request: req.headers.clone(), response: HeaderMap::new() });
    }
}

/// Keeps the response's headers for the log phase.
pub(super) fn capture_response(ctx: &mut Ctx, resp: &response::Parts) {
    if let Some(c) = ctx.extensions.get_mut::<Captured>() {
        c.response = resp.headers.clone();
    }
}

/// A variable a log format may name.
#[derive(Debug, Clone)]
pub(super) enum LogVar {
    /// A request variable (`uri`, `host`, `http_*`, `arg_*`, `cookie_*`, ...), read from the request as it came.
    Request(Variable),
    RouteId,
    RouteName,
    ServiceId,
    ServiceName,
    ConsumerName,
    RemoteAddr,
    RemotePort,
    Status,
    UpstreamAddr,
    UpstreamStatus,
    /// Seconds from arrival to the end of the response.
    RequestTime,
    /// Seconds the node took to answer.
    UpstreamResponseTime,
    BytesSent,
    RequestLength,
    /// Milliseconds since the epoch, when the request arrived.
    Msec,
    /// The arrival time as an HTTP date.
    Time,
}

impl LogVar {
    /// The variable called `name` (without its `$`).
    pub fn parse(name: &str) -> Option<LogVar> {
        Some(match name {
            "route_id" => LogVar::RouteId,
            "route_name" => LogVar::RouteName,
            "service_id" => LogVar::ServiceId,
            "service_name" => LogVar::ServiceName,
            "consumer_name" => LogVar::ConsumerName,
            "remote_addr" | "client_ip" => LogVar::RemoteAddr,
            "remote_port" => LogVar::RemotePort,
            "status" => LogVar::Status,
            "upstream_addr" | "balancer_ip" => LogVar::UpstreamAddr,
            "upstream_status" => LogVar::UpstreamStatus,
            "request_time" => LogVar::RequestTime,
            "upstream_response_time" => LogVar::UpstreamResponseTime,
            "bytes_sent" | "body_bytes_sent" => LogVar::BytesSent,
            "request_length" => LogVar::RequestLength,
            "msec" => LogVar::Msec,
            "time_local" | "time" => LogVar::Time,
            other => LogVar::Request(Variable::parse(other)?),
        })
    }

    /// Its value for the finished request; `None` when absent.
    pub fn value(&self, ctx: &Ctx) -> Option<Value> {
        let route = ctx.route.as_deref();
        Some(match self {
            LogVar::Request(v) => {
                let empty = HeaderMap::new();
                let headers = ctx.extensions.get::<Captured>().map_or(&empty, |c| &c.request);
                let host = normalize_host(ctx.host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or(""));
                let info = RequestInfo {
                    method: &ctx.method,
                    host: &host,
                    path: ctx.uri.path(),
                    query: ctx.uri.query(),
                    headers,
                    remote_addr: ctx.client.ip(),
                    tls: ctx.tls,
                };
                json!(v.value(&info)?.into_owned())
            }
            LogVar::RouteId => json!(&*route?.id),
            LogVar::RouteName => json!(route?.name.as_deref()?),
            LogVar::ServiceId => json!(route?.service_id.as_deref()?),
            LogVar::ServiceName => json!(route?.service_name.as_deref()?),
            LogVar::ConsumerName => json!(ctx.consumer_name()?),
            LogVar::RemoteAddr => json!(ctx.client.ip().to_canonical().to_string()),
            LogVar::RemotePort => json!(ctx.client.port()),
            LogVar::Status => json!(ctx.status?.as_u16()),
            LogVar::UpstreamAddr => json!(ctx.node.as_deref()?),
            LogVar::UpstreamStatus => json!(ctx.upstream_status?.as_u16()),
            LogVar::RequestTime => json!(ctx.started.elapsed().as_secs_f64()),
            LogVar::UpstreamResponseTime => json!(ctx.upstream_latency?.as_secs_f64()),
            LogVar::BytesSent => json!(ctx.response_bytes + ctx.response_head_bytes),
            LogVar::RequestLength => json!(ctx.request_bytes + ctx.request_head_bytes),
            LogVar::Msec => json!(started_at(ctx).as_millis() as u64),
            LogVar::Time => json!(httpdate::fmt_http_date(UNIX_EPOCH + started_at(ctx))),
        })
    }
}

/// When the request arrived, as time since the epoch.
fn started_at(ctx: &Ctx) -> Duration {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    now.saturating_sub(ctx.started.elapsed())
}

/// One item of a custom format.
#[derive(Debug, Clone)]
pub(super) enum Item {
    Var(LogVar),
    Literal(Value),
    Nested(Format),
}

/// A custom log format (`{"name": "$var", ...}`), compiled.
#[derive(Debug, Clone, Default)]
pub(super) struct Format(Vec<(String, Item)>);

impl Format {
    /// Compiles `format`; an unknown `$variable` is an error.
    pub fn compile(format: &BTreeMap<String, Value>) -> Result<Format, String> {
        let mut items = Vec::new();
        for (key, value) in format {
            let item = match value {
                Value::String(s) if s.starts_with('$') => Item::Var(
                    LogVar::parse(&s[1..]).ok_or_else(|| format!("log format {key:?}: unknown variable {s}"))?,
                ),
                Value::Object(inner) => Item::Nested(Format::compile(&inner.clone().into_iter().collect())?),
                other => Item::Literal(other.clone()),
            };
            items.push((key.clone(), item));
        }
        Ok(Format(items))
    }

    /// The entry for a finished request; absent variables leave their key out, as APISIX does.
    pub fn render(&self, ctx: &Ctx) -> Map<String, Value> {
        let mut out = Map::new();
        for (key, item) in &self.0 {
            let value = match item {
                Item::Var(v) => v.value(ctx),
                Item::Literal(v) => Some(v.clone()),
                Item::Nested(f) => Some(Value::Object(f.render(ctx))),
            };
            if let Some(v) = value {
                out.insert(key.clone(), v);
            }
        }
        out
    }
}

fn headers_json(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for name in headers.keys() {
        let values: Vec<Value> =
            headers.get_all(name).iter().map(|v| json!(String::from_utf8_lossy(v.as_bytes()))).collect();
        out.insert(name.as_str().to_string(), if values.len() == 1 { values[0].clone() } else { Value::Array(values) });
    }
    Value::Object(out)
}

fn query_json(query: Option<&str>) -> Value {
    let mut out = Map::new();
    for (k, v) in crate::router::vars::query_args(query) {
        let v = json!(super::auth::decode_component(v));
        match out.get_mut(k) {
            Some(Value::Array(list)) => list.push(v),
            Some(existing) => *existing = Value::Array(vec![existing.clone(), v]),
            None => drop(out.insert(k.to_string(), v)),
        }
    }
    Value::Object(out)
}

/// APISIX's default log entry (`get_full_log`).
pub(super) fn full_entry(ctx: &Ctx) -> Map<String, Value> {
    let captured = ctx.extensions.get::<Captured>();
    let host = ctx.host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
    let target = ctx.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let latency = ctx.started.elapsed().as_secs_f64() * 1000.0;
    let upstream_latency = ctx.upstream_latency.map(|d| d.as_secs_f64() * 1000.0);
    let mut entry = Map::new();
    entry.insert(
        "request".into(),
        json!({
            "url": format!("http://{host}{target}"),
            "uri": target,
            "method": ctx.method.as_str(),
            "headers": captured.map_or(json!({}), |c| headers_json(&c.request)),
            "querystring": query_json(ctx.uri.query()),
            "size": ctx.request_bytes + ctx.request_head_bytes,
        }),
    );
    entry.insert(
        "response".into(),
        json!({
            "status": ctx.status.map_or(0, |s| s.as_u16()),
            "headers": captured.map_or(json!({}), |c| headers_json(&c.response)),
            "size": ctx.response_bytes + ctx.response_head_bytes,
        }),
    );
    entry.insert("server".into(), json!({"hostname": hostname(), "version": env!("CARGO_PKG_VERSION")}));
    if let Some(node) = &ctx.node {
        entry.insert("upstream".into(), json!(&**node));
    }
    entry.insert("service_id".into(), json!(ctx.service_id().unwrap_or("")));
    entry.insert("route_id".into(), json!(ctx.route_id().unwrap_or("no-matched")));
    if let Some(c) = ctx.consumer_name() {
        entry.insert("consumer".into(), json!({ "username": c }));
    }
    entry.insert("client_ip".into(), json!(ctx.client.ip().to_canonical().to_string()));
    entry.insert("start_time".into(), json!(started_at(ctx).as_millis() as u64));
    entry.insert("latency".into(), json!(latency));
    if let Some(u) = upstream_latency {
        entry.insert("upstream_latency".into(), json!(u));
    }
    entry.insert("sluice_latency".into(), json!((latency - upstream_latency.unwrap_or(0.0)).max(0.0)));
    entry
}

/// This machine's name (the pod's, in Kubernetes), read once.
fn hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_default()
    })
}
