//! `consumer-restriction`: allows or refuses requests by consumer, service or route (after authentication).

use std::sync::Arc;

use http::{StatusCode, request};
use sluice_model::PluginConf;
use sluice_model::plugins::Schema;
use sluice_model::plugins::consumer_restriction::{self as model, Subject};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, Reply, message};

/// consumer-restriction's place in the registry (APISIX priority 2400).
pub(super) const FACTORY: Factory =
    Factory { name: model::ConsumerRestriction::NAME, priority: 2400, auth: false, prefer_route: false, build };

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::ConsumerRestriction(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    let status = StatusCode::from_u16(c.rejected_code).map_err(|e| e.to_string())?;
    let text = c.rejected_msg.clone().unwrap_or_else(|| format!("The {} is forbidden.", c.subject.as_str()));
    let unknown = format!("The request is rejected, please check the {} for this request", c.subject.as_str());
    Ok(Arc::new(ConsumerRestriction {
        conf: c.clone(),
        refusal: message(status, &text),
        unidentified: message(StatusCode::UNAUTHORIZED, &unknown),
    }))
}

#[derive(Debug)]
struct ConsumerRestriction {
    conf: model::ConsumerRestriction,
    refusal: Reply,
    unidentified: Reply,
}

impl Plugin for ConsumerRestriction {
    fn phases(&self) -> Phases {
        Phases::ACCESS
    }

    fn access(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        let value = match self.conf.subject {
            Subject::ConsumerName => ctx.consumer_name(),
            // sluice consumers belong to no group.
            Subject::ConsumerGroupId => None,
            Subject::ServiceId => ctx.service_id(),
            Subject::RouteId => ctx.route_id(),
        };
        let Some(value) = value else { return Flow::Respond(super::clone_reply(&self.unidentified)) };
        let listed = |list: &Option<Vec<String>>| list.as_ref().is_some_and(|l| l.iter().any(|v| v == value));
        if listed(&self.conf.blacklist) {
            return Flow::Respond(super::clone_reply(&self.refusal));
        }
        let whitelisted = listed(&self.conf.whitelist);
        let mut block = self.conf.whitelist.as_ref().is_some_and(|l| !l.is_empty()) && !whitelisted;
        if !whitelisted
            && let Some(entry) = self.conf.allowed_by_methods.iter().flatten().find(|e| e.user == value)
            && !entry.methods.iter().any(|m| m == req.method.as_str())
        {
            block = true;
        }
        if block { Flow::Respond(super::clone_reply(&self.refusal)) } else { Flow::Continue }
    }
}
