//! `client-control`: the route's own request body limit, in place of `--max-body-bytes` (0 lifts it), as APISIX's
//! plugin sets nginx's `client_max_body_size` for the route. The proxy applies it: a declared length over it is
//! answered 413 before anything is sent, a chunked body once it passes it.

use std::sync::Arc;

use http::request;
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, client_control as model};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin};

/// client-control's place in the registry (APISIX priority 22000: before everything else).
pub(super) const FACTORY: Factory =
    Factory { name: model::ClientControl::NAME, priority: 22000, auth: false, prefer_route: false, build };

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::ClientControl(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    Ok(Arc::new(ClientControl { max_body_size: c.max_body_size }))
}

#[derive(Debug)]
struct ClientControl {
    max_body_size: Option<u64>,
}

impl Plugin for ClientControl {
    fn phases(&self) -> Phases {
        Phases::REWRITE
    }

    fn rewrite(&self, ctx: &mut Ctx, _: &mut request::Parts) -> Flow {
        if let Some(size) = self.max_body_size {
            ctx.max_body_size = Some(size);
        }
        Flow::Continue
    }
}
