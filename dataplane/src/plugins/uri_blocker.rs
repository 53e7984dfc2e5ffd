//! `uri-blocker`: refuses requests whose path and query (`$request_uri`) match one of its regexes.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode, request};
use regex::RegexBuilder;
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, uri_blocker as model};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, Reply, json_reply};

/// uri-blocker's place in the registry (APISIX priority 2900).
pub(super) const FACTORY: Factory =
    Factory { name: model::UriBlocker::NAME, priority: 2900, auth: false, prefer_route: false, build };

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::UriBlocker(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    // The rules are joined into one alternation, as APISIX does.
    let rules = RegexBuilder::new(&c.block_rules.join("|"))
        .case_insensitive(c.case_insensitive)
        .build()
        .map_err(|e| e.to_string())?;
    let status = StatusCode::from_u16(c.rejected_code).map_err(|e| e.to_string())?;
    let refusal = match &c.rejected_msg {
        Some(msg) => json_reply(status, serde_json::json!({ "error_msg": msg }).to_string()),
        None => {
            let mut r = Response::new(Bytes::new());
            *r.status_mut() = status;
            r
        }
    };
    Ok(Arc::new(UriBlocker { rules, refusal }))
}

#[derive(Debug)]
struct UriBlocker {
    rules: regex::Regex,
    refusal: Reply,
}

impl Plugin for UriBlocker {
    fn phases(&self) -> Phases {
        Phases::REWRITE
    }

    fn rewrite(&self, _: &mut Ctx, req: &mut request::Parts) -> Flow {
        let target = req.uri.path_and_query().map_or(req.uri.path(), |pq| pq.as_str());
        if self.rules.is_match(target) { Flow::Respond(super::clone_reply(&self.refusal)) } else { Flow::Continue }
    }
}
