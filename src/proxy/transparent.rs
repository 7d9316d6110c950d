//! Transparent mode: connections that iptables/nftables REDIRECT rules sent
//! to `transparent.https` / `transparent.http`, from clients that configured
//! nothing. The original destination comes from the kernel; the route is
//! decided by the same [`decide`] as explicit requests:
//!
//! - TLS: the ClientHello is read (at most 16 KiB, within
//!   `proxy.header_read_timeout`) and routed by its server name: a Go module
//!   host is intercepted; anything else is tunnelled to the original
//!   destination (or through the parent by name), the hello replayed. No
//!   server name, ECH, or not TLS at all: tunnelled by address.
//! - HTTP: each request is routed by `Host` and forwarded to the original
//!   destination (or through the parent by name).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::pipeline::{self, Inbound};
use super::{ProxyError, Shared, Slot, forward};
use crate::message::Body;
use crate::rules::{Egress, Host, Kind, Target, canonical_addr};
use crate::tls::client_hello::{self, ClientHello, MAX_HELLO, Peek};

/// Bytes read while looking for the ClientHello (one full record plus a
/// little for a hello spread over several records).
const MAX_PEEK: usize = MAX_HELLO + 1024;

/// Where a redirected connection was going, or why it is refused.
pub fn original_destination(egress: &Egress, stream: &TcpStream) -> Result<SocketAddr, String> {
    let local = canonical_addr(stream.local_addr().map_err(|e| e.to_string())?);
    let original = match crate::sys::original_destination(stream) {
        Ok(original) => canonical_addr(original),
        Err(crate::sys::SysError::NoOriginalDestination(err))
            if err.kind() == std::io::ErrorKind::NotFound =>
        {
            return Err(format!(
                "connection to {local} was not redirected (no NAT record): clients must not aim at a transparent port itself"
            ));
        }
        Err(err) => return Err(err.to_string()),
    };
    if is_own(egress, original, local) {
        return Err(format!(
            "original destination {original} is modgate's own listener (redirect loop, or a client aimed at a transparent port itself)"
        ));
    }
    Ok(original)
}

/// The original destination is one of modgate's own listeners: the address
/// the connection arrived on, or a listener's port on that address.
fn is_own(egress: &Egress, original: SocketAddr, local: SocketAddr) -> bool {
    original == local
        || egress.own_listeners.iter().any(|own| {
            own.port() == original.port()
                && (own.ip() == original.ip()
                    || (own.ip().is_unspecified() && original.ip() == local.ip()))
        })
}

