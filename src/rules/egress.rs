//! Which destination addresses modgate never dials. One check, used by the
//! routing decision on IP literals and by the dialer on every resolved
//! address of every outbound connection (origins, the parent, mirrors and
//! each redirect hop). Pure.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The destinations that are off limits, compiled once from the config and
/// the bound listeners.
#[derive(Clone, Debug, Default)]
pub struct Egress {
    /// `proxy.deny_destinations`: networks the gateway protects.
    pub deny_destinations: Vec<IpNet>,
    /// modgate's own listening addresses: dialling one is a request loop.
    pub own_listeners: Vec<SocketAddr>,
    /// This host's addresses, read at start-up: a listener on `0.0.0.0` or
    /// `[::]` is reachable through every one of them.
    pub local_addrs: Vec<IpAddr>,
}

/// Whether a destination named by the admin (a mirror's own origin, the
/// parent proxy) is dialled even inside `deny_destinations`. Never exempt
/// from the loop check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exemption {
    None,
    AdminNamed,
}

impl Egress {
    /// Why dialling `addr` is refused, if it is.
    pub fn refusal(&self, addr: SocketAddr, exemption: Exemption) -> Option<String> {
        let ip = canonical_ip(addr.ip());
        if self.is_own(SocketAddr::new(ip, addr.port())) {
            return Some(format!(
                "{} is modgate's own listener (request loop)",
                SocketAddr::new(ip, addr.port())
            ));
        }
        if exemption == Exemption::AdminNamed {
            return None;
        }
        self.deny_destinations
            .iter()
            .find(|n| n.contains(&ip))
            .map(|net| format!("{ip} is in proxy.deny_destinations {net}"))
    }

    fn is_own(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip();
        let local = ip.is_loopback() || ip.is_unspecified() || self.local_addrs.contains(&ip);
        self.own_listeners.iter().any(|own| {
            own.port() == addr.port()
                && (canonical_ip(own.ip()) == ip || (own.ip().is_unspecified() && local))
        })
    }

    /// True when a connected socket leads back to this host on one of
    /// modgate's listening ports (a loop through an address that appeared
    /// after start-up).
    pub fn is_self_connection(&self, local: SocketAddr, peer: SocketAddr) -> bool {
        let (local_ip, peer) = (canonical_ip(local.ip()), canonical_addr(peer));
        local_ip == peer.ip()
            && self.own_listeners.iter().any(|own| {
                own.port() == peer.port()
                    && (own.ip().is_unspecified() || canonical_ip(own.ip()) == peer.ip())
            })
    }
}

/// Maps IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) to IPv4 so that
/// rules written for IPv4 cannot be side-stepped.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// [`canonical_ip`] for a socket address: IPv4 peers of a dual-stack
/// `[::]` listener are seen, logged and matched as IPv4.
pub fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(addr.ip()), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress() -> Egress {
        Egress {
            deny_destinations: ["127.0.0.0/8", "::1/128", "::/128", "169.254.0.0/16"]
                .iter()
                .map(|n| n.parse().unwrap())
                .collect(),
            own_listeners: vec![
                "0.0.0.0:3128".parse().unwrap(),
                "10.0.0.1:3130".parse().unwrap(),
            ],
            local_addrs: vec!["10.0.0.1".parse().unwrap(), "192.168.7.2".parse().unwrap()],
        }
    }

    fn refused(addr: &str, exemption: Exemption) -> Option<String> {
        egress().refusal(addr.parse().unwrap(), exemption)
    }

    #[test]
    fn own_listeners_on_every_local_address_are_loops() {
        for own in [
            "127.0.0.1:3128",
            "10.0.0.1:3128",
            "192.168.7.2:3128",
            "[::ffff:10.0.0.1]:3128",
            "0.0.0.0:3128",
            "10.0.0.1:3130",
        ] {
            let why = refused(own, Exemption::AdminNamed).unwrap();
            assert!(why.contains("own listener"), "{own}: {why}");
        }
        assert_eq!(refused("10.0.0.2:3128", Exemption::None), None);
        assert_eq!(refused("192.168.7.2:3130", Exemption::None), None);
    }

    #[test]
    fn denied_networks_unless_admin_named() {
        for addr in [
            "127.0.0.1:80",
            "[::1]:80",
            "[::]:80",
            "[::ffff:127.0.0.1]:80",
            "169.254.169.254:80",
        ] {
            assert!(
                refused(addr, Exemption::None)
                    .unwrap()
                    .contains("deny_destinations"),
                "{addr}"
            );
            assert_eq!(refused(addr, Exemption::AdminNamed), None, "{addr}");
        }
        assert_eq!(refused("93.184.216.34:443", Exemption::None), None);
    }

    #[test]
    fn self_connections() {
        let e = egress();
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(e.is_self_connection(a("10.0.0.9:50000"), a("10.0.0.9:3128")));
        assert!(!e.is_self_connection(a("10.0.0.9:50000"), a("10.0.0.8:3128")));
        assert!(!e.is_self_connection(a("10.0.0.9:50000"), a("10.0.0.9:443")));
    }
}
