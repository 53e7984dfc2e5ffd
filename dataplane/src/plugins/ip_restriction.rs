//! `ip-restriction`: allows or refuses the client by address (after `real-ip`, as APISIX's `remote_addr`).

use std::sync::Arc;

use http::{StatusCode, request};
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, ip_restriction as model};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, Reply, message};
use crate::router::IpRange;

/// ip-restriction's place in the registry (APISIX priority 3000).
pub(super) const FACTORY: Factory =
    Factory { name: model::IpRestriction::NAME, priority: 3000, auth: false, prefer_route: false, build };

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::IpRestriction(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    let (allow, list) = match (&c.whitelist, &c.blacklist) {
        (Some(w), _) => (true, w),
        (None, Some(b)) => (false, b),
        (None, None) => return Err("no list".into()),
    };
    let ranges: Result<Vec<_>, _> =
        list.iter().map(|a| IpRange::parse(a).ok_or_else(|| format!("invalid ip address: {a}"))).collect();
    let status = StatusCode::from_u16(c.response_code).map_err(|e| e.to_string())?;
    Ok(Arc::new(IpRestriction { allow, ranges: ranges?, refusal: message(status, &c.message) }))
}

#[derive(Debug)]
struct IpRestriction {
    /// A whitelist (else a blacklist).
    allow: bool,
    ranges: Vec<IpRange>,
    refusal: Reply,
}

impl Plugin for IpRestriction {
    fn phases(&self) -> Phases {
        Phases::ACCESS
    }

    fn access(&self, ctx: &mut Ctx, _: &mut request::Parts) -> Flow {
        let ip = ctx.client.ip().to_canonical();
        if self.ranges.iter().any(|r| r.contains(ip)) == self.allow {
            return Flow::Continue;
        }
        Flow::Respond(super::clone_reply(&self.refusal))
    }
}
