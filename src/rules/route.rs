//! The routing decision: one pure function from (client, target, kind) to
//! what modgate does, together with the rule that made the decision, so that
//! `modgate explain` and the logs say the same thing `run` does.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;

use super::egress::{Egress, Exemption};
use super::no_proxy::NoProxy;
use super::ports::PortRange;
use super::target::{Host, Target};

/// Everything the decision depends on, compiled once from the config.
/// `I` is what an intercepted connection is handed to: the MITM when
/// serving, `()` for `modgate explain`. An intercept decision carries it,
/// so interception is never decided without the means to do it.
#[derive(Clone, Debug)]
pub struct Policy<I = ()> {
    /// Clients that may use the proxy at all.
    pub allow_clients: Vec<IpNet>,
    /// Destination ports CONNECT may reach.
    pub connect_ports: Vec<u16>,
    /// Destination ports plain http:// may reach.
    pub http_ports: Vec<PortRange>,
    /// Addresses never dialled (checked on literals here, on every resolved
    /// address by the dialer).
    pub egress: Egress,
    /// Parent proxy or direct.
    pub via: Via,
    /// Interception of the Go module hosts, when enabled.
    pub intercept: Option<Intercept<I>>,
}

/// Whether traffic leaves through the parent proxy: the one place this is
/// decided, for clients' traffic and for modgate's own mirror traffic.
#[derive(Clone, Debug, Default)]
pub struct Via {
    /// The parent proxy, as shown to people (never with its password).
    pub parent: Option<String>,
    /// Destinations that go direct even when a parent proxy is configured.
    pub no_proxy: NoProxy,
    /// `upstream.pac`: its answer for a host, when it gave one, decides
    /// before `parent` does.
    pub pac: Option<std::sync::Arc<crate::upstream::pac::Pac>>,
}

/// The way out for one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    Direct,
    Parent,
}

impl Via {
    /// Parent or direct for `target`, and the rule that says so:
    /// `no_proxy` first, then the PAC file's answer, then `upstream.proxy`.
    pub fn way(&self, target: &Target) -> (Way, String) {
        if self.parent.is_none() && self.pac.is_none() {
            return (Way::Direct, "no upstream.proxy configured".into());
        }
        let host = target.host.to_string();
        if let Some(entry) = self.no_proxy.find(&host, target.port) {
            return (Way::Direct, format!("upstream.no_proxy entry {entry:?}"));
        }
        let answer = self.pac.as_ref().and_then(|pac| pac.answer(&host));
        if let Some(ways) = answer {
            let said: Vec<String> = ways.iter().map(ToString::to_string).collect();
            let rule = format!("upstream.pac returned {}", said.join("; "));
            return match ways.first() {
                Some(crate::upstream::pac::result::PacWay::Direct) => (Way::Direct, rule),
                _ => (Way::Parent, rule),
            };
        }
        match &self.parent {
            Some(parent) => (Way::Parent, format!("upstream.proxy {parent}")),
            None => (Way::Direct, "no upstream.proxy configured".into()),
        }
    }
}

impl<I> From<Way> for Action<I> {
    fn from(way: Way) -> Self {
        match way {
            Way::Direct => Action::Direct,
            Way::Parent => Action::Parent,
        }
    }
}

/// Which targets are intercepted, and what serves them.
#[derive(Clone, Debug)]
pub struct Intercept<I> {
    /// Intercepted host names (gomod proxy and sumdb hosts).
    pub hosts: Vec<String>,
    /// `intercept.bypass`: tunnelled untouched.
    pub bypass: NoProxy,
    /// `intercept.bypass_clients`: never intercepted.
    pub bypass_clients: Vec<IpNet>,
    /// What an intercepted connection is handed to.
    pub with: I,
}

