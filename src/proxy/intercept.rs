//! The MITM side of interception: TLS with a leaf from modgate's CA (ALPN h2
//! and http/1.1), then HTTP/1 or HTTP/2 requests served by the gomod handler.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::Shared;
use super::prefixed::Prefixed;
use crate::gomod::Gomod;

/// Time a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What interception needs, present when `intercept.enabled`.
pub struct Mitm {
    pub tls: Arc<rustls::ServerConfig>,
    pub gomod: Arc<Gomod>,
}

/// Terminates TLS on `stream` (after `early` bytes already read) and serves
/// the requests for `host` until the client closes.
pub async fn serve(
    shared: &Shared,
    mitm: &Mitm,
    client: SocketAddr,
    host: &str,
    stream: TcpStream,
    early: Bytes,
) {
    let acceptor = TlsAcceptor::from(mitm.tls.clone());
    let handshake = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        acceptor.accept(Prefixed::new(early, stream)),
    );
    let tls = match handshake.await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            tracing::info!(%client, host, "intercepted TLS handshake failed: {err}");
            return;
        }
        Err(_) => {
            tracing::info!(%client, host, "intercepted TLS handshake timed out");
            return;
        }
    };
    let gomod = mitm.gomod.clone();
    let host: Arc<str> = Arc::from(host);
    let service = service_fn(move |req| {
        let gomod = gomod.clone();
        let host = host.clone();
        async move { Ok::<_, std::convert::Infallible>(gomod.serve(&host, req).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::select! {
        result = conn => if let Err(err) = result {
            tracing::debug!(%client, "intercepted connection ended: {err}");
        },
        () = shared.force_stop.cancelled() => {}
    }
}