/// What the first bytes of a redirected TLS connection turned out to be.
enum Opening {
    Hello(ClientHello),
    /// Not routable by name; the reason, for the log.
    ByAddress(&'static str),
    /// Nothing to relay: the client sent nothing in time, left, or its
    /// connection failed; the reason, for the log.
    Closed(&'static str),
}

/// Serves one connection redirected to `transparent.https`: the hello is
/// read within `header_read_timeout`, then the connection goes through the
/// same pipeline as a CONNECT, routed by the server name.
pub async fn serve_tls(
    shared: Arc<Shared>,
    client: SocketAddr,
    original: SocketAddr,
    mut stream: TcpStream,
    slot: Slot,
) {
    let _slot = slot;
    let started = Instant::now();
    let deadline = shared.timeouts.header_read;
    let mut peeked = BytesMut::with_capacity(2048);
    let name = match read_hello(&mut stream, &mut peeked, deadline).await {
        Opening::Closed(why) => {
            tracing::info!(%client, %original, ?deadline, "transparent: {why}; closed");
            return;
        }
        Opening::ByAddress(why) => {
            tracing::debug!(%client, %original, "transparent: routing by address: {why}");
            None
        }
        Opening::Hello(hello) if hello.ech => None,
        Opening::Hello(hello) => hello.server_name,
    };
    let target = match name {
        Some(name) => Target {
            host: Host::Name(name),
            port: original.port(),
        },
        None => pipeline::by_address(original),
    };
    let inbound = Inbound {
        client,
        target,
        kind: Kind::TransparentTls,
        original: Some(original),
        started,
        user: None,
    };
    let decision = pipeline::decide(&shared, &inbound).await;
    match pipeline::open(&shared, &inbound, &decision).await {
        // A refusal cannot be answered inside TLS: the connection is closed.
        Err(err) => pipeline::log_refused(&shared, &inbound, &decision, &err),
        Ok(outbound) => {
            let early = peeked.freeze();
            pipeline::drive(&shared, &inbound, outbound, &decision, stream, early).await;
        }
    }
}

/// Reads into `peeked` until it holds a whole ClientHello, something that
/// cannot become one, [`MAX_PEEK`] bytes, or the deadline passes.
async fn read_hello(stream: &mut TcpStream, peeked: &mut BytesMut, deadline: Duration) -> Opening {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let room = MAX_PEEK - peeked.len();
        let mut window = (&mut *peeked).limit(room);
        let read = tokio::time::timeout_at(until, stream.read_buf(&mut window)).await;
        match read {
            Ok(Ok(0)) if peeked.is_empty() => {
                return Opening::Closed("client left without sending");
            }
            Ok(Ok(0)) => return Opening::ByAddress("client closed before finishing its hello"),
            Ok(Err(_)) => return Opening::Closed("reading the client failed"),
            Err(_) if peeked.is_empty() => {
                return Opening::Closed("nothing sent within the deadline");
            }
            Err(_) => return Opening::ByAddress("hello incomplete at the deadline"),
            Ok(Ok(_)) => {}
        }
        match client_hello::peek(peeked) {
            Peek::Hello(hello) => return Opening::Hello(hello),
            Peek::NotHello(why) => return Opening::ByAddress(why),
            Peek::Incomplete if peeked.len() >= MAX_PEEK => {
                return Opening::ByAddress("hello larger than the peek limit");
            }
            Peek::Incomplete => {}
        }
    }
}

/// Serves one request on a connection redirected to `transparent.http`.
pub async fn handle_http(
    shared: Arc<Shared>,
    client: SocketAddr,
    original: SocketAddr,
    slot: Slot,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    shared.stats.requests.inc();
    if let Some(refused) = super::head_too_large(shared.limits.max_header_size, client, &req) {
        return Ok(refused);
    }
    if let Err(err) = absolute_form(&mut req, original) {
        tracing::info!(%client, %original, status = err.status().as_u16(), reason = %err, "transparent: refused");
        return Ok(err.response());
    }
    Ok(forward::handle(&shared, client, slot, req, Some(original)).await)
}

/// Turns an origin-form request into the absolute-form one the client would
/// have sent to a proxy: `http://<Host><path>` (the original address when
/// there is no Host).
fn absolute_form(req: &mut Request<Incoming>, original: SocketAddr) -> Result<(), ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::BadRequest(
            "CONNECT on a transparent port: point HTTPS_PROXY at proxy.listen instead".into(),
        ));
    }
    if req.uri().scheme().is_some() {
        return Ok(());
    }
    // The Host the client sent is kept as it is (port included or not).
    let authority = match req.headers().get(HOST) {
        Some(host) => {
            let text = host.to_str().unwrap_or_default();
            Target::parse(text, Some(original.port()))
                .map_err(|e| ProxyError::BadRequest(format!("Host {text:?}: {e}")))?;
            text.to_string()
        }
        None => original.to_string(),
    };
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(
        Authority::try_from(authority.as_str())
            .map_err(|e| ProxyError::BadRequest(format!("Host {authority:?}: {e}")))?,
    );
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *req.uri_mut() = Uri::from_parts(parts)
        .map_err(|e| ProxyError::BadRequest(format!("request target: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_addresses_are_loops() {
        let egress = Egress {
            own_listeners: vec![
                "0.0.0.0:3130".parse().unwrap(),
                "127.0.0.1:3128".parse().unwrap(),
            ],
            ..Egress::default()
        };
        let local: SocketAddr = "10.0.0.1:3130".parse().unwrap();
        let own = |a: &str| is_own(&egress, a.parse().unwrap(), local);
        assert!(own("10.0.0.1:3130"));
        assert!(own("127.0.0.1:3128"));
        assert!(!own("10.0.0.1:443"));
        assert!(!own("10.9.9.9:3130"));
        assert!(!own("93.184.216.34:443"));
    }
}
