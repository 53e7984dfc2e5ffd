//! `gzip`: compresses responses of the configured types for clients that accept gzip, as it streams (only
//! statuses 200, 403 and 404, as nginx's gzip filter, which APISIX's plugin switches on, does).

use std::sync::Arc;

use http::{StatusCode, request, response};
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, gzip as model};

use super::compress::{Accepts, Encoder, Worth, encode_headers, note, vary};
use super::registry::{BuildCtx, Factory, mismatch};
use super::{BodyFilter, Ctx, Flow, Phases, Plugin};

/// gzip's place in the registry (APISIX priority 995).
pub(super) const FACTORY: Factory =
    Factory { name: model::Gzip::NAME, priority: 995, auth: false, prefer_route: false, build };

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::Gzip(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    Ok(Arc::new(Gzip(c.clone())))
}

#[derive(Debug)]
struct Gzip(model::Gzip);

impl Plugin for Gzip {
    fn phases(&self) -> Phases {
        Phases::REWRITE | Phases::RESPONSE_BODY
    }

    fn rewrite(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        note(ctx, req);
        Flow::Continue
    }

    fn compresses(&self) -> bool {
        true
    }

    fn response_body(&self, ctx: &Ctx, resp: &mut response::Parts) -> Option<Box<dyn BodyFilter>> {
        let c = &self.0;
        let worth = Worth { types: &c.types, min_length: c.min_length, http_version: c.http_version };
        if !worth.qualifies(ctx, resp) {
            return None;
        }
        if c.vary == Some(true) {
            vary(resp);
        }
        let accepts = ctx.extensions.get::<Accepts>()?;
        let status_ok = matches!(resp.status, StatusCode::OK | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND);
        if !accepts.gzip || accepts.via || !status_ok {
            return None;
        }
        encode_headers(resp, "gzip");
        let level = flate2::Compression::new(c.comp_level);
        Some(Box::new(Encoder::Gzip(flate2::write::GzEncoder::new(Vec::new(), level))))
    }
}
