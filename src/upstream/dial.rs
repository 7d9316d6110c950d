//! Every outbound TCP connection modgate makes (to origins, the parent proxy,
//! mirrors and each of their redirect hops) is opened here: resolve, run the
//! one egress check on every resolved address (so a name cannot smuggle a
//! denied IP), connect under `upstream.connect_timeout` with the outbound
//! mark, and refuse a connection that came back to modgate itself.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::net::{TcpSocket, TcpStream};

use crate::rules::{Egress, Exemption, Host, Target};

/// Opens TCP connections toward destinations and the parent proxy.
pub struct Dialer {
    /// Addresses never dialled; modgate's own listeners.
    egress: Arc<Egress>,
    /// Budget for resolve + connect (+ the parent's CONNECT answer).
    connect_timeout: Duration,
    /// `upstream.proxy`: the parents, in order, with their health.
    pub(super) parents: super::parents::Parents,
    /// `transparent.outbound_mark`: SO_MARK on every socket dialled here.
    mark: Option<u32>,
    /// `upstream.resolve_for_parent`: names bound for the parent are
    /// resolved and checked here first.
    resolve_for_parent: bool,
    /// The login scheme the parent offered (with `upstream.auth` unset).
    pub(super) learned: super::login::Learned,
    /// TLS toward https:// parents: the system's roots and `upstream.ca_file`
    /// (an error when that file cannot be used, said when a parent needs it).
    pub(super) parent_tls: Result<tokio_rustls::TlsConnector, String>,
    /// `upstream.pac`, which may name other parents for a host.
    pub(super) pac: Option<Arc<super::pac::Pac>>,
    /// The Basic login's `Proxy-Authorization`, made once.
    pub(super) basic: Option<http::HeaderValue>,
    /// How modgate logs in to every parent (those a PAC file names too).
    pub(super) login: crate::config::Login,
    /// Modgate's Kerberos identity for Negotiate logins (its tickets are
    /// this config's own).
    pub(super) kerberos: Result<Arc<super::kerberos::Identity>, String>,
    /// Whether refused credentials were already said in the log.
    pub(super) refusal_said: std::sync::atomic::AtomicBool,
}

/// Who is on the far end of an outbound connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The destination a client asked for.
    Origin,
    /// `upstream.proxy`.
    Parent,
    /// A Go module mirror or checksum database mirror (or a redirect hop of one).
    Mirror,
}

/// Why a destination could not be reached, and on which side.
#[derive(Debug)]
pub struct DialError {
    pub side: Side,
    /// The address or name being dialled (never with credentials).
    pub target: String,
    pub failure: Failure,
}

#[derive(Debug)]
pub enum Failure {
    Resolve(io::Error),
    Denied(String),
    Connect(io::Error),
    Timeout(Duration),
    /// The parent answered CONNECT with this status.
    ParentStatus(u16),
    /// The parent broke the CONNECT exchange.
    ParentProtocol(String),
    /// TLS with an https:// parent failed (its certificate, mostly).
    ParentTls(String),
    /// modgate cannot log in to the parent (a scheme it does not speak, a
    /// broken challenge).
    ParentLogin(String),
    /// The parent refused the credentials after a complete login.
    CredentialsRefused {
        user: String,
        scheme: &'static str,
    },
    BadAddress(String),
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (side, target) = (self.side, &self.target);
        match &self.failure {
            Failure::Resolve(err) => write!(f, "cannot resolve {side} {target}: {err}"),
            Failure::Denied(why) => write!(f, "{side} {target} denied: {why}"),
            Failure::Connect(err) => write!(f, "cannot connect to {side} {target}: {err}"),
            Failure::Timeout(after) => {
                write!(f, "connecting to {side} {target} timed out after {after:?}")
            }
            Failure::ParentStatus(status) => write!(
                f,
                "parent proxy {target} refused the tunnel: {}",
                parent_status(*status)
            ),
            Failure::ParentProtocol(why) => write!(f, "parent proxy {target}: {why}"),
            Failure::ParentTls(why) => write!(f, "TLS with parent proxy {target}: {why}"),
            Failure::ParentLogin(why) => write!(f, "cannot log in to parent proxy {target}: {why}"),
            Failure::CredentialsRefused { user, scheme } => write!(
                f,
                "parent proxy {target} refused the credentials of {user} ({scheme} login)"
            ),
            Failure::BadAddress(why) => write!(f, "{side} {target} is not an address: {why}"),
        }
    }
}

/// What a parent proxy's refusal `status` means, for the client's answer.
pub fn parent_status(status: u16) -> String {
    match status {
        407 => "407 Proxy Authentication Required (it wants a login: set upstream.credentials_file, or user:pass in upstream.proxy)".into(),
        403 => "403 Forbidden (the parent's own rules refuse this destination)".into(),
        other => format!("status {other}"),
    }
}

impl std::error::Error for DialError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.failure {
            Failure::Resolve(err) | Failure::Connect(err) => Some(err),
            _ => None,
        }
    }
}

impl DialError {
    /// The status a client gets for this failure.
    pub fn status(&self) -> StatusCode {
        match self.failure {
            Failure::Denied(_) => StatusCode::FORBIDDEN,
            Failure::Timeout(_) | Failure::ParentStatus(504) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Origin => "origin",
            Side::Parent => "parent proxy",
            Side::Mirror => "mirror",
        })
    }
}

