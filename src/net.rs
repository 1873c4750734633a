//! Sender addresses: CIDR masks, `X-Forwarded-For` behind trusted proxies,
//! and the text of an address. A leaf: it imports nothing of ours, so the
//! channel document, the configuration and authentication all build on it.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Parses a CIDR, or a bare address as a single-host network.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is not a CIDR (like 10.0.0.0/8 or 2001:db8::/32)"))
}

/// `true` when `ip` is inside one of `nets`; IPv4-mapped IPv6 addresses match IPv4 networks.
pub fn in_nets(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|n| n.contains(&ip))
}

/// The sender address: the peer, or behind trusted proxies the right-most
/// `X-Forwarded-For` hop that is not a trusted proxy.
///
/// Fails closed: a hop that is not an address (garbage from a proxy, or an
/// attempt to make one) gives the unspecified address `::`, which is inside
/// no `ipmask` but `::/0`, never the proxy's own (often trusted) address.
pub fn sender_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !in_nets(trusted, peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or("\u{0}"))
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut sender = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            return IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
        };
        sender = ip.to_canonical();
        if !in_nets(trusted, sender) {
            break;
        }
    }
    sender
}

/// One `X-Forwarded-For` hop: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    let inner = hop.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
}

/// The text of an address, as `IpAddr`'s `Display` writes it; IPv4 without the
/// formatting machinery (this runs for every request).
pub fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn masks_match_v4_v6_and_mapped_addresses() {
        let nets: Vec<IpNet> = ["127.0.0.0/8", "10.20.0.0/16", "2001:db8::/32"]
            .iter()
            .map(|s| parse_net(s).unwrap())
            .collect();
        assert!(in_nets(&nets, ip("127.0.0.1")));
        assert!(in_nets(&nets, ip("10.20.255.1")));
        assert!(!in_nets(&nets, ip("10.21.0.1")));
        assert!(in_nets(&nets, ip("::ffff:10.20.1.2")));
        assert!(in_nets(&nets, ip("2001:db8::1")));
        assert!(!in_nets(&nets, ip("2001:db9::1")));
        assert!(!in_nets(&nets, ip("::1")));
        assert_eq!(parse_net("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(parse_net("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("example.com").is_err());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = vec![
            parse_net("127.0.0.1").unwrap(),
            parse_net("10.9.0.0/16").unwrap(),
        ];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 2.2.2.2, 10.9.0.5"),
        );
        assert_eq!(sender_addr(ip("127.0.0.1"), &h, &trusted), ip("2.2.2.2"));
        assert_eq!(sender_addr(ip("8.8.8.8"), &h, &trusted), ip("8.8.8.8"));
        assert_eq!(sender_addr(ip("127.0.0.1"), &h, &[]), ip("127.0.0.1"));
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("::ffff:10.1.2.3"),
        );
        assert_eq!(sender_addr(ip("127.0.0.1"), &h, &trusted), ip("10.1.2.3"));
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, garbage"),
        );
        assert_eq!(sender_addr(ip("127.0.0.1"), &h, &trusted), ip("::"));
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("[2001:db8::7]:443, 10.9.0.5:80"),
        );
        assert_eq!(
            sender_addr(ip("127.0.0.1"), &h, &trusted),
            ip("2001:db8::7")
        );
        h.insert("x-forwarded-for", HeaderValue::from_static("[2001:db8::8]"));
        assert_eq!(
            sender_addr(ip("127.0.0.1"), &h, &trusted),
            ip("2001:db8::8")
        );
    }

    #[test]
    fn ip_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "1.2.3.4",
            "::1",
            "::ffff:10.1.2.3",
            "2001:db8::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }
}
