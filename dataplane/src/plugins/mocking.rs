//! `mocking`: answers with a canned response (written, or generated from a JSON schema) instead of proxying.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Response, StatusCode, request};
use serde_json::{Map, Value};
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, mocking as model};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, Reply, Resume, values};
use crate::router::template::Template;

/// mocking's place in the registry (APISIX priority 10900).
pub(super) const FACTORY: Factory =
    Factory { name: model::Mocking::NAME, priority: 10900, auth: false, prefer_route: false, build };

const MOCK_BY: HeaderName = HeaderName::from_static("x-mock-by");

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::Mocking(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    let headers = values::headers(c.response_headers.iter().flatten())?;
    let media = c.content_type.rsplit_once(';').map_or(c.content_type.as_str(), |(m, _)| m).to_string();
    Ok(Arc::new(Mocking {
        delay: Duration::from_secs(c.delay),
        status: StatusCode::from_u16(c.response_status).map_err(|e| e.to_string())?,
        content_type: HeaderValue::from_str(&c.content_type).map_err(|e| e.to_string())?,
        xml: media.ends_with("/xml"),
        example: c.response_example.as_deref().map(|e| Template::compile(e, false)).transpose()?,
        schema: c.response_schema.clone().map(Value::Object),
        mock_header: c.with_mock_header,
        headers,
    }))
}

#[derive(Debug)]
struct Mocking {
    delay: Duration,
    status: StatusCode,
    content_type: HeaderValue,
    xml: bool,
    example: Option<Template>,
    schema: Option<Value>,
    mock_header: bool,
    headers: Vec<(HeaderName, Template)>,
}

/// A value for `schema`, as APISIX generates one: examples where given, else random values of the type.
fn generate(schema: &Value) -> Option<Value> {
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("object").to_ascii_lowercase();
    let example = schema.get("example");
    Some(match ty.as_str() {
        "object" => {
            let props = schema.get("properties").and_then(Value::as_object);
            let out: Map<String, Value> =
                props.into_iter().flatten().filter_map(|(k, v)| generate(v).map(|g| (k.clone(), g))).collect();
            Value::Object(out)
        }
        "array" => {
            let items = schema.get("items")?;
            Value::Array((0..fastrand::usize(1..=3)).filter_map(|_| generate(items)).collect())
        }
        "string" => match example {
            Some(Value::String(s)) => Value::String(s.clone()),
            _ => Value::String((0..fastrand::usize(1..=10)).map(|_| fastrand::lowercase()).collect()),
        },
        "number" => match example {
            Some(Value::Number(n)) => Value::Number(n.clone()),
            _ => serde_json::json!(fastrand::f64() * 10000.0),
        },
        "integer" => match example.and_then(Value::as_f64) {
            Some(n) => serde_json::json!(n.floor() as i64),
            None => serde_json::json!(fastrand::i64(1..=10000)),
        },
        "boolean" => match example {
            Some(Value::Bool(b)) => Value::Bool(*b),
            _ => Value::Bool(fastrand::bool()),
        },
        _ => return None,
    })
}

/// `value` as XML under a `<data>` root (keys as elements, arrays as repeated elements).
fn to_xml(name: &str, value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| to_xml(name, item, out)),
        Value::Object(map) => {
            out.push_str(&format!("<{name}>"));
            map.iter().for_each(|(k, v)| to_xml(k, v, out));
            out.push_str(&format!("</{name}>"));
        }
        Value::String(s) => {
            let escaped = s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
            out.push_str(&format!("<{name}>{escaped}</{name}>"));
        }
        other => out.push_str(&format!("<{name}>{other}</{name}>")),
    }
}

impl Mocking {
    fn reply(&self, ctx: &Ctx, req: &request::Parts) -> Reply {
        let body = match (&self.example, &self.schema) {
            (Some(example), _) => values::render(example, ctx, req),
            (None, Some(schema)) => {
                let value = generate(schema).unwrap_or(Value::Null);
                if self.xml {
                    let mut out = String::new();
                    to_xml("data", &value, &mut out);
                    out
                } else {
                    value.to_string()
                }
            }
            (None, None) => String::new(),
        };
        let mut reply = Response::new(Bytes::from(body));
        *reply.status_mut() = self.status;
        let headers = reply.headers_mut();
        headers.insert(CONTENT_TYPE, self.content_type.clone());
        if self.mock_header {
            headers.insert(MOCK_BY, HeaderValue::from_static(concat!("sluice/", env!("CARGO_PKG_VERSION"))));
        }
        for (name, value) in &self.headers {
            if let Ok(v) = HeaderValue::from_str(&values::render(value, ctx, req)) {
                headers.append(name.clone(), v);
            }
        }
        reply
    }
}

impl Plugin for Mocking {
    fn phases(&self) -> Phases {
        Phases::ACCESS
    }

    fn access(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        if self.delay.is_zero() {
            return Flow::Respond(self.reply(ctx, req));
        }
        let (delay, reply) = (self.delay, self.reply(ctx, req));
        Flow::Wait(Box::pin(async move {
            tokio::time::sleep(delay).await;
            Box::new(move |_: &mut Ctx, _: &mut request::Parts| Flow::Respond(reply)) as Resume
        }))
    }
}
