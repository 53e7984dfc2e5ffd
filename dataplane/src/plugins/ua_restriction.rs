//! `ua-restriction`: allows or refuses requests by `User-Agent` regexes (searched, case-sensitive). With several
//! `User-Agent` fields, a denylist refuses when any of them matches (APISIX 3.18 refuses when any does *not*
//! match, which lets a denied agent through by adding a second field; sluice does not copy that).

use std::sync::Arc;

use http::header::USER_AGENT;
use http::{StatusCode, request};
use regex::Regex;
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, ua_restriction as model};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, Reply, message};

/// ua-restriction's place in the registry (APISIX priority 2999).
pub(super) const FACTORY: Factory =
    Factory { name: model::UaRestriction::NAME, priority: 2999, auth: false, prefer_route: false, build };

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::UaRestriction(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    let (allow, list) = match (&c.allowlist, &c.denylist) {
        (Some(a), _) => (true, a),
        (None, Some(d)) => (false, d),
        (None, None) => return Err("no list".into()),
    };
    let rules = list.iter().map(|r| Regex::new(r).map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
    Ok(Arc::new(UaRestriction {
        allow,
        rules,
        bypass_missing: c.bypass_missing,
        refusal: message(StatusCode::FORBIDDEN, &c.message),
    }))
}

#[derive(Debug)]
struct UaRestriction {
    allow: bool,
    rules: Vec<Regex>,
    bypass_missing: bool,
    refusal: Reply,
}

impl Plugin for UaRestriction {
    fn phases(&self) -> Phases {
        Phases::ACCESS
    }

    fn access(&self, _: &mut Ctx, req: &mut request::Parts) -> Flow {
        let mut agents =
            req.headers.get_all(USER_AGENT).iter().map(|v| String::from_utf8_lossy(v.as_bytes())).peekable();
        if agents.peek().is_none() {
            return if self.bypass_missing { Flow::Continue } else { Flow::Respond(super::clone_reply(&self.refusal)) };
        }
        let matched = agents.any(|ua| self.rules.iter().any(|r| r.is_match(ua.trim())));
        if matched == self.allow { Flow::Continue } else { Flow::Respond(super::clone_reply(&self.refusal)) }
    }
}
