//! `referer-restriction`: allows or refuses requests by the host of their `Referer` (exact names, and `*.x.com`
//! suffixes; case-sensitive, as APISIX compares). A `Referer` that is not an `http(s)://host...` or `//host...`
//! URL counts as missing.

use std::collections::HashSet;
use std::sync::Arc;

use http::header::REFERER;
use http::{StatusCode, request};
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, referer_restriction as model};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, Reply, message};

/// referer-restriction's place in the registry (APISIX priority 2990).
pub(super) const FACTORY: Factory =
    Factory { name: model::RefererRestriction::NAME, priority: 2990, auth: false, prefer_route: false, build };

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::RefererRestriction(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    let (allow, list) = match (&c.whitelist, &c.blacklist) {
        (Some(w), _) => (true, w),
        (None, Some(b)) => (false, b),
        (None, None) => return Err("no list".into()),
    };
    let mut exact = HashSet::new();
    let mut suffixes = Vec::new();
    for host in list {
        match host.strip_prefix('*') {
            Some(suffix) => suffixes.push(suffix.to_string()),
            None => drop(exact.insert(host.clone())),
        }
    }
    Ok(Arc::new(RefererRestriction {
        allow,
        exact,
        suffixes,
        bypass_missing: c.bypass_missing,
        refusal: message(StatusCode::FORBIDDEN, &c.message),
    }))
}

#[derive(Debug)]
struct RefererRestriction {
    allow: bool,
    exact: HashSet<String>,
    suffixes: Vec<String>,
    bypass_missing: bool,
    refusal: Reply,
}

/// The host of a `Referer` URL (without port; brackets of an IPv6 address kept), as lua-resty-http parses it.
fn referer_host(value: &str) -> Option<&str> {
    let rest = value.strip_prefix("https:").or_else(|| value.strip_prefix("http:")).unwrap_or(value);
    let rest = rest.strip_prefix("//")?;
    let end = if rest.starts_with('[') {
        rest.find(']')? + 1
    } else {
        rest.find([':', '/', '?', '[', ']']).unwrap_or(rest.len())
    };
    (end > 0).then(|| &rest[..end])
}

impl Plugin for RefererRestriction {
    fn phases(&self) -> Phases {
        Phases::ACCESS
    }

    fn access(&self, _: &mut Ctx, req: &mut request::Parts) -> Flow {
        let host = req.headers.get(REFERER).and_then(|v| v.to_str().ok()).and_then(referer_host);
        let Some(host) = host else {
            return if self.bypass_missing { Flow::Continue } else { Flow::Respond(super::clone_reply(&self.refusal)) };
        };
        let matched = self.exact.contains(host) || self.suffixes.iter().any(|s| host.ends_with(s.as_str()));
        if matched == self.allow { Flow::Continue } else { Flow::Respond(super::clone_reply(&self.refusal)) }
    }
}

#[cfg(test)]
mod tests {
    use super::referer_host;

    #[test]
    fn reads_referer_hosts() {
        assert_eq!(referer_host("http://www.xx.com/a?b"), Some("www.xx.com"));
        assert_eq!(referer_host("https://x.com:8443"), Some("x.com"));
        assert_eq!(referer_host("//x.com/p"), Some("x.com"));
        assert_eq!(referer_host("http://[::1]:80/"), Some("[::1]"));
        assert_eq!(referer_host("www.yy.com"), None);
        assert_eq!(referer_host("ftp://x.com"), None);
    }
}