impl Dialer {
    /// The dialer for `config`, refusing what `egress` refuses.
    pub fn new(config: &crate::config::Config, egress: Arc<Egress>) -> Self {
        Dialer {
            egress,
            connect_timeout: config.upstream.connect_timeout,
            parents: super::parents::Parents::new(
                config.upstream.parents.clone(),
                config.upstream.down_for,
            ),
            mark: config.transparent.outbound_mark,
            resolve_for_parent: config.upstream.resolve_for_parent,
            learned: Default::default(),
            parent_tls: parent_tls(config),
            pac: config.upstream.pac.clone().map(super::pac::Pac::new),
            login: config.upstream.login.clone(),
            basic: (config.upstream.login.credentials.as_ref()).and_then(|c| c.basic()),
            kerberos: super::kerberos::Identity::new(config.upstream.login.keytab.as_deref())
                .map(Arc::new),
            refusal_said: Default::default(),
        }
    }

    /// Fails now, with a clear error, if the outbound mark cannot be set.
    pub fn check_mark(&self) -> Result<(), crate::sys::SysError> {
        let Some(mark) = self.mark else {
            return Ok(());
        };
        let probe =
            TcpSocket::new_v4().map_err(|source| crate::sys::SysError::Mark { mark, source })?;
        crate::sys::set_mark(&probe, mark)
    }

    /// Connects straight to `target` for `side`; `exemption` lets an
    /// admin-named destination (a mirror's own origin) inside `deny_destinations`.
    pub async fn direct(
        &self,
        side: Side,
        target: &Target,
        exemption: Exemption,
    ) -> Result<TcpStream, DialError> {
        self.within_timeout(side, target, self.open(side, target, exemption))
            .await
    }

    /// Refuses a destination bound for the parent whose address is off
    /// limits: an IP literal always; a name, with `resolve_for_parent`, when
    /// this host resolves it to one (as Squid's `to_localhost` does). A name
    /// this host cannot resolve is the parent's to resolve.
    pub(super) async fn screen_for_parent(
        &self,
        side: Side,
        target: &Target,
        exemption: Exemption,
    ) -> Result<(), DialError> {
        let addrs = match &target.host {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, target.port)],
            Host::Name(_) if !self.resolve_for_parent => return Ok(()),
            Host::Name(_) if self.egress.deny_destinations.is_empty() => return Ok(()),
            Host::Name(_) => resolve(target).await.unwrap_or_default(),
        };
        match addrs
            .iter()
            .find_map(|a| self.egress.refusal(*a, exemption))
        {
            Some(reason) => Err(failed(side, target, Failure::Denied(reason))),
            None => Ok(()),
        }
    }

    pub(super) async fn within_timeout<T>(
        &self,
        side: Side,
        target: &Target,
        work: impl Future<Output = Result<T, DialError>>,
    ) -> Result<T, DialError> {
        tokio::time::timeout(self.connect_timeout, work)
            .await
            .unwrap_or_else(|_| Err(failed(side, target, Failure::Timeout(self.connect_timeout))))
    }

    /// Resolve, check every address, connect to the first that answers.
    pub(super) async fn open(
        &self,
        side: Side,
        target: &Target,
        exemption: Exemption,
    ) -> Result<TcpStream, DialError> {
        let addrs = resolve(target)
            .await
            .map_err(|err| failed(side, target, Failure::Resolve(err)))?;
        if let Some(reason) = addrs
            .iter()
            .find_map(|a| self.egress.refusal(*a, exemption))
        {
            return Err(failed(side, target, Failure::Denied(reason)));
        }
        let mut last_error = None;
        for addr in addrs {
            match connect(addr, self.mark).await {
                Ok(stream) if self.comes_back(&stream) => {
                    let reason =
                        format!("{addr} leads back to modgate's own listener (request loop)");
                    return Err(failed(side, target, Failure::Denied(reason)));
                }
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(err) => last_error = Some(err),
            }
        }
        let err = last_error.unwrap_or_else(|| io::Error::other("no addresses"));
        Err(failed(side, target, Failure::Connect(err)))
    }

    /// A connection to this host on one of modgate's listening ports,
    /// through an address that appeared after start-up.
    fn comes_back(&self, stream: &TcpStream) -> bool {
        match (stream.local_addr(), stream.peer_addr()) {
            (Ok(local), Ok(peer)) => self.egress.is_self_connection(local, peer),
            _ => false,
        }
    }
}

/// The TLS connector toward https:// parents.
fn parent_tls(config: &crate::config::Config) -> Result<tokio_rustls::TlsConnector, String> {
    let files: Vec<&std::path::Path> = config
        .upstream
        .ca_file
        .iter()
        .map(|p| p.as_path())
        .collect();
    crate::tls::roots::client_config(&files)
        .map(tokio_rustls::TlsConnector::from)
        .map_err(|e| format!("upstream.ca_file {e}"))
}

pub(super) fn failed(side: Side, target: &Target, failure: Failure) -> DialError {
    DialError {
        side,
        target: target.to_string(),
        failure,
    }
}

/// One TCP connect, the socket marked first when `mark` is set.
async fn connect(addr: SocketAddr, mark: Option<u32>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(mark) = mark {
        crate::sys::set_mark(&socket, mark).map_err(io::Error::other)?;
    }
    socket.connect(addr).await
}

async fn resolve(target: &Target) -> io::Result<Vec<SocketAddr>> {
    match &target.host {
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, target.port)]),
        Host::Name(name) => {
            let found = tokio::net::lookup_host((name.as_str(), target.port)).await?;
            Ok(found.collect())
        }
    }
}