/// How the request arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A CONNECT tunnel.
    Connect,
    /// A forwarded http:// request (absolute-form, or redirected by Host).
    Http,
    /// A TLS connection sent by a REDIRECT rule to `transparent.https`,
    /// routed by its server name. The rule chose the port: `connect_ports`
    /// does not apply.
    TransparentTls,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    Client,
    Port,
    Destination,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<I = ()> {
    Deny(DenyReason),
    /// Terminate TLS with modgate's CA and serve from mirrors.
    Intercept(I),
    /// Dial the destination ourselves.
    Direct,
    /// Go through `upstream.proxy`.
    Parent,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<I = ()> {
    pub action: Action<I>,
    /// The rule that decided, in words (`allow_clients`, `no_proxy entry ".corp"` …).
    pub rule: String,
}

impl<I> Decision<I> {
    fn new(action: Action<I>, rule: impl Into<String>) -> Self {
        Decision {
            action,
            rule: rule.into(),
        }
    }
}

/// Decides what to do with a request from `client` to `target`.
pub fn route<I: Clone>(
    policy: &Policy<I>,
    client: IpAddr,
    target: &Target,
    kind: Kind,
) -> Decision<I> {
    if !policy.allow_clients.iter().any(|net| net.contains(&client)) {
        return Decision::new(
            Action::Deny(DenyReason::Client),
            format!("client {client} is not in proxy.allow_clients"),
        );
    }
    if let Some(rule) = port_refusal(policy, target.port, kind) {
        return Decision::new(Action::Deny(DenyReason::Port), rule);
    }
    if let Some(ip) = literal_address(&target.host)
        && let Some(rule) = policy
            .egress
            .refusal(SocketAddr::new(ip, target.port), Exemption::None)
    {
        return Decision::new(Action::Deny(DenyReason::Destination), rule);
    }
    if let Some(decision) = intercept(policy, client, target, kind) {
        return decision;
    }
    let (way, rule) = policy.via.way(target);
    Decision::new(way.into(), rule)
}

fn port_refusal<I>(policy: &Policy<I>, port: u16, kind: Kind) -> Option<String> {
    match kind {
        Kind::Connect if !policy.connect_ports.contains(&port) => {
            Some(format!("port {port} is not in proxy.connect_ports"))
        }
        Kind::Http if !policy.http_ports.iter().any(|r| r.contains(port)) => {
            Some(format!("port {port} is not in proxy.http_ports"))
        }
        _ => None,
    }
}

/// The address a host stands for without asking DNS: an IP literal, or a
/// `localhost` name (RFC 6761: always loopback).
fn literal_address(host: &Host) -> Option<IpAddr> {
    match host {
        Host::Ip(ip) => Some(*ip),
        Host::Name(name) if name == "localhost" || name.ends_with(".localhost") => {
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        }
        Host::Name(_) => None,
    }
}

/// Intercept when a CONNECT target or a redirected TLS server name is a Go
/// module host (on any port allowed; the go command uses 443), unless
/// a bypass rule says otherwise (then the bypass is the deciding rule).
fn intercept<I: Clone>(
    policy: &Policy<I>,
    client: IpAddr,
    target: &Target,
    kind: Kind,
) -> Option<Decision<I>> {
    let rule = policy.intercept.as_ref()?;
    let Host::Name(name) = &target.host else {
        return None;
    };
    if kind == Kind::Http || !rule.hosts.contains(name) {
        return None;
    }
    let tunnel: Action<I> = policy.via.way(target).0.into();
    if let Some(net) = rule.bypass_clients.iter().find(|n| n.contains(&client)) {
        return Some(Decision::new(
            tunnel,
            format!("client {client} is in intercept.bypass_clients {net}"),
        ));
    }
    if let Some(entry) = rule.bypass.find(name, target.port) {
        return Some(Decision::new(
            tunnel,
            format!("intercept.bypass entry {entry:?}"),
        ));
    }
    Some(Decision::new(
        Action::Intercept(rule.with.clone()),
        format!("{name} is a gomod host (intercept.enabled)"),
    ))
}

impl<I> Action<I> {
    /// The action's word in logs and `explain`.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Deny(_) => "deny",
            Action::Intercept(_) => "intercept",
            Action::Direct => "direct",
            Action::Parent => "parent",
        }
    }
}

