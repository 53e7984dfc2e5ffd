//! `basic-auth`: finds the consumer by the user name of HTTP Basic credentials and checks the password.

use std::sync::Arc;

use base64::Engine;
use http::header::{AUTHORIZATION, HeaderValue};
use http::request;
use sluice_model::plugins::{Schema, basic_auth};
use sluice_model::{Credential, PluginConf};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, auth};

/// basic-auth's place in the registry (APISIX priority 2520).
pub(super) const FACTORY: Factory =
    Factory { name: basic_auth::BasicAuth::NAME, priority: 2520, auth: true, prefer_route: false, build };

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::BasicAuth(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    Ok(Arc::new(BasicAuth {
        hide_credentials: c.hide_credentials,
        anonymous_consumer: c.anonymous_consumer.as_deref().map(Arc::from),
        challenge: auth::challenge("Basic", &c.realm),
    }))
}

#[derive(Debug)]
struct BasicAuth {
    hide_credentials: bool,
    anonymous_consumer: Option<Arc<str>>,
    challenge: HeaderValue,
}

/// The user name and password of an `Authorization` value, as APISIX reads them: a `basic` scheme anywhere
/// (case-insensitive) followed by base64 of `user:password`, every white space removed from both parts, and the
/// password ending at a second colon.
fn credentials(value: &str) -> Option<(String, String)> {
    let lower = value.to_ascii_lowercase();
    let at = lower.find("basic")?;
    let rest = &value[at + 5..];
    let encoded = rest.strip_prefix(|c: char| c.is_ascii_whitespace())?.trim();
    if encoded.is_empty() {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let mut parts = decoded.split(':');
    let (user, password) = (parts.next()?, parts.next()?);
    let strip = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    Some((strip(user), strip(password)))
}

impl Plugin for BasicAuth {
    fn phases(&self) -> Phases {
        Phases::REWRITE
    }

    fn rewrite(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        let found = match req.headers.get(AUTHORIZATION) {
            None => Err("Missing authorization in request"),
            Some(value) => match value.to_str().ok().and_then(credentials) {
                None => Err("Invalid authorization in request"),
                Some((user, password)) => match ctx.consumers.find(FACTORY.name, &user) {
                    Some(consumer) => match consumer.credential(FACTORY.name) {
                        Some(Credential::BasicAuth(c)) if c.password == password => Ok(consumer.clone()),
                        _ => Err("Invalid user authorization"),
                    },
                    None => Err("Invalid user authorization"),
                },
            },
        };
        let consumer = match (found, &self.anonymous_consumer) {
            (Ok(consumer), _) => consumer,
            (Err(text), None) => return Flow::Respond(auth::unauthorized(text, &self.challenge)),
            (Err(_), Some(name)) => {
                if self.hide_credentials {
                    req.headers.remove(AUTHORIZATION);
                }
                return auth::anonymous(ctx, req, name, &self.challenge);
            }
        };
        if self.hide_credentials {
            req.headers.remove(AUTHORIZATION);
        }
        auth::attach(ctx, req, consumer);
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_credentials_as_apisix_does() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(credentials(&format!("Basic {}", b64("foo:bar"))), Some(("foo".into(), "bar".into())));
        assert_eq!(credentials(&format!("bAsIc {}", b64("foo:bar:baz"))), Some(("foo".into(), "bar".into())));
        assert_eq!(credentials(&format!("Basic {}", b64(" foo :bar\n"))), Some(("foo".into(), "bar".into())));
        assert_eq!(credentials(&format!("Basic {}", b64("nocolon"))), None);
        assert_eq!(credentials("Basic !!!"), None);
        assert_eq!(credentials("Bearer x"), None);
    }
}
