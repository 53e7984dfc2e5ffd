//! `hmac-auth`: finds the consumer by the `keyId` of an `Authorization: Signature ...` header and checks the
//! HMAC over the signing string (`keyId`, then each listed header as `name: value`, `@request-target` as
//! `METHOD /path?query`, each line ending in `\n`), the `Date` against the clock, and optionally the `Digest`
//! against the body (`SHA-256=<base64>`). Failures other than a malformed header are all answered
//! `client request can't be validated`, as APISIX does, the detail logged.

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::{AUTHORIZATION, DATE, HeaderValue};
use http::{StatusCode, request};
use sha2::Digest as _;
use sluice_model::plugins::{Schema, hmac_auth as model};
use sluice_model::{Credential, PluginConf};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, auth, message};

/// hmac-auth's place in the registry (APISIX priority 2530).
pub(super) const FACTORY: Factory =
    Factory { name: model::HmacAuth::NAME, priority: 2530, auth: true, prefer_route: false, build };

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::HmacAuth(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    Ok(Arc::new(HmacAuth { conf: c.clone(), challenge: auth::challenge("hmac", &c.realm) }))
}

#[derive(Debug)]
struct HmacAuth {
    conf: model::HmacAuth,
    challenge: HeaderValue,
}

/// The fields of a `Signature` authorization.
#[derive(Debug, Default)]
struct Fields {
    key_id: Option<String>,
    algorithm: Option<String>,
    signature: Option<String>,
    headers: Vec<String>,
}

/// Parses `Signature keyId="..",algorithm="..",headers="a b",signature=".."`; the error is shown to the client.
fn fields(value: &str) -> Result<Fields, &'static str> {
    let rest = value.strip_prefix("Signature").ok_or("Authorization header does not start with 'Signature'")?;
    let mut out = Fields::default();
    for part in rest.split(',') {
        let Some((name, value)) = part.trim().split_once('=') else { continue };
        let value = value.trim().trim_matches('"').to_string();
        match name.trim() {
            "keyId" => out.key_id = Some(value),
            "algorithm" => out.algorithm = Some(value),
            "signature" => out.signature = Some(value),
            "headers" => out.headers = value.split(' ').filter(|h| !h.is_empty()).map(str::to_string).collect(),
            _ => {}
        }
    }
    Ok(out)
}

fn mac(algorithm: &str, key: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    Some(match algorithm {
        "hmac-sha1" => {
            Hmac::<sha1::Sha1>::new_from_slice(key).ok()?.chain_update(data).finalize().into_bytes().to_vec()
        }
        "hmac-sha256" => {
            Hmac::<sha2::Sha256>::new_from_slice(key).ok()?.chain_update(data).finalize().into_bytes().to_vec()
        }
        "hmac-sha512" => {
            Hmac::<sha2::Sha512>::new_from_slice(key).ok()?.chain_update(data).finalize().into_bytes().to_vec()
        }
        _ => return None,
    })
}

