//! `real-ip`: sets the client's address from a header or variable that a trusted proxy in front wrote, so later
//! plugins, logs and the node's `X-Real-IP` / `X-Forwarded-For` see the real client.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::request;
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, real_ip as model};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, values};
use crate::router::{IpRange, Variable};

/// real-ip's place in the registry (APISIX priority 23000).
pub(super) const FACTORY: Factory =
    Factory { name: model::RealIp::NAME, priority: 23000, auth: false, prefer_route: false, build };

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::RealIp(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    let source = if c.source == "http_x_forwarded_for" {
        Source::ForwardedFor
    } else {
        Source::Var(Variable::parse(&c.source).ok_or_else(|| format!("source: unknown variable {:?}", c.source))?)
    };
    let trusted = c
        .trusted_addresses
        .as_ref()
        .map(|l| l.iter().map(|a| IpRange::parse(a).ok_or_else(|| format!("invalid ip address: {a}"))).collect())
        .transpose()?;
    Ok(Arc::new(RealIp { source, trusted, recursive: c.recursive }))
}

#[derive(Debug)]
enum Source {
    /// `X-Forwarded-For`: its last field, and in it the last hop (or, recursively, the last untrusted one).
    ForwardedFor,
    Var(Variable),
}

#[derive(Debug)]
struct RealIp {
    source: Source,
    trusted: Option<Vec<IpRange>>,
    recursive: bool,
}

impl RealIp {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.as_ref().is_some_and(|t| t.iter().any(|r| r.contains(ip.to_canonical())))
    }

    fn candidate(&self, ctx: &Ctx, req: &request::Parts) -> Option<String> {
        match &self.source {
            Source::ForwardedFor => {
                let last = req.headers.get_all("x-forwarded-for").iter().next_back()?.to_str().ok()?;
                let hops: Vec<&str> = last.split(',').map(str::trim).collect();
                if self.recursive && self.trusted.is_some() {
                    let untrusted =
                        hops.iter().skip(1).rev().find(|h| h.parse::<IpAddr>().map_or(true, |ip| !self.trusts(ip)));
                    return Some(untrusted.unwrap_or(&hops[0]).to_string());
                }
                hops.last().map(|h| h.to_string())
            }
            Source::Var(v) => {
                let host = values::host(req);
                v.value(&values::info(req, &host, ctx)).map(|v| v.into_owned())
            }
        }
    }
}

/// `ip`, `ip:port`, `[v6]` or `[v6]:port`.
fn parse_addr(text: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some((ip, None));
    }
    if let Some(inner) = text.strip_prefix('[') {
        let (ip, rest) = inner.split_once(']')?;
        let ip = ip.parse().ok()?;
        return match rest.strip_prefix(':') {
            None if rest.is_empty() => Some((ip, None)),
            Some(port) => Some((ip, Some(port.parse().ok().filter(|p| *p > 0)?))),
            None => None,
        };
    }
    let (ip, port) = text.rsplit_once(':')?;
    Some((ip.parse::<std::net::Ipv4Addr>().ok()?.into(), Some(port.parse().ok().filter(|p| *p > 0)?)))
}

impl Plugin for RealIp {
    fn phases(&self) -> Phases {
        Phases::REWRITE
    }

    fn rewrite(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        if self.trusted.is_some() && !self.trusts(ctx.client.ip()) {
            return Flow::Continue;
        }
        // A missing or unreadable address changes nothing, as in APISIX.
        if let Some((ip, port)) = self.candidate(ctx, req).as_deref().and_then(parse_addr) {
            ctx.client = SocketAddr::new(ip, port.unwrap_or(ctx.client.port()));
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::parse_addr;

    #[test]
    fn parses_addresses_with_ports() {
        assert_eq!(parse_addr("1.1.1.1"), Some(("1.1.1.1".parse().unwrap(), None)));
        assert_eq!(parse_addr("1.1.1.1:80"), Some(("1.1.1.1".parse().unwrap(), Some(80))));
        assert_eq!(parse_addr("[::2]:80"), Some(("::2".parse().unwrap(), Some(80))));
        assert_eq!(parse_addr("::2"), Some(("::2".parse().unwrap(), None)));
        assert_eq!(parse_addr("1.1.1.1.1"), None);
        assert_eq!(parse_addr("1.1.1.1:65536"), None);
    }
}