impl<I> fmt::Display for Action<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            allow_clients: vec!["10.0.0.0/8".parse().unwrap()],
            connect_ports: vec![443],
            http_ports: PortRange::parse_list(&["80", "443", "1024-65535"]).unwrap(),
            egress: Egress {
                deny_destinations: vec![
                    "169.254.0.0/16".parse().unwrap(),
                    "127.0.0.0/8".parse().unwrap(),
                ],
                own_listeners: vec!["0.0.0.0:3128".parse().unwrap()],
                local_addrs: vec![],
            },
            via: Via {
                no_proxy: NoProxy::parse(".corp.example").unwrap(),
                parent: Some("http://parent:8080".into()),
                pac: None,
            },
            intercept: Some(Intercept {
                hosts: vec!["proxy.golang.org".into()],
                bypass: NoProxy::default(),
                bypass_clients: vec!["10.9.0.0/16".parse().unwrap()],
                with: (),
            }),
        }
    }

    fn target(s: &str) -> Target {
        Target::parse(s, None).unwrap()
    }

    fn action(client: &str, t: &str, kind: Kind) -> Action {
        route(&policy(), client.parse().unwrap(), &target(t), kind).action
    }

    #[test]
    fn decisions() {
        use Action::*;
        let c = "10.1.1.1";
        assert_eq!(
            action("192.168.1.1", "a.example:443", Kind::Connect),
            Deny(DenyReason::Client)
        );
        assert_eq!(
            action(c, "a.example:22", Kind::Connect),
            Deny(DenyReason::Port)
        );
        assert_eq!(action(c, "a.example:8080", Kind::Http), Parent);
        assert_eq!(
            action(c, "169.254.169.254:80", Kind::Http),
            Deny(DenyReason::Destination)
        );
        assert_eq!(
            action(c, "[::ffff:169.254.169.254]:80", Kind::Http),
            Deny(DenyReason::Destination)
        );
        for loopback in [
            "127.0.0.1:8080",
            "127.1:8080",
            "0x7f.1:8080",
            "2130706433:8080",
            "localhost.:8080",
            "a.localhost:8080",
        ] {
            assert_eq!(
                action(c, loopback, Kind::Http),
                Deny(DenyReason::Destination),
                "{loopback}"
            );
        }
        assert_eq!(
            action(c, "a.example:25", Kind::Http),
            Deny(DenyReason::Port)
        );
        assert_eq!(action(c, "a.example:80", Kind::Http), Parent);
        assert_eq!(action(c, "git.corp.example:443", Kind::Connect), Direct);
        assert_eq!(action(c, "a.example:443", Kind::Connect), Parent);
        assert_eq!(
            action(c, "proxy.golang.org:443", Kind::Connect),
            Intercept(())
        );
        assert_eq!(action(c, "proxy.golang.org:80", Kind::Http), Parent);
        assert_eq!(
            action("10.9.1.1", "proxy.golang.org:443", Kind::Connect),
            Parent
        );
        assert_eq!(
            action("192.168.1.1", "proxy.golang.org:443", Kind::Connect),
            Deny(DenyReason::Client)
        );
        let redirected = Kind::TransparentTls;
        assert_eq!(action(c, "proxy.golang.org:443", redirected), Intercept(()));
        assert_eq!(action(c, "a.example:8443", redirected), Parent);
        assert_eq!(action(c, "10.2.3.4:22", redirected), Parent);
        assert_eq!(
            action(c, "169.254.1.1:443", redirected),
            Deny(DenyReason::Destination)
        );
    }

    #[test]
    fn without_parent_everything_allowed_goes_direct() {
        let mut p = policy();
        p.via.parent = None;
        let d = route(
            &p,
            "10.0.0.1".parse().unwrap(),
            &target("a.example:443"),
            Kind::Connect,
        );
        assert_eq!(d.action, Action::Direct);
    }

    #[test]
    fn explains_the_rule() {
        let d = route(
            &policy(),
            "10.0.0.1".parse().unwrap(),
            &target("x.corp.example:443"),
            Kind::Connect,
        );
        assert_eq!(d.rule, "upstream.no_proxy entry \".corp.example\"");
    }
}

#[cfg(test)]
mod pac_tests {
    use super::*;

    /// The PAC file's answer decides after no_proxy and before
    /// upstream.proxy; a host it has not answered for takes upstream.proxy.
    #[tokio::test]
    async fn no_proxy_then_the_pac_then_the_parent() {
        let pac = crate::upstream::pac::Pac::new("/office.pac".into());
        pac.load(
            "function FindProxyForURL(u, h) { return h == 'direct.test' ? 'DIRECT' : 'PROXY a.corp:1; DIRECT'; }".into(),
        );
        let via = Via {
            parent: Some("http://b.corp:1".into()),
            no_proxy: NoProxy::parse(".corp.example").unwrap(),
            pac: Some(pac.clone()),
        };
        let target = |host: &str| Target::parse(host, Some(80)).unwrap();
        for host in ["direct.test", "other.test"] {
            pac.prepare(&format!("http://{host}/"), host).await;
        }
        let (way, rule) = via.way(&target("direct.test"));
        assert_eq!(
            (way, rule.as_str()),
            (Way::Direct, "upstream.pac returned DIRECT")
        );
        let (way, rule) = via.way(&target("other.test"));
        assert_eq!(way, Way::Parent);
        assert_eq!(rule, "upstream.pac returned PROXY a.corp:1; DIRECT");
        let (way, rule) = via.way(&target("git.corp.example"));
        assert_eq!(way, Way::Direct, "{rule}");
        let (way, rule) = via.way(&target("unasked.test"));
        assert_eq!(
            (way, rule.as_str()),
            (Way::Parent, "upstream.proxy http://b.corp:1")
        );
    }
}
