//! Which addresses webhooks may be posted to. A receiver URL comes from the fleet's
//! configuration, but its name resolves at delivery time, and a job's URL sits in Redis: left
//! unchecked, a URL naming `169.254.169.254`, `localhost`, the node's own admin port or a
//! private range would make the node post signed requests inside the cluster (a blind SSRF
//! whose answers show up in dead letters). So unless private networks are allowed
//! (`--webhook-allow-private-networks`, for receivers inside the cluster), only public
//! addresses are dialled: names are resolved through [`PublicOnly`], which drops the others,
//! and IP literals are checked by [`check_literal`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A receiver's address is not public and private networks are not allowed.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{host} is not a public address ({addresses}); receivers on private, loopback or \
     link-local networks need --webhook-allow-private-networks (allowPrivateNetworks)"
)]
pub struct RefusedTarget {
    pub host: String,
    pub addresses: String,
}

/// Whether `ip` is an address on the public internet: not loopback, private, link-local
/// (cloud metadata included), shared (CGNAT), unspecified, multicast, documentation or
/// reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (RFC 6598)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64, which reaches IPv4 inside
}

/// Refuses a URL whose host is an IP literal that is not public (names are checked when they
/// resolve, by [`PublicOnly`]).
pub fn check_literal(url: &reqwest::Url) -> Result<(), RefusedTarget> {
    let host = url.host_str().unwrap_or_default();
    let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return Ok(());
    };
    if is_public(ip) {
        Ok(())
    } else {
        Err(RefusedTarget {
            host: ip.to_string(),
            addresses: ip.to_string(),
        })
    }
}

/// Resolves names as the system does and keeps only public addresses: a name resolving to
/// none is refused, so a receiver can never be pointed inside the cluster through DNS (the
/// addresses checked are the ones dialled, so a rebinding DNS answer gains nothing).
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| is_public(a.ip()))
                .collect();
            if public.is_empty() {
                let addresses = found
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Box::new(RefusedTarget { host, addresses }) as _);
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// The refusal inside a failed request, if that is why it failed.
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a RefusedTarget> {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(refused) = error.downcast_ref::<RefusedTarget>() {
            return Some(refused);
        }
        source = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "8.8.8.8",
            "203.0.114.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn ip_literals_are_checked_and_names_left_to_resolution() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        assert!(check_literal(&url("http://169.254.169.254/latest/meta-data")).is_err());
        assert!(check_literal(&url("http://[::1]:9090/hook")).is_err());
        assert!(check_literal(&url("https://8.8.8.8/hook")).is_ok());
        assert!(check_literal(&url("https://support.example.com/hook")).is_ok());
    }

    #[tokio::test]
    async fn a_name_resolving_only_inside_is_refused() {
        let resolved = PublicOnly.resolve("localhost".parse().unwrap()).await;
        let Err(error) = resolved else {
            panic!("localhost resolved to a public address");
        };
        let refused = refusal_in(error.as_ref()).expect("a RefusedTarget");
        assert_eq!(refused.host, "localhost");
    }
}
