//! `request-id`: gives every request an id (unless the client sent one), sends it to the node and, by default,
//! back to the client (unless the response already carries one).

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::{request, response};
use sluice_model::PluginConf;
use sluice_model::plugins::Schema;
use sluice_model::plugins::request_id::{self as model, Algorithm};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin};

/// request-id's place in the registry (APISIX priority 12015).
pub(super) const FACTORY: Factory =
    Factory { name: model::RequestId::NAME, priority: 12015, auth: false, prefer_route: false, build };

/// nanoid's alphabet.
const NANOID: &[u8; 64] = b"-_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::RequestId(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    let header = HeaderName::from_bytes(c.header_name.to_ascii_lowercase().as_bytes()).map_err(|e| e.to_string())?;
    Ok(Arc::new(RequestId {
        header,
        include_in_response: c.include_in_response,
        algorithm: c.algorithm,
        length: c.range_id.length,
        char_set: c.range_id.char_set.as_bytes().to_vec(),
    }))
}

#[derive(Debug)]
struct RequestId {
    header: HeaderName,
    include_in_response: bool,
    algorithm: Algorithm,
    length: usize,
    char_set: Vec<u8>,
}

/// The ids this request was given, by header, for the response.
#[derive(Debug, Clone, Default)]
struct Given(Vec<(HeaderName, HeaderValue)>);

impl RequestId {
    fn make(&self) -> String {
        match self.algorithm {
            Algorithm::Uuid => uuid::Uuid::new_v4().to_string(),
            Algorithm::Uuidv7 => uuid::Uuid::now_v7().to_string(),
            Algorithm::Nanoid => (0..21).map(|_| NANOID[fastrand::usize(..64)] as char).collect(),
            Algorithm::RangeId => {
                (0..self.length).map(|_| self.char_set[fastrand::usize(..self.char_set.len())] as char).collect()
            }
        }
    }
}

impl Plugin for RequestId {
    fn phases(&self) -> Phases {
        Phases::REWRITE | Phases::RESPONSE_HEADER
    }

    fn rewrite(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        let id = match req.headers.get(&self.header).filter(|v| !v.is_empty()) {
            Some(v) => v.clone(),
            None => {
                let v = HeaderValue::from_str(&self.make()).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
                req.headers.insert(self.header.clone(), v.clone());
                v
            }
        };
        if self.include_in_response {
            ctx.extensions.get_or_insert_default::<Given>().0.push((self.header.clone(), id));
        }
        Flow::Continue
    }

    fn response_header(&self, ctx: &mut Ctx, resp: &mut response::Parts) {
        if !self.include_in_response || resp.headers.get(&self.header).is_some_and(|v| !v.is_empty()) {
            return;
        }
        if let Some((_, id)) = ctx.extensions.get::<Given>().and_then(|g| g.0.iter().find(|(h, _)| *h == self.header)) {
            resp.headers.insert(self.header.clone(), id.clone());
        }
    }
}
