//! Who sent a request, for per-client rate limits. `X-Forwarded-For` is written by whoever
//! sends the request, so it is believed only as far as `TRUSTED_PROXIES` says: each proxy
//! appends the address it received the request from, so the client is the right-most address
//! that a trusted proxy added and that is not itself a trusted proxy.

use std::net::{IpAddr, Ipv6Addr};

use anyhow::{bail, Context, Result};
use axum::http::HeaderMap;
use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TrustedProxies {
    /// The peer is the client; forwarding headers are ignored.
    #[default]
    None,
    /// Requests arrive through exactly this many proxies, each appending to X-Forwarded-For.
    Hops(usize),
    /// Peers and X-Forwarded-For entries in these networks are proxies.
    Networks(Vec<IpNet>),
}

impl TrustedProxies {
    /// `TRUSTED_PROXIES`: empty, a hop count (`1`), or comma-separated addresses and CIDRs.
    pub fn parse(setting: &str) -> Result<Self> {
        let setting = setting.trim();
        if setting.is_empty() {
            return Ok(Self::None);
        }
        if let Ok(hops) = setting.parse::<usize>() {
            return Ok(if hops == 0 {
                Self::None
            } else {
                Self::Hops(hops)
            });
        }
        let mut networks = Vec::new();
        for entry in setting.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let network = match entry.parse::<IpNet>() {
                Ok(network) => network,
                Err(_) => IpNet::from(entry.parse::<IpAddr>().with_context(|| {
                    format!(
                        "TRUSTED_PROXIES entry {entry:?} is not an address, a CIDR or a hop count"
                    )
                })?),
            };
            networks.push(network);
        }
        if networks.is_empty() {
            bail!("TRUSTED_PROXIES {setting:?} names no proxy");
        }
        Ok(Self::Networks(networks))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        match self {
            Self::Networks(networks) => networks.iter().any(|n| n.contains(&ip)),
            _ => false,
        }
    }

    /// The client's address: the peer, or what trusted proxies say they received from.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        match self {
            Self::None => peer,
            Self::Hops(hops) => {
                let forwarded = forwarded_for(headers);
                // The last proxy added the right-most entry; `hops` proxies added `hops` entries.
                match forwarded.len().checked_sub(*hops) {
                    Some(index) => forwarded[index].unwrap_or(peer),
                    None => forwarded.first().copied().flatten().unwrap_or(peer),
                }
            }
            Self::Networks(_) => {
                if !self.trusts(peer) {
                    return peer;
                }
                let mut client = peer;
                for entry in forwarded_for(headers).into_iter().rev() {
                    // Garbage was not written by a trusted proxy: stop at the last believed hop.
                    let Some(address) = entry else { break };
                    client = address;
                    if !self.trusts(address) {
                        break;
                    }
                }
                client
            }
        }
    }
}

/// Every X-Forwarded-For entry in order (all headers joined), `None` where one is not an IP
/// address.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| parse_entry(entry).map(|ip| ip.to_canonical()))
        .collect()
}

/// An address, also as proxies sometimes write it: with a port, or IPv6 in brackets.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Ok(socket) = entry.parse::<std::net::SocketAddr>() {
        return Some(socket.ip());
    }
    let (host, _port) = entry.rsplit_once(':')?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// The key a client is counted under: its IPv4 address, or its IPv6 /64 (one subscriber's
/// prefix, inside which addresses cost nothing to change).
pub fn budget_key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in forwarded {
            map.append("x-forwarded-for", value.parse().unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let trusted = TrustedProxies::parse("").unwrap();
        assert_eq!(
            trusted.client(ip("203.0.113.9"), &headers(&["198.51.100.1"])),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_peer_is_skipped_and_client_written_entries_are_not_believed() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").unwrap();
        // The client wrote "1.2.3.4"; the proxy appended the address it saw.
        let forwarded = headers(&["1.2.3.4, 198.51.100.7"]);
        assert_eq!(
            trusted.client(ip("10.1.1.1"), &forwarded),
            ip("198.51.100.7")
        );
        // Two trusted proxies in a row.
        let forwarded = headers(&["1.2.3.4, 198.51.100.7", "10.2.2.2"]);
        assert_eq!(
            trusted.client(ip("127.0.0.1"), &forwarded),
            ip("198.51.100.7")
        );
        // An untrusted peer's header is ignored.
        assert_eq!(
            trusted.client(ip("203.0.113.5"), &forwarded),
            ip("203.0.113.5")
        );
        // Garbage to the right of the believed hops stops the walk.
        let forwarded = headers(&["198.51.100.7, not-an-ip"]);
        assert_eq!(trusted.client(ip("10.1.1.1"), &forwarded), ip("10.1.1.1"));
    }

    #[test]
    fn a_hop_count_takes_the_entry_the_first_proxy_added() {
        let one = TrustedProxies::parse("1").unwrap();
        let forwarded = headers(&["1.2.3.4, 198.51.100.7"]);
        assert_eq!(one.client(ip("10.0.0.1"), &forwarded), ip("198.51.100.7"));
        let two = TrustedProxies::parse("2").unwrap();
        assert_eq!(two.client(ip("10.0.0.1"), &forwarded), ip("1.2.3.4"));
        assert_eq!(
            one.client(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        assert_eq!(
            one.client(ip("10.0.0.1"), &headers(&["198.51.100.7:4711"])),
            ip("198.51.100.7")
        );
        assert_eq!(
            one.client(ip("10.0.0.1"), &headers(&["[2001:db8::1]:443"])),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.example").is_err());
        assert_eq!(TrustedProxies::parse("0").unwrap(), TrustedProxies::None);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_prefix() {
        assert_eq!(
            budget_key(ip("2001:db8:1:2:aaaa::1")),
            budget_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            budget_key(ip("2001:db8:1:2::1")),
            budget_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(budget_key(ip("::ffff:198.51.100.7")), ip("198.51.100.7"));
    }
}
