//! The only platform-specific code: the original destination of a
//! connection redirected by netfilter (SO_ORIGINAL_DST), the mark on
//! modgate's own outbound sockets (SO_MARK), the idle CPU priority of
//! background bookkeeping threads (SCHED_IDLE), and how a command ends when
//! its output is closed. Linux only; elsewhere each call is a clear error.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error(
        "no original destination (was the connection redirected by an iptables/nftables REDIRECT rule?): {0}"
    )]
    NoOriginalDestination(io::Error),
    #[error(
        "cannot set SO_MARK {mark:#x} on an outbound socket (transparent.outbound_mark needs CAP_NET_ADMIN): {source}"
    )]
    Mark { mark: u32, source: io::Error },
    #[error("{0} is only available on Linux")]
    Unsupported(&'static str),
}

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
mod owner;
#[cfg(target_os = "linux")]
pub use owner::listener_owner;

/// Where `/proc` is not, no owner is known.
#[cfg(not(target_os = "linux"))]
pub fn listener_owner(_addr: std::net::SocketAddr) -> Option<(u32, String)> {
    None
}
#[cfg(target_os = "linux")]
pub use linux::{idle_priority, original_destination, set_mark};

/// Where there is no idle scheduling class, the thread keeps its priority.
#[cfg(not(target_os = "linux"))]
pub fn idle_priority() {}

/// Fails on platforms without SO_ORIGINAL_DST, so transparent listeners
/// are refused at start-up rather than on every connection.
pub fn transparent_supported() -> Result<(), SysError> {
    if cfg!(target_os = "linux") {
        Ok(())
    } else {
        Err(SysError::Unsupported("transparent mode (SO_ORIGINAL_DST)"))
    }
}

#[cfg(not(target_os = "linux"))]
pub fn original_destination(_: &tokio::net::TcpStream) -> Result<std::net::SocketAddr, SysError> {
    Err(SysError::Unsupported("transparent mode (SO_ORIGINAL_DST)"))
}

#[cfg(not(target_os = "linux"))]
pub fn set_mark(_: &tokio::net::TcpSocket, _: u32) -> Result<(), SysError> {
    Err(SysError::Unsupported("transparent.outbound_mark (SO_MARK)"))
}

/// This host's interface addresses (IPv4-mapped ones as IPv4); empty when
/// they cannot be read, which leaves the self-connection check after each
/// connect as the loop guard.
pub fn local_addresses() -> Vec<std::net::IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces
            .into_iter()
            .map(|i| crate::rules::canonical_ip(i.ip()))
            .collect(),
        Err(err) => {
            tracing::warn!("cannot read this host's addresses: {err}");
            Vec::new()
        }
    }
}

/// For the commands that print (not `run`): a closed stdout or stderr
/// (`modgate doctor | head -1`) ends the process quietly, as it ends any
/// Unix tool, instead of a panic in `println!`. Sockets are unaffected:
/// they are written with MSG_NOSIGNAL.
pub fn exit_quietly_on_closed_stdout() {
    // SAFETY: restores the default disposition of one signal before any
    // thread is started; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
