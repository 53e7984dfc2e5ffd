//! `fault-injection`: delays and/or answers a share of requests (chosen by percentage and `vars`), to test how
//! clients and services cope. A delay waits without blocking the worker.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode, request};
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, fault_injection as model};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, Resume, values};
use crate::router::Vars;
use crate::router::template::Template;

/// fault-injection's place in the registry (APISIX priority 11000).
pub(super) const FACTORY: Factory =
    Factory { name: model::FaultInjection::NAME, priority: 11000, auth: false, prefer_route: false, build };

fn conditions(list: &Option<Vec<Vec<serde_json::Value>>>) -> Result<Option<Vec<Vars>>, String> {
    list.as_ref().map(|l| l.iter().map(|e| Vars::compile(e).map_err(|e| format!("vars: {e}"))).collect()).transpose()
}

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::FaultInjection(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    let abort = c
        .abort
        .as_ref()
        .map(|a| {
            let headers = values::headers(a.headers.iter().flatten())?;
            Ok::<_, String>(Abort {
                status: StatusCode::from_u16(a.http_status).map_err(|e| e.to_string())?,
                body: a.body.as_deref().map(|b| Template::compile(b, false)).transpose()?,
                headers,
                percentage: a.percentage,
                vars: conditions(&a.vars)?,
            })
        })
        .transpose()?;
    let delay = c
        .delay
        .as_ref()
        .map(|d| {
            Ok::<_, String>(Delay {
                duration: Duration::try_from_secs_f64(d.duration).map_err(|e| e.to_string())?,
                percentage: d.percentage,
                vars: conditions(&d.vars)?,
            })
        })
        .transpose()?;
    Ok(Arc::new(FaultInjection { abort: abort.map(Arc::new), delay }))
}

#[derive(Debug)]
struct Abort {
    status: StatusCode,
    body: Option<Template>,
    headers: Vec<(HeaderName, Template)>,
    percentage: Option<u8>,
    vars: Option<Vec<Vars>>,
}

#[derive(Debug)]
struct Delay {
    duration: Duration,
    percentage: Option<u8>,
    vars: Option<Vec<Vars>>,
}

#[derive(Debug)]
struct FaultInjection {
    abort: Option<Arc<Abort>>,
    delay: Option<Delay>,
}

/// Whether a request is picked: by `percentage` (all when absent) and by `vars` (any list holding; an empty
/// list never holds).
fn picked(percentage: Option<u8>, vars: &Option<Vec<Vars>>, ctx: &Ctx, req: &request::Parts) -> bool {
    let held = vars.as_ref().is_none_or(|v| values::any_holds(v, ctx, req));
    held && percentage.is_none_or(|p| fastrand::u8(1..=100) <= p)
}

impl Abort {
    fn reply(&self, ctx: &Ctx, req: &request::Parts) -> super::Reply {
        let body = self.body.as_ref().map(|t| values::render(t, ctx, req)).unwrap_or_default();
        let mut reply = Response::new(Bytes::from(body));
        *reply.status_mut() = self.status;
        for (name, value) in &self.headers {
            if let Ok(v) = HeaderValue::from_str(&values::render(value, ctx, req)) {
                reply.headers_mut().insert(name.clone(), v);
            }
        }
        reply
    }
}

impl Plugin for FaultInjection {
    fn phases(&self) -> Phases {
        Phases::REWRITE
    }

    fn rewrite(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        // Both choices are made before any waiting, as APISIX does.
        let abort = self.abort.as_ref().filter(|a| picked(a.percentage, &a.vars, ctx, req)).cloned();
        let delay = self.delay.as_ref().filter(|d| picked(d.percentage, &d.vars, ctx, req)).map(|d| d.duration);
        match (delay, abort) {
            (None, None) => Flow::Continue,
            (None, Some(abort)) => Flow::Respond(abort.reply(ctx, req)),
            (Some(wait), abort) => Flow::Wait(Box::pin(async move {
                tokio::time::sleep(wait).await;
                Box::new(move |ctx: &mut Ctx, req: &mut request::Parts| match abort {
                    Some(abort) => Flow::Respond(abort.reply(ctx, req)),
                    None => Flow::Continue,
                }) as Resume
            })),
        }
    }
}
