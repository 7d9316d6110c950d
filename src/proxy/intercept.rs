//! The interception driver: TLS with a leaf from modgate's CA (ALPN h2 and
//! http/1.1), then HTTP/1 or HTTP/2 requests served by the gomod handler.
//! The handshake must finish within `proxy.header_read_timeout`, and the
//! first request arrive within it after that (HTTP/2 or HTTP/1), each
//! HTTP/1 request head too; a connection with no bytes either way for
//! `proxy.idle_timeout` is closed; shutdown lets requests in flight finish.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

use super::Shared;
use super::idle::{Activity, Watched};
use super::pipeline::Inbound;
use super::prefixed::Prefixed;
use crate::access::User;
use crate::gomod::Gomod;
use crate::message::Body;
use crate::tls::Leaves;

/// What interception needs, present when `intercept.enabled`.
pub struct Mitm {
    pub tls: Arc<rustls::ServerConfig>,
    pub leaves: Arc<Leaves>,
    pub gomod: Arc<Gomod>,
    /// `[pypi]`, when enabled.
    pub pypi: Option<Arc<crate::pypi::Pypi>>,
    /// `[npm]`, when enabled.
    pub npm: Option<Arc<crate::npm::Npm>>,
}

impl std::fmt::Debug for Mitm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mitm")
    }
}

/// Terminates TLS on `stream` (after `early` bytes already read) and serves
/// the requests for `host` until the client closes; says what it carried
/// (bytes from and to the client, TLS included) and how it ended.
pub async fn serve(
    shared: &Shared,
    mitm: &Mitm,
    inbound: &Inbound,
    host: &str,
    stream: TcpStream,
    early: Bytes,
) -> (u64, u64, &'static str) {
    let activity = Arc::new(Activity::new());
    let end = serve_tls(shared, mitm, inbound, host, stream, early, &activity).await;
    // The early bytes are read again through the prefixed stream: counted once.
    let read = activity.read.load(Ordering::Relaxed);
    let written = activity.written.load(Ordering::Relaxed);
    (read, written, end)
}

async fn serve_tls(
    shared: &Shared,
    mitm: &Mitm,
    inbound: &Inbound,
    host: &str,
    stream: TcpStream,
    early: Bytes,
    activity: &Arc<Activity>,
) -> &'static str {
    let client = inbound.client;
    let acceptor = TlsAcceptor::from(mitm.tls.clone());
    let watched = Watched::new(Prefixed::new(early, stream), activity.clone());
    let handshake = tokio::time::timeout(shared.timeouts.header_read, acceptor.accept(watched));
    let tls = match handshake.await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            tracing::debug!(%client, host, "intercepted TLS handshake failed: {err}");
            return "handshake failed";
        }
        Err(_) => return "handshake timeout",
    };
    let asked = Arc::new(Notify::new());
    let service = requests(
        (mitm.gomod.clone(), mitm.pypi.clone(), mitm.npm.clone()),
        inbound.client,
        inbound.user.clone(),
        host.into(),
        (asked.clone(), shared.limits.max_header_size),
    );
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.timeouts.header_read)
        .max_buf_size(super::head_backstop(shared.limits.max_header_size));
    let backstop = u32::try_from(super::head_backstop(shared.limits.max_header_size));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(backstop.unwrap_or(u32::MAX));
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => match result {
            Ok(()) => "closed",
            Err(err) => {
                tracing::debug!(%client, "intercepted connection ended: {err}");
                "error"
            }
        },
        () = activity.idle_for(shared.timeouts.idle) => "idle timeout",
        () = no_request_within(&asked, shared.timeouts.header_read) => "no request in time",
        () = shared.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => "shutdown",
                () = shared.force_stop.cancelled() => "shutdown",
            }
        }
    }
}

/// Completes when no request arrived within `limit` of the handshake
/// (whatever the protocol: hyper's own header timeout starts only once
/// bytes come, and HTTP/2 has none); never once one did.
async fn no_request_within(asked: &Notify, limit: Duration) {
    if tokio::time::timeout(limit, asked.notified()).await.is_ok() {
        std::future::pending::<()>().await;
    }
}

/// The intercepted connection's requests, served by the PyPI handler
/// for PyPI's hosts and by the gomod handler otherwise, as
/// `client` (and `user`) asking `host`; each one tells `asked`; a head
/// over `max_header_size` gets 431.
fn requests(
    (gomod, pypi, npm): (
        Arc<Gomod>,
        Option<Arc<crate::pypi::Pypi>>,
        Option<Arc<crate::npm::Npm>>,
    ),
    client: SocketAddr,
    user: Option<User>,
    host: Arc<str>,
    (asked, max_header_size): (Arc<Notify>, usize),
) -> impl Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone {
    service_fn(move |mut req: Request<Incoming>| {
        asked.notify_one();
        let refused = super::head_too_large(max_header_size, client, &req);
        let gomod = gomod.clone();
        let pypi = pypi.clone().filter(|p| p.serves(&host));
        let npm = npm.clone().filter(|n| n.serves(&host));
        let host = host.clone();
        if let Some(user) = &user {
            req.extensions_mut().insert(user.clone());
        }
        async move {
            if let Some(refused) = refused {
                return Ok(refused);
            }
            let path = req.uri().path().to_string();
            let response = match (pypi, npm) {
                (Some(pypi), _) => {
                    let base = format!("https://{host}");
                    pypi.serve(client, ("intercept", &base), &path, req).await
                }
                (_, Some(npm)) => {
                    let base = format!("https://{host}");
                    npm.serve(client, ("intercept", &base), &path, req).await
                }
                _ => gomod.serve(client, &host, "intercept", req).await,
            };
            Ok::<_, Infallible>(response)
        }
    })
}
