//! Dialling a destination: resolve, refuse denied addresses (every resolved
//! address is checked, so a name cannot smuggle a denied IP), connect under
//! `upstream.connect_timeout`. Also dials the parent proxy.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tokio::net::{TcpSocket, TcpStream};

use crate::config::ParentProxy;
use crate::rules::{Host, Policy, Target, denied_address};

/// Opens TCP connections toward destinations and the parent proxy.
pub struct Dialer {
    /// Deny rules checked against resolved addresses.
    policy: Arc<Policy>,
    /// Budget for resolve + connect (+ the parent's CONNECT answer).
    connect_timeout: Duration,
    /// `upstream.proxy`, if any.
    parent: Option<ParentProxy>,
    /// `transparent.outbound_mark`: SO_MARK on every socket dialled here.
    mark: Option<u32>,
}

/// Why a destination could not be reached; decides the status the client sees.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("destination denied: {0}")]
    Denied(String),
    #[error("cannot connect to {target}: {source}")]
    Connect { target: String, source: io::Error },
    #[error("connecting to {target} timed out after {after:?}")]
    Timeout { target: String, after: Duration },
    #[error("parent proxy refused the tunnel with status {status}")]
    ParentStatus { status: u16 },
    #[error("parent proxy: {0}")]
    ParentProtocol(String),
}

impl DialError {
    /// The status a client gets for this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            DialError::Denied(_) => StatusCode::FORBIDDEN,
            DialError::Timeout { .. } | DialError::ParentStatus { status: 504 } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

impl Dialer {
    pub fn new(
        policy: Arc<Policy>,
        connect_timeout: Duration,
        parent: Option<ParentProxy>,
        mark: Option<u32>,
    ) -> Self {
        Dialer {
            policy,
            connect_timeout,
            parent,
            mark,
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

    pub fn parent(&self) -> Option<&ParentProxy> {
        self.parent.as_ref()
    }

    /// Connects straight to `target`.
    pub async fn direct(&self, target: &Target) -> Result<TcpStream, DialError> {
        self.within_timeout(target, self.resolve_and_connect(target, true))
            .await
    }

    /// Connects to an admin-configured destination (a mirror): no deny check.
    pub async fn trusted(&self, target: &Target) -> Result<TcpStream, DialError> {
        self.within_timeout(target, self.resolve_and_connect(target, false))
            .await
    }

    /// Connects to the parent proxy (for absolute-form forwarding).
    pub async fn parent_connection(&self) -> Result<TcpStream, DialError> {
        let parent = self.parent_target()?;
        self.within_timeout(&parent, self.resolve_and_connect(&parent, false))
            .await
    }

    /// Opens a tunnel to `target` through the parent proxy; returns the
    /// stream and any bytes the parent sent after its answer.
    pub async fn parent_tunnel(&self, target: &Target) -> Result<(TcpStream, Bytes), DialError> {
        let parent = self.parent_target()?;
        let auth = self.parent.as_ref().and_then(|p| p.authorization.as_ref());
        self.within_timeout(target, async {
            let mut stream = self.resolve_and_connect(&parent, false).await?;
            let leftover = super::parent::handshake(&mut stream, target, auth).await?;
            Ok((stream, leftover))
        })
        .await
    }

    fn parent_target(&self) -> Result<Target, DialError> {
        let parent = self
            .parent
            .as_ref()
            .ok_or_else(|| DialError::ParentProtocol("no parent proxy configured".into()))?;
        Ok(Target {
            host: parent.host.clone(),
            port: parent.port,
        })
    }

    async fn within_timeout<T>(
        &self,
        target: &Target,
        work: impl Future<Output = Result<T, DialError>>,
    ) -> Result<T, DialError> {
        tokio::time::timeout(self.connect_timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(DialError::Timeout {
                    target: target.to_string(),
                    after: self.connect_timeout,
                })
            })
    }

    async fn resolve_and_connect(
        &self,
        target: &Target,
        check: bool,
    ) -> Result<TcpStream, DialError> {
        let addrs = resolve(target).await?;
        if check && let Some(reason) = addrs.iter().find_map(|a| denied_address(&self.policy, *a)) {
            return Err(DialError::Denied(reason));
        }
        let mut last_error = None;
        for addr in addrs {
            match connect(addr, self.mark).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(err) => last_error = Some(err),
            }
        }
        Err(DialError::Connect {
            target: target.to_string(),
            source: last_error.unwrap_or_else(|| io::Error::other("no addresses")),
        })
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

async fn resolve(target: &Target) -> Result<Vec<SocketAddr>, DialError> {
    match &target.host {
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, target.port)]),
        Host::Name(name) => {
            let found = tokio::net::lookup_host((name.as_str(), target.port))
                .await
                .map_err(|source| DialError::Resolve {
                    host: name.clone(),
                    source,
                })?;
            Ok(found.collect())
        }
    }
}
