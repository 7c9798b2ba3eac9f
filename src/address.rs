//! Who is on the other end: the client's address (the peer's, or the one trusted proxies name),
//! and the key that every per-address limit counts it under.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use actix_http::header::HeaderMap;
use ipnet::IpNet;

/// The header a trusted proxy names the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, most load balancers).
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

/// Which peers may name the client, and in which header. A peer that is not trusted is the
/// client, whatever it sends.
#[derive(Debug, Clone)]
pub struct ProxyPolicy {
    trusted: Vec<IpNet>,
    header: ProxyHeader,
}

impl ProxyPolicy {
    pub fn new(trusted: Vec<IpNet>, header: ProxyHeader) -> Self {
        Self { trusted, header }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client's address. Behind trusted proxies, the header is read from the right (the hop
    /// nearest this server, which the last proxy wrote) to the left, past every trusted proxy:
    /// the first address that is not one is the client. Everything left of it was written by the
    /// client itself and is ignored, so a client that sends its own header names nobody.
    /// [`Self::client`] of a request the HTTP app serves.
    pub fn of_request(&self, req: &actix_web::HttpRequest) -> IpAddr {
        self.client(req.headers(), req.peer_addr())
    }

    pub fn client(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> IpAddr {
        let Some(peer) = peer.map(|p| p.ip().to_canonical()) else {
            return IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        };
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for hop in self.hops(headers).iter().rev() {
            // An unreadable hop ends the walk at the last proxy that was understood.
            let Some(ip) = hop else { break };
            client = *ip;
            if !self.trusts(client) {
                break;
            }
        }
        client
    }

    /// The addresses the header lists, left to right, across every line of it.
    fn hops(&self, headers: &HeaderMap) -> Vec<Option<IpAddr>> {
        let lines = headers
            .get_all(match self.header {
                ProxyHeader::XForwardedFor => "x-forwarded-for",
                ProxyHeader::Forwarded => "forwarded",
            })
            .map(|v| v.to_str().ok());
        let mut hops = Vec::new();
        for line in lines {
            let Some(line) = line else {
                hops.push(None);
                continue;
            };
            for element in line.split(',') {
                let value = match self.header {
                    ProxyHeader::XForwardedFor => Some(element),
                    ProxyHeader::Forwarded => element.split(';').find_map(|pair| {
                        let (name, value) = pair.trim().split_once('=')?;
                        name.trim().eq_ignore_ascii_case("for").then_some(value)
                    }),
                };
                hops.push(value.and_then(|v| parse_address(v.trim().trim_matches('"'))));
            }
        }
        hops
    }
}

/// An address as proxies write it: bare, with a port, or bracketed IPv6 with or without one.
fn parse_address(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            text.strip_prefix('[')?
                .split(']')
                .next()?
                .parse::<IpAddr>()
                .ok()
        })
        .map(|ip| ip.to_canonical())
}

/// What per-address limits count under: an IPv4 address, or the /64 an IPv6 address is in. An
/// IPv6 subscriber is usually given a whole /64 (or more), so keyed by full address, one client
/// would have 2^64 fresh allowances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressKey(IpAddr);

impl AddressKey {
    pub fn of(ip: IpAddr) -> Self {
        Self(match ip.to_canonical() {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        })
    }
}

#[cfg(test)]
mod tests {
    use actix_http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    fn client(policy: &ProxyPolicy, peer: &str, pairs: &[(&'static str, &'static str)]) -> String {
        let peer = SocketAddr::new(peer.parse().unwrap(), 4000);
        policy.client(&headers(pairs), Some(peer)).to_string()
    }

    fn behind(nets: &[&str], header: ProxyHeader) -> ProxyPolicy {
        ProxyPolicy::new(nets.iter().map(|n| n.parse().unwrap()).collect(), header)
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let policy = behind(&["10.0.0.0/8"], ProxyHeader::XForwardedFor);
        let xff = [("x-forwarded-for", "1.1.1.1")];
        assert_eq!(client(&policy, "203.0.113.9", &xff), "203.0.113.9");
        let nobody = behind(&[], ProxyHeader::XForwardedFor);
        assert_eq!(client(&nobody, "10.0.0.1", &xff), "10.0.0.1");
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let policy = behind(
            &["10.0.0.0/8", "192.168.1.1/32"],
            ProxyHeader::XForwardedFor,
        );
        // The client wrote "6.6.6.6" itself; the first proxy appended the address it saw.
        let forged = [("x-forwarded-for", "6.6.6.6, 198.51.100.7, 192.168.1.1")];
        assert_eq!(client(&policy, "10.0.0.2", &forged), "198.51.100.7");
        // Two header lines are one list.
        let split = [
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7:5000"),
        ];
        assert_eq!(client(&policy, "10.0.0.2", &split), "198.51.100.7");
        // Only the configured header counts.
        let other = [
            ("forwarded", "for=7.7.7.7"),
            ("x-forwarded-for", "198.51.100.7"),
        ];
        assert_eq!(client(&policy, "10.0.0.2", &other), "198.51.100.7");
        // No header: the proxy itself.
        assert_eq!(client(&policy, "10.0.0.2", &[]), "10.0.0.2");
        // Garbage stops the walk at the last proxy understood.
        let garbage = [("x-forwarded-for", "198.51.100.7, nonsense, 10.1.1.1")];
        assert_eq!(client(&policy, "10.0.0.2", &garbage), "10.1.1.1");
        // Every hop trusted: the leftmost.
        let inside = [("x-forwarded-for", "10.3.3.3, 10.2.2.2")];
        assert_eq!(client(&policy, "10.0.0.2", &inside), "10.3.3.3");
    }

    #[test]
    fn forwarded_is_read_the_same_way() {
        let policy = behind(&["10.0.0.0/8"], ProxyHeader::Forwarded);
        let pairs = [(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https, for=10.9.9.9",
        )];
        assert_eq!(client(&policy, "10.0.0.2", &pairs), "2001:db8::1");
        let xff = [("x-forwarded-for", "198.51.100.7")];
        assert_eq!(client(&policy, "10.0.0.2", &xff), "10.0.0.2");
    }

    #[test]
    fn ipv4_mapped_peers_are_ipv4() {
        let policy = behind(&["127.0.0.1/32"], ProxyHeader::XForwardedFor);
        let xff = [("x-forwarded-for", "::ffff:198.51.100.7")];
        assert_eq!(client(&policy, "::ffff:127.0.0.1", &xff), "198.51.100.7");
    }

    #[test]
    fn ipv6_addresses_share_a_key_per_64() {
        let key = |s: &str| AddressKey::of(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
    }
}
