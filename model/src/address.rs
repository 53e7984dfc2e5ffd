//! Addresses no upstream node may be at in any deployment: link-local blocks, which hold the cloud metadata
//! services. The data plane refuses to dial them (with its own additions: its etcd endpoints, its admin listener,
//! the operator's `--upstream-deny`); the controller refuses them when it translates, so that the object naming
//! one is told why.

use std::net::{IpAddr, Ipv6Addr};

/// The built-in blocks, as the data plane's policy lists them: IPv4 and IPv6 link-local (169.254.169.254 is the
/// metadata service of AWS, GCP and Azure) and AWS's IPv6 metadata address.
pub const BUILT_IN_DENY: &[&str] = &["169.254.0.0/16", "fe80::/10", "fd00:ec2::254"];

/// AWS's IPv6 instance metadata address.
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Whether `ip` is in a built-in block ([`BUILT_IN_DENY`]); IPv4-mapped IPv6 addresses count as IPv4.
pub fn always_refused(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.is_unicast_link_local() || a == AWS_METADATA_V6,
    }
}

/// Why a node was refused, for a status message.
pub const REFUSED_REASON: &str =
    "link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254) are never proxied to";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::check::parse_cidr;

    #[test]
    fn the_list_and_the_check_agree() {
        for block in BUILT_IN_DENY {
            let (network, _) = parse_cidr(block).unwrap();
            assert!(always_refused(network), "{block}");
        }
        for ok in ["169.253.255.255", "169.255.0.0", "10.0.0.1", "127.0.0.1", "fec0::1", "fd00:ec2::253", "::1"] {
            assert!(!always_refused(ok.parse().unwrap()), "{ok}");
        }
        for no in ["169.254.169.254", "169.254.255.255", "febf::1", "::ffff:169.254.169.254"] {
            assert!(always_refused(no.parse().unwrap()), "{no}");
        }
    }
}