/// The bytes the client signed: header values as they came (never re-encoded, so two different values cannot
/// sign alike); `None` when a signed header is repeated, since only one of its values could be signed.
fn signing_string(key_id: &str, headers: &[String], req: &request::Parts) -> Option<Vec<u8>> {
    let mut out = format!("{key_id}\n").into_bytes();
    for name in headers {
        let mut values = req.headers.get_all(name.as_str()).iter();
        if let Some(v) = values.next() {
            if values.next().is_some() {
                return None;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.push(b'\n');
        } else if name == "@request-target" {
            let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
            out.extend_from_slice(format!("{} {target}\n", req.method.as_str()).as_bytes());
        }
    }
    Some(out)
}

/// Compares two MACs in time that depends only on their lengths, so the comparison leaks nothing of the secret.
fn same_mac(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

impl HmacAuth {
    /// The consumer the signature proves, or why not (the detail, for the log).
    fn verify(&self, ctx: &Ctx, req: &request::Parts, f: &Fields) -> Result<Arc<super::Consumer>, String> {
        let (Some(key_id), Some(signature)) = (&f.key_id, &f.signature) else {
            return Err("keyId or signature missing".into());
        };
        let algorithm = f.algorithm.as_deref().ok_or("algorithm missing")?;
        let consumer = ctx.consumers.find(FACTORY.name, key_id).cloned().ok_or("Invalid key_id")?;
        if !self.conf.allowed_algorithms.iter().any(|a| a == algorithm) {
            return Err("Invalid algorithm".into());
        }
        let date = req.headers.get(DATE).ok_or("Date header missing. failed to validate clock skew")?;
        let date =
            date.to_str().ok().and_then(|d| httpdate::parse_http_date(d).ok()).ok_or("Invalid GMT format time")?;
        let skew = match SystemTime::now().duration_since(date) {
            Ok(ahead) => ahead,
            Err(behind) => behind.duration(),
        };
        if skew.as_secs() > self.conf.clock_skew {
            return Err("Clock skew exceeded".into());
        }
        if let Some(missing) = self.conf.signed_headers.iter().find(|h| !f.headers.contains(h)) {
            return Err(format!("expected header {missing:?} missing in signing"));
        }
        let Some(Credential::HmacAuth(c)) = consumer.credential(FACTORY.name) else {
            return Err("Invalid key_id".into());
        };
        let signed = signing_string(key_id, &f.headers, req).ok_or("a signed header is repeated")?;
        let expected = mac(algorithm, c.secret_key.as_bytes(), &signed);
        let given = base64::engine::general_purpose::STANDARD.decode(signature).ok();
        match (expected, given) {
            (Some(expected), Some(given)) if same_mac(&expected, &given) => {}
            _ => return Err("Invalid signature".into()),
        }
        Ok(consumer)
    }
}

/// The request carried a valid signature; the body is checked next.
#[derive(Debug, Clone, Copy)]
struct Signed;

impl Plugin for HmacAuth {
    fn phases(&self) -> Phases {
        if self.conf.validate_request_body { Phases::REWRITE | Phases::REQUEST_BODY } else { Phases::REWRITE }
    }

    fn rewrite(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        let fields = match req.headers.get(AUTHORIZATION) {
            None => Err("missing Authorization header"),
            Some(v) => fields(&String::from_utf8_lossy(v.as_bytes())),
        };
        let result = match fields {
            Err(shown) => Err((format!("client request can't be validated: {shown}"), shown.to_string())),
            Ok(f) => {
                self.verify(ctx, req, &f).map_err(|detail| ("client request can't be validated".to_string(), detail))
            }
        };
        if self.conf.hide_credentials {
            req.headers.remove(AUTHORIZATION);
        }
        match (result, &self.conf.anonymous_consumer) {
            (Ok(consumer), _) => {
                auth::attach(ctx, req, consumer);
                ctx.extensions.insert(Signed);
                Flow::Continue
            }
            (Err((text, detail)), None) => {
                tracing::debug!(detail, "hmac-auth refused a request");
                Flow::Respond(auth::unauthorized(&text, &self.challenge))
            }
            (Err(_), Some(name)) => auth::anonymous(ctx, req, name, &self.challenge),
        }
    }

    fn request_body(&self, ctx: &mut Ctx, req: &mut request::Parts, body: &Bytes) -> Flow {
        if ctx.extensions.get::<Signed>().is_none() {
            // Authenticated as the anonymous consumer: there is no digest to check.
            return Flow::Continue;
        }
        if body.len() as u64 > self.conf.max_req_body_size {
            let text = format!(
                "request size {} is greater than the maximum size {} allowed",
                body.len(),
                self.conf.max_req_body_size
            );
            return Flow::Respond(message(StatusCode::PAYLOAD_TOO_LARGE, &text));
        }
        let expected =
            format!("SHA-256={}", base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body)));
        if req.headers.get("digest").is_some_and(|d| d.as_bytes() == expected.as_bytes()) {
            return Flow::Continue;
        }
        tracing::debug!("hmac-auth refused a request: Invalid digest");
        Flow::Respond(auth::unauthorized("client request can't be validated", &self.challenge))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signature_fields_and_builds_the_signing_string() {
        let f =
            fields(r#"Signature keyId="ak",algorithm="hmac-sha256",headers="@request-target date",signature="c2ln""#)
                .unwrap();
        assert_eq!((f.key_id.as_deref(), f.algorithm.as_deref()), (Some("ak"), Some("hmac-sha256")));
        assert_eq!(f.headers, ["@request-target", "date"]);
        assert!(fields("Basic x").is_err());
        let req = http::Request::get("/hello?a=1").header("date", "D").body(()).unwrap().into_parts().0;
        assert_eq!(signing_string("ak", &f.headers, &req).unwrap(), b"ak\nGET /hello?a=1\ndate: D\n");
    }
}
