//! `brotli`: compresses responses of the configured types for clients that accept br, as it streams. It runs
//! before gzip (priority 996 against 995), so a client accepting both gets br.

use std::sync::Arc;

use http::{request, response};
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, brotli as model};

use super::compress::{Accepts, Encoder, Worth, encode_headers, note, vary};
use super::registry::{BuildCtx, Factory, mismatch};
use super::{BodyFilter, Ctx, Flow, Phases, Plugin};

/// brotli's place in the registry (APISIX priority 996).
pub(super) const FACTORY: Factory =
    Factory { name: model::Brotli::NAME, priority: 996, auth: false, prefer_route: false, build };

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::Brotli(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    Ok(Arc::new(Brotli(c.clone())))
}

#[derive(Debug)]
struct Brotli(model::Brotli);

impl Plugin for Brotli {
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
        if !ctx.extensions.get::<Accepts>()?.br {
            return None;
        }
        let worth = Worth { types: &c.types, min_length: c.min_length, http_version: c.http_version };
        if !worth.qualifies(ctx, resp) {
            return None;
        }
        if c.vary == Some(true) {
            vary(resp);
        }
        encode_headers(resp, "br");
        let lgwin = if c.lgwin == 0 { 22 } else { c.lgwin };
        let mut params = brotli::enc::BrotliEncoderParams {
            quality: c.comp_level as i32,
            lgwin: lgwin as i32,
            ..Default::default()
        };
        params.mode = match c.mode {
            1 => brotli::enc::backward_references::BrotliEncoderMode::BROTLI_MODE_TEXT,
            2 => brotli::enc::backward_references::BrotliEncoderMode::BROTLI_MODE_FONT,
            _ => brotli::enc::backward_references::BrotliEncoderMode::BROTLI_MODE_GENERIC,
        };
        if c.lgblock != 0 {
            params.lgblock = c.lgblock as i32;
        }
        let writer = brotli::CompressorWriter::with_params(Vec::new(), 4096, &params);
        Some(Box::new(Encoder::Brotli(Box::new(writer))))
    }
}
