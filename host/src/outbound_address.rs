//! Where a guest's outbound connection may land. A host matched only by a wildcard in
//! `allowed_outbound_hosts` (`https://*:443`) must resolve to a public address: private
//! (RFC 1918, unique local), link-local (169.254.0.0/16 with cloud metadata, fe80::/10),
//! loopback and unspecified addresses are refused. The name is resolved once, by
//! [`VettingResolver`], and the connection goes to the vetted addresses only, so there is no
//! second lookup that DNS rebinding could answer differently.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{bail, Context as _, Result};
use hyper_util::client::legacy::connect::dns::Name;

/// Whether a connection to `ip` may leave for the public internet (and nowhere else).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let segments = v6.segments();
            // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public_v4(Ipv4Addr::from(v6.to_bits() as u32));
            }
            let deprecated_ipv4_compatible = segments[..6] == [0; 6];
            let unique_local = segments[0] & 0xfe00 == 0xfc00;
            let link_local = segments[0] & 0xffc0 == 0xfe80;
            let site_local = segments[0] & 0xffc0 == 0xfec0;
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || deprecated_ipv4_compatible
                || unique_local
                || link_local
                || site_local)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let this_network = a == 0;
    let shared_carrier_nat = a == 100 && (64..128).contains(&b);
    let protocol_assignments = a == 192 && b == 0 && c == 0;
    let benchmarking = a == 198 && (b == 18 || b == 19);
    let reserved = a >= 240;
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || this_network
        || shared_carrier_nat
        || protocol_assignments
        || benchmarking
        || reserved)
}

/// Static name -> address answers that take the place of DNS, like curl's `--resolve`
/// (`OUTBOUND_RESOLVE=name:address,...`): for tests and for pinning an upstream's address.
/// The vetting applies to these answers as to any other.
#[derive(Debug, Clone, Default)]
pub struct AddressOverrides(HashMap<String, Vec<IpAddr>>);

impl AddressOverrides {
    pub fn parse(setting: &str) -> Result<Self> {
        let mut map: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for entry in setting.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((name, address)) = entry.split_once(':') else {
                bail!("OUTBOUND_RESOLVE entry {entry:?} is not name:address");
            };
            let address = address.trim_start_matches('[').trim_end_matches(']');
            let ip: IpAddr = address.parse().with_context(|| {
                format!("OUTBOUND_RESOLVE entry {entry:?}: {address:?} is not an IP address")
            })?;
            if name.is_empty() {
                bail!("OUTBOUND_RESOLVE entry {entry:?} has no name");
            }
            map.entry(name.to_ascii_lowercase()).or_default().push(ip);
        }
        Ok(Self(map))
    }

    fn get(&self, name: &str) -> Option<&[IpAddr]> {
        self.0.get(&name.to_ascii_lowercase()).map(Vec::as_slice)
    }
}

/// The refusal a connection attempt ends with when a name resolves only to addresses that
/// are not public; found again in the connector's error chain by [`is_non_public_refusal`].
#[derive(Debug)]
pub struct NonPublicAddress;

impl std::fmt::Display for NonPublicAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the destination resolves only to non-public addresses")
    }
}

impl std::error::Error for NonPublicAddress {}

/// Whether a failure was our refusal of a non-public address.
pub fn is_non_public_refusal(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(err) = next {
        if err.is::<NonPublicAddress>() {
            return true;
        }
        // `io::Error::source` skips the error it wraps, so look inside by hand.
        let wrapped = err.downcast_ref::<io::Error>().and_then(|io| io.get_ref());
        if wrapped.is_some_and(|inner| inner.is::<NonPublicAddress>()) {
            return true;
        }
        next = err.source();
    }
    false
}

/// A hyper-util resolver: the system resolver (or an override), then the public-address
/// filter when `public_only`.
#[derive(Clone)]
pub struct VettingResolver {
    overrides: Arc<AddressOverrides>,
    public_only: bool,
}

impl VettingResolver {
    pub fn new(overrides: Arc<AddressOverrides>, public_only: bool) -> Self {
        Self {
            overrides,
            public_only,
        }
    }
}

type Resolving = Pin<Box<dyn Future<Output = io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower::Service<Name> for VettingResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let overrides = self.overrides.clone();
        let public_only = self.public_only;
        Box::pin(async move {
            let host = name.as_str();
            let found: Vec<IpAddr> = match overrides.get(host) {
                Some(addresses) => addresses.to_vec(),
                None => tokio::net::lookup_host((host, 0))
                    .await?
                    .map(|address| address.ip())
                    .collect(),
            };
            let vetted: Vec<SocketAddr> = found
                .into_iter()
                .filter(|ip| !public_only || is_public(*ip))
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if vetted.is_empty() && public_only {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    NonPublicAddress,
                ));
            }
            Ok(vetted.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(address: &str) -> bool {
        is_public(address.parse().unwrap())
    }

    #[test]
    fn inward_addresses_are_not_public() {
        for inward in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "127.0.0.1",
            "127.9.9.9",
            "169.254.169.254",
            "0.0.0.0",
            "100.100.100.200",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            assert!(!public(inward), "{inward} must not count as public");
        }
    }

    #[test]
    fn internet_addresses_are_public() {
        for outward in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "104.18.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(public(outward), "{outward} is public");
        }
    }

    #[test]
    fn overrides_parse_like_curl_resolve() {
        let overrides =
            AddressOverrides::parse("metadata.test:169.254.169.254, v6.test:[::1]").unwrap();
        assert_eq!(
            overrides.get("METADATA.test").unwrap(),
            &["169.254.169.254".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            overrides.get("v6.test").unwrap(),
            &["::1".parse::<IpAddr>().unwrap()]
        );
        assert!(AddressOverrides::parse("no-address").is_err());
        assert!(AddressOverrides::parse("name:not-an-ip").is_err());
        assert!(AddressOverrides::parse("").unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn a_name_resolving_inward_is_refused_unless_allowed() {
        use tower::Service;
        let overrides = Arc::new(AddressOverrides::parse("metadata.test:169.254.169.254").unwrap());
        let name: Name = "metadata.test".parse().unwrap();
        let err = VettingResolver::new(overrides.clone(), true)
            .call(name.clone())
            .await
            .unwrap_err();
        assert!(is_non_public_refusal(&err));
        let addresses: Vec<_> = VettingResolver::new(overrides, false)
            .call(name)
            .await
            .unwrap()
            .collect();
        assert_eq!(addresses, ["169.254.169.254:0".parse().unwrap()]);
    }
}
