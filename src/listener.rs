//! Listeners: bind, accept loop with the connection limits (the global
//! permit is taken before accept, the per-client share right after it),
//! back-off on accept errors, per-connection HTTP/1 serving with header
//! size/time limits, and graceful shutdown. Transparent listeners first
//! recover the connection's original destination.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::limits::{ClientCounts, SlotGuards};
use crate::proxy::{self, Body, Shared, transparent};
use crate::rules::canonical_addr;
use crate::stats::Held;

/// Limits applied to every client connection.
#[derive(Clone)]
pub struct ConnLimits {
    pub max_header_size: usize,
    /// `proxy.max_connections`: a permit is taken before each accept.
    pub permits: Arc<Semaphore>,
    pub max_connections: usize,
    /// Connections each client address holds now.
    pub per_client: Arc<ClientCounts>,
}

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// `proxy.listen`: an explicit proxy (CONNECT and absolute-form).
    Explicit,
    /// `transparent.http`: redirected plain HTTP, routed by Host.
    TransparentHttp,
    /// `transparent.https`: redirected TLS, routed by server name.
    TransparentTls,
}

impl Entry {
    /// What the listener serves, as logs and the status page name it.
    pub fn serves(self) -> &'static str {
        match self {
            Entry::Explicit => "explicit proxy",
            Entry::TransparentHttp => "transparent http",
            Entry::TransparentTls => "transparent https",
        }
    }
}

/// Binds `addr` with a deep accept backlog (bursts of new tunnels).
/// An IPv6 address takes IPv4 too (mapped) unless `v6_only`, which lets
/// `[::]:3128` and `0.0.0.0:3128` be bound side by side.
pub fn bind(addr: SocketAddr, v6_only: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        let socket = TcpSocket::new_v6()?;
        socket2::SockRef::from(&socket).set_only_v6(v6_only)?;
        socket
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Accepts until `stop` fires (shutdown, or a reload that drops this
/// listener); each connection is served on a tracked task with the config
/// current when it was accepted.
pub async fn serve(
    listener: TcpListener,
    entry: Entry,
    current: Arc<ArcSwap<Shared>>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let permits = current.load().limits.permits.clone();
        let permit = tokio::select! {
            permit = permits.acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = stop.cancelled() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let shared = current.load_full();
                admit(stream, canonical_addr(peer), entry, shared, permit);
            }
            Err(err) => {
                // Out of descriptors or similar: wait instead of spinning.
                tracing::warn!("accept failed: {err}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Takes the client's share of the limits and serves the connection on a
/// tracked task; closes it at once when the client holds its maximum.
fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    entry: Entry,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) {
    let Some(per_client) = shared.limits.per_client.admit(peer.ip()) else {
        // Closed at once: the permit goes back with it.
        shared.stats.denied.inc();
        tracing::debug!(client = %peer, "refused: proxy.max_connections_per_client reached");
        return;
    };
    let slot = Arc::new(SlotGuards {
        global: permit,
        per_client,
        open: Held::new(&shared.stats.connections),
    });
    let tasks = shared.tasks.clone();
    tasks.spawn(connection(stream, peer, entry, shared, slot));
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    entry: Entry,
    shared: Arc<Shared>,
    slot: proxy::Slot,
) {
    let _ = stream.set_nodelay(true);
    let head_limits = (shared.limits.max_header_size, shared.timeouts.header_read);
    let shutdown = shared.shutdown.clone();
    // The slot lives as long as the connection or a tunnel made from it.
    if entry == Entry::Explicit {
        // Where the client reached this listener (its own address for it).
        let local = stream.local_addr().ok().map(proxy::ReachedAt);
        let service = service_fn(move |mut req: Request<Incoming>| {
            if let Some(local) = local {
                req.extensions_mut().insert(local);
            }
            proxy::handle(shared.clone(), peer, slot.clone(), req)
        });
        return serve_http1(stream, peer, service, head_limits, shutdown).await;
    }
    let original = match transparent::original_destination(&shared.policy.egress, &stream) {
        Ok(original) => original,
        Err(why) => {
            tracing::warn!(client = %peer, "transparent: refused: {why}");
            return;
        }
    };
    if entry == Entry::TransparentTls {
        return transparent::serve_tls(shared, peer, original, stream, slot).await;
    }
    let service = service_fn(move |req| {
        transparent::handle_http(shared.clone(), peer, original, slot.clone(), req)
    });
    serve_http1(stream, peer, service, head_limits, shutdown).await
}

/// Serves HTTP/1 requests (and upgrades) on `stream` until it closes or
/// shutdown asks it to finish.
async fn serve_http1<S>(
    stream: TcpStream,
    peer: SocketAddr,
    service: S,
    (max_header_size, header_read_timeout): (usize, Duration),
    shutdown: CancellationToken,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(proxy::head_backstop(max_header_size))
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(client = %peer, "connection ended: {err}");
    }
}
