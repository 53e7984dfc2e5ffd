//! Client address rules of `remote_addr`/`remote_addrs`: single addresses and CIDR blocks, IPv4 and IPv6.

use std::net::IpAddr;

/// One address or CIDR block a client address may fall in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    /// The network address, already masked.
    network: u128,
    /// The mask in the 128-bit space of the address family.
    mask: u128,
    /// Whether the block is IPv4; families never match each other.
    v4: bool,
}

impl IpRange {
    /// Parses `1.2.3.4`, `1.2.3.0/24`, `::1` or `fe80::/10`; `None` when it is neither.
    pub fn parse(text: &str) -> Option<IpRange> {
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().ok()?;
        let (bits, width, v4) = to_bits(addr);
        let len = u32::from(len.unwrap_or(width));
        if len > u32::from(width) {
            return None;
        }
        // The mask covers the top `len` bits of a `width`-bit address stored in the low bits of a u128.
        let host_bits = u32::from(width) - len;
        let width_mask = if width == 128 { u128::MAX } else { (1u128 << width) - 1 };
        let mask = width_mask & u128::MAX.checked_shl(host_bits).unwrap_or(0);
        Some(IpRange { network: bits & mask, mask, v4 })
    }

    /// Whether `addr` lies in this block; IPv4-mapped IPv6 clients count as IPv4.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let (bits, _, v4) = to_bits(addr.to_canonical());
        v4 == self.v4 && bits & self.mask == self.network
    }
}

fn to_bits(addr: IpAddr) -> (u128, u8, bool) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32, true),
        IpAddr::V6(a) => (u128::from(a), 128, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_addresses_and_blocks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let r = IpRange::parse("192.168.1.0/24").unwrap();
        assert!(r.contains(ip("192.168.1.77")));
        assert!(!r.contains(ip("192.168.2.1")));
        assert!(r.contains(ip("::ffff:192.168.1.5")), "IPv4-mapped IPv6 counts as IPv4");
        let one = IpRange::parse("10.0.0.1").unwrap();
        assert!(one.contains(ip("10.0.0.1")) && !one.contains(ip("10.0.0.2")));
        let all = IpRange::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("::1")));
        let v6 = IpRange::parse("fe80::/10").unwrap();
        assert!(v6.contains(ip("fe80::1")) && !v6.contains(ip("::1")));
        assert!(IpRange::parse("::/0").unwrap().contains(ip("2001:db8::1")));
        assert!(IpRange::parse("::1").unwrap().contains(ip("::1")));
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", ""] {
            assert_eq!(IpRange::parse(bad), None, "{bad}");
        }
    }
}
