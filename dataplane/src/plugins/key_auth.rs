//! `key-auth`: finds the consumer by an API key in a header (first) or a query argument.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::request;
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, key_auth};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, auth};

/// key-auth's place in the registry (APISIX priority 2500).
pub(super) const FACTORY: Factory =
    Factory { name: key_auth::KeyAuth::NAME, priority: 2500, auth: true, prefer_route: false, build };

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::KeyAuth(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    let header =
        HeaderName::from_bytes(c.header.to_ascii_lowercase().as_bytes()).map_err(|e| format!("header: {e}"))?;
    Ok(Arc::new(KeyAuth {
        header,
        query: c.query.clone().into(),
        hide_credentials: c.hide_credentials,
        anonymous_consumer: c.anonymous_consumer.as_deref().map(Arc::from),
        challenge: auth::challenge("apikey", &c.realm),
    }))
}

#[derive(Debug)]
struct KeyAuth {
    header: HeaderName,
    query: Box<str>,
    hide_credentials: bool,
    anonymous_consumer: Option<Arc<str>>,
    challenge: HeaderValue,
}

impl KeyAuth {
    /// Removes the key from both places it may be in.
    fn hide(&self, req: &mut request::Parts) {
        req.headers.remove(&self.header);
        if auth::query_arg(req.uri.query(), &self.query).is_some() {
            req.uri = auth::without_query_arg(&req.uri, &self.query);
        }
    }
}

impl Plugin for KeyAuth {
    fn phases(&self) -> Phases {
        Phases::REWRITE
    }

    fn rewrite(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        let found = {
            // A key that is not valid text matches no consumer.
            let key = match req.headers.get(&self.header) {
                Some(v) => Some(Cow::Borrowed(v.to_str().unwrap_or(""))),
                None => auth::query_arg(req.uri.query(), &self.query),
            };
            match key {
                None => Err("Missing API key in request"),
                Some(key) => ctx.consumers.find(FACTORY.name, &key).cloned().ok_or("Invalid API key in request"),
            }
        };
        match found {
            Ok(consumer) => {
                if self.hide_credentials {
                    self.hide(req);
                }
                auth::attach(ctx, req, consumer);
                Flow::Continue
            }
            Err(text) => match &self.anonymous_consumer {
                None => Flow::Respond(auth::unauthorized(text, &self.challenge)),
                Some(name) => {
                    if self.hide_credentials {
                        self.hide(req);
                    }
                    auth::anonymous(ctx, req, name, &self.challenge)
                }
            },
        }
    }
}
