//! The stream pipeline shared by CONNECT and redirected TLS: an
//! [`Inbound`] (client, target, how it arrived, the original destination)
//! is routed once and opened (only a connected upstream, or a MITM ready to
//! serve, comes back), then driven (byte tunnel or interception) until it
//! ends, and logged in one line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::net::TcpStream;

use super::{Mitm, ProxyError, Shared, intercept, tunnel};
use crate::access::{self, User};
use crate::rules::{Action, Decision, Exemption, Host, Kind, Target, route};
use crate::stats::Held;
use crate::upstream::Side;

/// A client stream whose destination is known.
pub struct Inbound {
    pub client: SocketAddr,
    pub target: Target,
    pub kind: Kind,
    /// For redirected connections: where the client was going. A direct
    /// route dials this address, never a fresh resolution of the name.
    pub original: Option<SocketAddr>,
    pub started: Instant,
    /// The authenticated proxy user (CONNECT with `proxy.auth_file`).
    pub user: Option<User>,
}

/// Where an opened inbound stream goes.
pub enum Outbound {
    /// Served by modgate's MITM for this host.
    Intercept { mitm: Arc<Mitm>, host: String },
    /// A connected upstream (origin, or a tunnel through the parent), with
    /// any bytes it already sent.
    Tunnel {
        upstream: crate::upstream::Stream,
        early: Bytes,
    },
}

/// The routing decision for `inbound`: the same call `modgate explain`
/// makes (the PAC file asked first, when there is one).
pub async fn decide(shared: &Shared, inbound: &Inbound) -> Decision<Arc<Mitm>> {
    if let Some(pac) = &shared.policy.via.pac {
        let host = inbound.target.host.to_string();
        pac.prepare(&format!("https://{host}/"), &host).await;
    }
    route(
        &shared.policy,
        inbound.client.ip(),
        &inbound.target,
        inbound.kind,
    )
}

/// Dials what `decision` needs for `inbound`.
pub async fn open(
    shared: &Shared,
    inbound: &Inbound,
    decision: &Decision<Arc<Mitm>>,
) -> Result<Outbound, ProxyError> {
    let outbound = match &decision.action {
        Action::Deny(_) => {
            shared.stats.denied.inc();
            return Err(ProxyError::Forbidden(decision.rule.clone()));
        }
        Action::Intercept(mitm) => {
            let Host::Name(host) = &inbound.target.host else {
                return Err(ProxyError::Internal(
                    "interception without a host name".into(),
                ));
            };
            Outbound::Intercept {
                mitm: mitm.clone(),
                host: host.clone(),
            }
        }
        Action::Direct => {
            let dialled = match inbound.original {
                Some(addr) => by_address(addr),
                None => inbound.target.clone(),
            };
            let upstream = shared
                .dialer
                .direct(Side::Origin, &dialled, Exemption::None)
                .await?;
            Outbound::Tunnel {
                upstream: crate::upstream::Stream::Tcp(upstream),
                early: Bytes::new(),
            }
        }
        Action::Parent => {
            shared.stats.via_parent.inc();
            let (upstream, early) = shared
                .dialer
                .parent_tunnel(Side::Origin, &inbound.target, Exemption::None)
                .await?;
            Outbound::Tunnel { upstream, early }
        }
    };
    Ok(outbound)
}

/// Runs the driver for `outbound` on the client's `stream` (after `early`
/// bytes already read from it) until the connection ends, then logs it.
pub async fn drive(
    shared: &Shared,
    inbound: &Inbound,
    outbound: Outbound,
    decision: &Decision<Arc<Mitm>>,
    stream: TcpStream,
    early: Bytes,
) {
    shared.stats.tunnels.inc();
    let _open = Held::new(&shared.stats.tunnels_open);
    let (up, down, end) = match outbound {
        Outbound::Intercept { mitm, host } => {
            // Boxed: the MITM's connection state is large, and an idle
            // byte tunnel must not reserve room for it.
            let serving = intercept::serve(shared, &mitm, inbound, &host, stream, early);
            Box::pin(serving).await
        }
        Outbound::Tunnel {
            upstream,
            early: upstream_early,
        } => {
            let (idle, stop) = (shared.timeouts.idle, &shared.force_stop);
            let outcome = match upstream {
                crate::upstream::Stream::Tcp(upstream) => {
                    tunnel::relay(&stream, &early, &upstream, &upstream_early, idle, stop).await
                }
                tls => tunnel::relay_stream(stream, &early, tls, &upstream_early, idle, stop).await,
            };
            (outcome.up, outcome.down, outcome.end)
        }
    };
    let line = Line {
        decision: decision.action.name(),
        rule: &decision.rule,
        status: 200,
        bytes: (up, down),
        side: "-",
        end,
    };
    line.log(shared, inbound);
}

/// Logs an inbound stream that was refused or could not be opened.
pub fn log_refused(
    shared: &Shared,
    inbound: &Inbound,
    decision: &Decision<Arc<Mitm>>,
    err: &ProxyError,
) {
    let reason = err.to_string();
    let line = Line {
        decision: decision.action.name(),
        rule: &decision.rule,
        status: err.status().as_u16(),
        bytes: (0, 0),
        side: err.side(),
        end: &reason,
    };
    line.log(shared, inbound);
}

/// What a tunnel's access line says beyond the inbound stream.
pub struct Line<'a> {
    pub decision: &'static str,
    pub rule: &'a str,
    pub status: u16,
    /// Client to upstream, upstream to client.
    pub bytes: (u64, u64),
    pub side: &'static str,
    pub end: &'a str,
}

impl Line<'_> {
    pub fn log(&self, shared: &Shared, inbound: &Inbound) {
        let target = inbound.target.to_string();
        let record = access::Record {
            kind: access::Kind::Tunnel,
            client: inbound.client,
            user: inbound.user.as_ref().map(|u| &*u.0),
            method: entry_name(inbound.kind),
            target: &target,
            original: inbound.original,
            decision: self.decision,
            rule: self.rule,
            mirror: None,
            cache: None,
            status: self.status,
            bytes_up: self.bytes.0,
            bytes_down: self.bytes.1,
            duration: inbound.started.elapsed(),
            side: self.side,
            end: self.end,
        };
        access::log(&shared.stats, &record);
    }
}

/// The access log's method for a tunnel: how it arrived.
fn entry_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Connect => "CONNECT",
        Kind::TransparentTls => "TLS",
        Kind::Http => "HTTP",
    }
}

/// A target naming an address, not a host.
pub fn by_address(addr: SocketAddr) -> Target {
    Target {
        host: Host::Ip(addr.ip()),
        port: addr.port(),
    }
}
