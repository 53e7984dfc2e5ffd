//! Which addresses the data plane may dial as upstream nodes.
//!
//! Whoever writes a route or a Service (an ExternalName, an `externalNodes` entry, a hand-written etcd key) picks
//! the address the gateway connects to, from inside the cluster. Without a policy that reaches what only the
//! gateway should: the cloud's metadata service (credentials of the node's role), the etcd cluster that holds
//! every consumer's credentials, the data plane's own admin listener. So some addresses are never dialled:
//! link-local blocks (which hold the metadata services) always, the etcd endpoints and the admin listener of this
//! process, and whatever `--upstream-deny` adds (the chart adds loopback, the pod's own address and the
//! Kubernetes API service). `--upstream-allow` names blocks that are dialled all the same. The check runs where a
//! connection is opened (for pooled connections: once per connection, not per request), after name resolution,
//! so a DNS name that resolves to a refused address is refused as well.

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;

use crate::router::IpRange;

pub use sluice_model::address::BUILT_IN_DENY;

/// The addresses upstream connections may not go to.
#[derive(Debug, Clone)]
pub struct AddressPolicy {
    /// Blocks never dialled: the built-in ones and the operator's.
    deny: Vec<IpRange>,
    /// Single sockets never dialled: the etcd endpoints and the admin listener. An unspecified address
    /// (`0.0.0.0:9091`) stands for every loopback address with that port.
    sockets: Vec<SocketAddr>,
    /// Blocks dialled even when denied.
    allow: Vec<IpRange>,
}

impl Default for AddressPolicy {
    /// The built-in deny list alone.
    fn default() -> Self {
        AddressPolicy { deny: ranges(BUILT_IN_DENY).unwrap_or_default(), sockets: Vec::new(), allow: Vec::new() }
    }
}

/// A block given to `--upstream-deny` or `--upstream-allow` that is not an address or CIDR block.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR block")]
pub struct BadBlock(pub String);

fn ranges<S: AsRef<str>>(blocks: &[S]) -> Result<Vec<IpRange>, BadBlock> {
    blocks
        .iter()
        .map(|b| b.as_ref().trim())
        .filter(|b| !b.is_empty())
        .map(|b| IpRange::parse(b).ok_or_else(|| BadBlock(b.to_string())))
        .collect()
}

impl AddressPolicy {
    /// The built-in deny list plus `deny`, the sockets of this process's own dependencies and listeners, and the
    /// `allow` exceptions. Empty entries are ignored (a chart value that expands to nothing).
    pub fn new<S: AsRef<str>>(deny: &[S], sockets: Vec<SocketAddr>, allow: &[S]) -> Result<AddressPolicy, BadBlock> {
        let mut policy = AddressPolicy::default();
        policy.deny.extend(ranges(deny)?);
        policy.sockets = sockets;
        policy.allow = ranges(allow)?;
        Ok(policy)
    }

    /// Whether a connection to `addr` may be opened.
    pub fn admits(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        if self.allow.iter().any(|r| r.contains(ip)) {
            return true;
        }
        let own = |s: &SocketAddr| {
            s.port() == addr.port() && (s.ip().to_canonical() == ip || (s.ip().is_unspecified() && ip.is_loopback()))
        };
        !self.deny.iter().any(|r| r.contains(ip)) && !self.sockets.iter().any(own)
    }
}

/// Why no TCP connection was opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Every address the node resolved to is refused by the policy; none was dialled.
    #[error("{0} is refused by the upstream address policy")]
    Refused(SocketAddr),
    /// Resolving or connecting failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Opens a TCP connection to `host:port` (an address, or a name resolved here), trying the admitted addresses in
/// the resolver's order, as `TcpStream::connect` does; a refused address is skipped, never dialled.
pub async fn connect(policy: &AddressPolicy, host: &str, port: u16) -> Result<TcpStream, DialError> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return connect_addr(policy, SocketAddr::new(ip, port)).await;
    }
    let mut refused = None;
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        if !policy.admits(addr) {
            refused = Some(addr);
            continue;
        }
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(match (last, refused) {
        (Some(e), _) => DialError::Io(e),
        (None, Some(addr)) => DialError::Refused(addr),
        (None, None) => DialError::Io(std::io::Error::other(format!("{host} resolved to no address"))),
    })
}

/// Opens a TCP connection to `addr` when the policy admits it.
pub async fn connect_addr(policy: &AddressPolicy, addr: SocketAddr) -> Result<TcpStream, DialError> {
    if !policy.admits(addr) {
        return Err(DialError::Refused(addr));
    }
    Ok(TcpStream::connect(addr).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_metadata_and_own_sockets_unless_allowed() {
        let p = AddressPolicy::default();
        assert!(!p.admits(at("169.254.169.254:80")));
        assert!(!p.admits(at("[fd00:ec2::254]:80")));
        assert!(!p.admits(at("[fe80::1]:80")));
        assert!(!p.admits(at("[::ffff:169.254.169.254]:80")), "IPv4-mapped counts as IPv4");
        assert!(p.admits(at("127.0.0.1:8080")) && p.admits(at("10.1.2.3:80")) && p.admits(at("[2001:db8::1]:80")));

        let own = vec![at("127.0.0.1:2379"), at("0.0.0.0:9091")];
        let p = AddressPolicy::new(&["10.96.0.1"], own.clone(), &[] as &[&str]).unwrap();
        assert!(!p.admits(at("127.0.0.1:2379")), "the etcd endpoint");
        assert!(p.admits(at("127.0.0.1:2380")), "another port of the same host");
        assert!(!p.admits(at("127.0.0.1:9091")) && !p.admits(at("127.0.0.2:9091")), "the admin listener on any");
        assert!(!p.admits(at("[::1]:9091")));
        assert!(p.admits(at("10.0.0.9:9091")), "another host's port 9091");
        assert!(!p.admits(at("10.96.0.1:443")), "an operator's block");

        let p = AddressPolicy::new(&["127.0.0.0/8"], own, &["169.254.169.254", "127.0.0.1/32"]).unwrap();
        assert!(p.admits(at("169.254.169.254:80")) && !p.admits(at("169.254.0.1:80")));
        assert!(p.admits(at("127.0.0.1:2379")), "the allow-list wins over the own sockets");
        assert!(!p.admits(at("127.0.0.2:80")));

        assert!(AddressPolicy::new(&["", " "], Vec::new(), &[""]).is_ok(), "empty entries are ignored");
        assert!(matches!(AddressPolicy::new(&["10.0.0.0/33"], Vec::new(), &[] as &[&str]), Err(BadBlock(_))));
    }

    #[tokio::test]
    async fn a_refused_address_is_never_dialled() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let p = AddressPolicy::new(&[] as &[&str], vec![addr], &[]).unwrap();
        assert!(matches!(connect(&p, "127.0.0.1", addr.port()).await, Err(DialError::Refused(a)) if a == addr));
        assert!(matches!(
            connect(&p, "localhost", addr.port()).await,
            Err(DialError::Refused(_)) | Err(DialError::Io(_))
        ));
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "nothing connected");
        assert!(connect(&AddressPolicy::default(), "127.0.0.1", addr.port()).await.is_ok());
    }
}
