//! SO_ORIGINAL_DST and SO_MARK through socket2.

use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::{TcpSocket, TcpStream};

use super::SysError;

/// Where the client meant to connect before a REDIRECT rule sent it here.
/// For a connection that was not redirected this is the local address.
pub fn original_destination(stream: &TcpStream) -> Result<SocketAddr, SysError> {
    let socket = SockRef::from(stream);
    let v4_first = match stream.local_addr() {
        Ok(SocketAddr::V6(local)) => local.ip().to_ipv4_mapped().is_some(),
        _ => true,
    };
    let attempt = |v4: bool| {
        if v4 {
            socket.original_dst_v4()
        } else {
            socket.original_dst_v6()
        }
    };
    let found = attempt(v4_first).or_else(|first| attempt(!v4_first).map_err(|_| first));
    let addr = found.map_err(SysError::NoOriginalDestination)?;
    addr.as_socket()
        .ok_or_else(|| SysError::NoOriginalDestination(std::io::Error::other("not an IP address")))
}

/// Marks `socket` so that REDIRECT rules can exclude modgate's own traffic.
pub fn set_mark(socket: &TcpSocket, mark: u32) -> Result<(), SysError> {
    SockRef::from(socket)
        .set_mark(mark)
        .map_err(|source| SysError::Mark { mark, source })
}

/// Puts the calling thread in the SCHED_IDLE class: it runs only on CPU
/// time nothing else wants. Best effort: on failure it keeps its priority.
pub fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot use SCHED_IDLE");
    }
}
