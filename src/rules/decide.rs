//! The routing decision: one pure function from (client, target, kind) to
//! what modgate does, together with the rule that made the decision, so that
//! `modgate explain` and the logs can say why.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::no_proxy::NoProxy;
use super::target::{Host, Target};

/// Everything the decision depends on, compiled once from the config.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Clients that may use the proxy at all.
    pub allow_clients: Vec<IpNet>,
    /// Destination ports CONNECT may reach.
    pub connect_ports: Vec<u16>,
    /// Destination addresses never dialled (checked on literals here and on
    /// every resolved address by the dialer).
    pub deny_destinations: Vec<IpNet>,
    /// modgate's own listening addresses: dialling them would loop.
    pub own_listeners: Vec<SocketAddr>,
    /// Destinations that go direct even when a parent proxy is configured.
    pub no_proxy: NoProxy,
    /// The parent proxy, as shown to people (never with its password).
    pub parent: Option<String>,
    /// Interception of the Go module hosts, when enabled.
    pub intercept: Option<InterceptRule>,
}

/// Which CONNECT targets are intercepted.
#[derive(Clone, Debug, Default)]
pub struct InterceptRule {
    /// Intercepted host names (gomod proxy and sumdb hosts).
    pub hosts: Vec<String>,
    /// `intercept.bypass`: tunnelled untouched.
    pub bypass: NoProxy,
    /// `intercept.bypass_clients`: never intercepted.
    pub bypass_clients: Vec<IpNet>,
}

/// How the request arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A CONNECT tunnel.
    Connect,
    /// A forwarded absolute-form HTTP request.
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
pub enum Action {
    Deny(DenyReason),
    /// Terminate TLS with modgate's CA and serve from mirrors.
    Intercept,
    /// Dial the destination ourselves.
    Direct,
    /// Go through `upstream.proxy`.
    Parent,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// The rule that decided, in words (`allow_clients`, `no_proxy entry ".corp"` …).
    pub rule: String,
}

impl Decision {
    fn new(action: Action, rule: impl Into<String>) -> Self {
        Decision {
            action,
            rule: rule.into(),
        }
    }
}

/// Decides what to do with a request from `client` to `target`.
pub fn decide(policy: &Policy, client: IpAddr, target: &Target, kind: Kind) -> Decision {
    if !policy.allow_clients.iter().any(|net| net.contains(&client)) {
        return Decision::new(
            Action::Deny(DenyReason::Client),
            format!("client {client} is not in proxy.allow_clients"),
        );
    }
    if kind == Kind::Connect && !policy.connect_ports.contains(&target.port) {
        return Decision::new(
            Action::Deny(DenyReason::Port),
            format!("port {} is not in proxy.connect_ports", target.port),
        );
    }
    if let Host::Ip(ip) = target.host
        && let Some(rule) = denied_address(policy, SocketAddr::new(ip, target.port))
    {
        return Decision::new(Action::Deny(DenyReason::Destination), rule);
    }
    if let Some(decision) = intercept(policy, client, target, kind) {
        return decision;
    }
    let Some(parent) = &policy.parent else {
        return Decision::new(Action::Direct, "no upstream.proxy configured");
    };
    let host = target.host.to_string();
    match policy.no_proxy.find(&host, target.port) {
        Some(entry) => Decision::new(Action::Direct, format!("upstream.no_proxy entry {entry:?}")),
        None => Decision::new(Action::Parent, format!("upstream.proxy {parent}")),
    }
}

/// Intercept when a CONNECT target or a redirected TLS server name is a Go
/// module host (on any port allowed; the go command uses 443), unless
/// a bypass rule says otherwise (then the bypass is the deciding rule).
fn intercept(policy: &Policy, client: IpAddr, target: &Target, kind: Kind) -> Option<Decision> {
    let rule = policy.intercept.as_ref()?;
    let Host::Name(name) = &target.host else {
        return None;
    };
    if kind == Kind::Http || !rule.hosts.contains(name) {
        return None;
    }
    let tunnel = if policy.parent.is_some() && policy.no_proxy.find(name, target.port).is_none() {
        Action::Parent
    } else {
        Action::Direct
    };
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
        Action::Intercept,
        format!("{name} is a gomod host (intercept.enabled)"),
    ))
}

/// Says why dialling `addr` is forbidden, if it is: a `deny_destinations`
/// network, or one of modgate's own listeners (a request loop).
pub fn denied_address(policy: &Policy, addr: SocketAddr) -> Option<String> {
    let ip = canonical_ip(addr.ip());
    if let Some(net) = policy.deny_destinations.iter().find(|n| n.contains(&ip)) {
        return Some(format!("{ip} is in proxy.deny_destinations {net}"));
    }
    let is_own = policy.own_listeners.iter().any(|own| {
        own.port() == addr.port()
            && (canonical_ip(own.ip()) == ip
                || (own.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified())))
    });
    is_own.then(|| format!("{addr} is modgate's own listener (request loop)"))
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

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Deny(_) => f.write_str("deny"),
            Action::Intercept => f.write_str("intercept"),
            Action::Direct => f.write_str("direct"),
            Action::Parent => f.write_str("parent"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            allow_clients: vec!["10.0.0.0/8".parse().unwrap()],
            connect_ports: vec![443],
            deny_destinations: vec!["169.254.0.0/16".parse().unwrap()],
            own_listeners: vec!["0.0.0.0:3128".parse().unwrap()],
            no_proxy: NoProxy::parse(".corp.example").unwrap(),
            parent: Some("http://parent:8080".into()),
            intercept: Some(InterceptRule {
                hosts: vec!["proxy.golang.org".into()],
                bypass: NoProxy::default(),
                bypass_clients: vec!["10.9.0.0/16".parse().unwrap()],
            }),
        }
    }

    fn target(s: &str) -> Target {
        Target::parse(s, None).unwrap()
    }

    fn action(client: &str, t: &str, kind: Kind) -> Action {
        decide(&policy(), client.parse().unwrap(), &target(t), kind).action
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
        assert_eq!(
            action(c, "127.0.0.1:3128", Kind::Http),
            Deny(DenyReason::Destination)
        );
        assert_eq!(action(c, "git.corp.example:443", Kind::Connect), Direct);
        assert_eq!(action(c, "a.example:443", Kind::Connect), Parent);
        assert_eq!(action(c, "proxy.golang.org:443", Kind::Connect), Intercept);
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
        assert_eq!(action(c, "proxy.golang.org:443", redirected), Intercept);
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
        p.parent = None;
        let d = decide(
            &p,
            "10.0.0.1".parse().unwrap(),
            &target("a.example:443"),
            Kind::Connect,
        );
        assert_eq!(d.action, Action::Direct);
    }

    #[test]
    fn explains_the_rule() {
        let d = decide(
            &policy(),
            "10.0.0.1".parse().unwrap(),
            &target("x.corp.example:443"),
            Kind::Connect,
        );
        assert_eq!(d.rule, "upstream.no_proxy entry \".corp.example\"");
    }
}
