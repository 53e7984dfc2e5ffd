//! `opentelemetry`: W3C trace-context propagation. A valid `traceparent` from the client is continued (its trace
//! id kept, a new span id of sluice's as the parent the node sees); without one a trace starts here. The
//! sampler decides the sampled flag. `tracestate` passes through. Spans are not exported yet: this plugin makes
//! the node's spans join the client's trace, and sluice's hop visible as a span id.

use std::sync::Arc;

use http::header::HeaderValue;
use http::request;
use sluice_model::PluginConf;
use sluice_model::plugins::Schema;
use sluice_model::plugins::opentelemetry::{self as model, SamplerName};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin};

/// opentelemetry's place in the registry (APISIX priority 12009).
pub(super) const FACTORY: Factory =
    Factory { name: model::Opentelemetry::NAME, priority: 12009, auth: false, prefer_route: false, build };

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::Opentelemetry(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    Ok(Arc::new(Opentelemetry(c.clone())))
}

#[derive(Debug)]
struct Opentelemetry(model::Opentelemetry);

/// A parsed `traceparent`: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Parent {
    pub trace_id: u128,
    pub sampled: bool,
}

fn hex(s: &str, len: usize) -> Option<u128> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| u128::from_str_radix(s, 16).ok())
        .flatten()
}

/// Reads a `traceparent` as the W3C recommendation says: lowercase hex, non-zero ids, version `ff` invalid.
pub(super) fn parse(value: &str) -> Option<Parent> {
    let mut parts = value.trim().split('-');
    let version = hex(parts.next()?, 2)?;
    let trace_id = hex(parts.next()?, 32)?;
    let parent_id = hex(parts.next()?, 16)?;
    let flags = hex(parts.next()?, 2)?;
    if version == 0xff || (version == 0 && parts.next().is_some()) || trace_id == 0 || parent_id == 0 {
        return None;
    }
    Some(Parent { trace_id, sampled: flags & 1 == 1 })
}

fn ratio(trace_id: u128, fraction: f64) -> bool {
    // The first 8 hex digits of the trace id, as APISIX's sampler reads them.
    let head = (trace_id >> 96) as u32;
    fraction >= 1.0 || f64::from(head) < fraction * f64::from(u32::MAX)
}

impl Opentelemetry {
    fn sampled(&self, trace_id: u128, parent: Option<Parent>) -> bool {
        let s = &self.0.sampler;
        match s.name {
            SamplerName::AlwaysOn => true,
            SamplerName::AlwaysOff => false,
            SamplerName::TraceIdRatio => ratio(trace_id, s.options.fraction),
            SamplerName::ParentBase => match (parent, &s.options.root) {
                (Some(p), _) => p.sampled,
                (None, Some(root)) => match root.name {
                    SamplerName::AlwaysOn => true,
                    SamplerName::TraceIdRatio => ratio(trace_id, root.options.fraction),
                    _ => false,
                },
                (None, None) => false,
            },
        }
    }
}

impl Plugin for Opentelemetry {
    fn phases(&self) -> Phases {
        Phases::REWRITE
    }

    fn rewrite(&self, _: &mut Ctx, req: &mut request::Parts) -> Flow {
        // A repeated traceparent is no valid one.
        let mut given = req.headers.get_all("traceparent").iter();
        let parent = match (given.next(), given.next()) {
            (Some(v), None) => v.to_str().ok().and_then(parse),
            _ => None,
        };
        let trace_id = parent.map_or_else(|| fastrand::u128(1..), |p| p.trace_id);
        let span_id = fastrand::u64(1..);
        let flags = u8::from(self.sampled(trace_id, parent));
        let value = format!("00-{trace_id:032x}-{span_id:016x}-{flags:02x}");
        if let Ok(v) = HeaderValue::from_str(&value) {
            req.headers.insert("traceparent", v);
        }
        if parent.is_none() {
            req.headers.remove("tracestate");
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_traceparents_strictly() {
        let p = parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        assert_eq!(p.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
        assert!(p.sampled);
        assert!(parse("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01").is_none(), "uppercase");
        assert!(parse("00-00000000000000000000000000000000-b7ad6b7169203331-01").is_none());
        assert!(parse("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01").is_none());
        assert!(parse("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").is_none());
        assert!(parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x").is_none());
        assert!(
            parse("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x").is_some(),
            "future versions may grow"
        );
    }
}
