//! PROXY protocol v1 and v2 (HAProxy's, sent by cloud load balancers such as AWS NLB) in front of a listener's own
//! handshake: the client's address and the port it connected to come from the header instead of the TCP peer, so
//! `remote_addr`, `X-Forwarded-For`, `ip-restriction` and the logs see the real client.
//!
//! The header is read exactly (never a byte of the TLS or HTTP that follows), within a timeout; a connection
//! without a valid header is closed, since on such a listener only the load balancer may connect. A v2 `LOCAL`
//! header (the balancer's own health check) keeps the TCP peer. Parsing is the `ppp` crate's; reading the header
//! off the socket is here, because the rest of the stream must stay untouched for the next handshake.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tracing::debug;

use super::{Handshake, Transport};

/// How long a client may take to send its PROXY header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The v2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header (107 bytes, CRLF included).
const V1_MAX: usize = 107;
/// The longest v2 address and TLV block accepted (addresses take at most 216 bytes; TLVs beyond are unused).
const V2_MAX_BODY: usize = 1024;

/// The PROXY header, then `inner`'s handshake.
pub(crate) struct ProxyProtocol<H> {
    /// The handshake that follows the header (plain or TLS).
    pub(crate) inner: H,
}

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Forwarded {
    /// The client's address; `None` for `LOCAL` and `UNKNOWN` headers, which keep the TCP peer.
    pub(crate) source: Option<SocketAddr>,
    /// The port the client connected to on the load balancer.
    pub(crate) destination_port: Option<u16>,
}

impl Forwarded {
    /// A header that names no client: the TCP peer stays.
    const PEER: Forwarded = Forwarded { source: None, destination_port: None };

    fn from_client(ip: std::net::IpAddr, port: u16, destination_port: u16) -> Forwarded {
        Forwarded { source: Some(SocketAddr::new(ip, port)), destination_port: Some(destination_port) }
    }
}

impl<H: Handshake> Handshake for ProxyProtocol<H> {
    type Stream = H::Stream;

    async fn handshake(&self, mut tcp: TcpStream, remote: SocketAddr) -> Option<(H::Stream, Transport)> {
        let forwarded = match tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut tcp)).await {
            Ok(Ok(forwarded)) => forwarded,
            Ok(Err(e)) => {
                debug!(peer = %remote, error = %e, "no valid PROXY protocol header; closing");
                return None;
            }
            Err(_) => {
                debug!(peer = %remote, "no PROXY protocol header in time; closing");
                return None;
            }
        };
        let client = forwarded.source.unwrap_or(remote);
        let (stream, mut transport) = self.inner.handshake(tcp, client).await?;
        transport.client = forwarded.source;
        transport.port = forwarded.destination_port;
        Some((stream, transport))
    }
}

fn invalid(what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// Reads one PROXY header (v1 or v2) from `tcp`, and nothing after it.
async fn read_header(tcp: &mut TcpStream) -> std::io::Result<Forwarded> {
    let mut start = [0u8; 8];
    tcp.read_exact(&mut start).await?;
    if start.starts_with(b"PROXY ") {
        // A line ending in CRLF: read a byte at a time, so nothing after it is taken (once per connection).
        let mut line = start.to_vec();
        while !line.ends_with(b"\r\n") {
            if line.len() >= V1_MAX {
                return Err(invalid("PROXY v1 header longer than 107 bytes"));
            }
            line.push(tcp.read_u8().await?);
        }
        return parse_v1(&line);
    }
    if start[..] != V2_SIGNATURE[..8] {
        return Err(invalid("the connection does not start with a PROXY protocol header"));
    }
    let mut header = vec![0u8; 16];
    header[..8].copy_from_slice(&start);
    tcp.read_exact(&mut header[8..]).await?;
    let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
    if len > V2_MAX_BODY {
        return Err(invalid(format!("PROXY v2 header of {len} bytes is too long")));
    }
    header.resize(16 + len, 0);
    tcp.read_exact(&mut header[16..]).await?;
    parse_v2(&header)
}

fn parse_v1(line: &[u8]) -> std::io::Result<Forwarded> {
    use ppp::v1::{Addresses, Header};
    let text = std::str::from_utf8(line).map_err(invalid)?;
    let header = Header::try_from(text).map_err(invalid)?;
    Ok(match header.addresses {
        Addresses::Tcp4(a) => Forwarded::from_client(a.source_address.into(), a.source_port, a.destination_port),
        Addresses::Tcp6(a) => Forwarded::from_client(a.source_address.into(), a.source_port, a.destination_port),
        Addresses::Unknown => Forwarded::PEER,
    })
}

fn parse_v2(bytes: &[u8]) -> std::io::Result<Forwarded> {
    use ppp::v2::{Addresses, Command, Header};
    let header = Header::try_from(bytes).map_err(invalid)?;
    Ok(match (header.command, header.addresses) {
        (Command::Proxy, Addresses::IPv4(a)) => {
            Forwarded::from_client(a.source_address.into(), a.source_port, a.destination_port)
        }
        (Command::Proxy, Addresses::IPv6(a)) => {
            Forwarded::from_client(a.source_address.into(), a.source_port, a.destination_port)
        }
        // LOCAL (the balancer's own connection), or an address family without an IP.
        _ => Forwarded::PEER,
    })
}

/// Parses a complete PROXY header held in memory (for the fuzz corpus and tests): v1 or v2.
pub fn exercise(data: &[u8]) {
    let _ = if data.starts_with(b"PROXY ") { parse_v1(data) } else { parse_v2(data) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_versions() {
        let v1 = parse_v1(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n").unwrap();
        assert_eq!(v1.source, Some("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(v1.destination_port, Some(443));
        let v6 = parse_v1(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80\r\n").unwrap();
        assert_eq!(v6.source, Some("[2001:db8::1]:4000".parse().unwrap()));
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n").unwrap().source, None);
        assert!(parse_v1(b"PROXY TCP4 nonsense\r\n").is_err());

        let src: SocketAddr = "198.51.100.9:40000".parse().unwrap();
        let dst: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let v2 = |command| {
            ppp::v2::Builder::with_addresses(ppp::v2::Version::Two | command, ppp::v2::Protocol::Stream, (src, dst))
                .build()
                .unwrap()
        };
        let proxied = v2(ppp::v2::Command::Proxy);
        assert_eq!(parse_v2(&proxied).unwrap(), Forwarded { source: Some(src), destination_port: Some(443) });
        let local = v2(ppp::v2::Command::Local);
        assert_eq!(parse_v2(&local).unwrap().source, None, "LOCAL keeps the TCP peer");
        assert!(parse_v2(&proxied[..20]).is_err());
        exercise(b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\xff");
    }
}
