//! The proxy service: one function per request kind (CONNECT, absolute-form,
//! anything else), all sharing [`Shared`]. The listener hands each request to
//! [`handle`].

mod auth;
mod body;
mod connect;
mod error;
mod forward;
mod headers;
mod intercept;
mod prefixed;
pub mod transparent;
mod tunnel;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::{Auth, AuthFileError, sha256};
pub use body::{Body, plain_text};
pub use error::ProxyError;
pub use intercept::Mitm;

use crate::rules::Policy;
use crate::stats::Stats;
use crate::upstream::{Dialer, HttpClient};

/// State every request handler needs; built once per configuration.
pub struct Shared {
    pub policy: Arc<Policy>,
    pub dialer: Arc<Dialer>,
    /// Pooled client toward origins.
    pub direct: HttpClient,
    /// Pooled client toward the parent proxy (absolute-form).
    pub via_parent: HttpClient,
    /// `proxy.auth_file`, when set.
    pub auth: Option<Auth>,
    /// Tunnels and upgraded connections idle longer than this are closed.
    pub idle_timeout: Duration,
    pub stats: Arc<Stats>,
    /// Tracks tunnels spawned after an upgrade, so shutdown waits for them.
    pub tasks: TaskTracker,
    /// Fires when the shutdown grace period is over: cut remaining tunnels.
    pub force_stop: CancellationToken,
    /// Interception (CA leaves + gomod handler), when enabled.
    pub mitm: Option<Mitm>,
}

/// Strips hop-by-hop headers from a relayed message.
pub fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    headers::strip_hop_by_hop(headers, None);
}

/// A client connection's share of `proxy.max_connections`; tunnels and
/// upgraded connections keep it until they end.
pub type Slot = Arc<OwnedSemaphorePermit>;

/// Serves one request from `client`.
pub async fn handle(
    shared: Arc<Shared>,
    client: SocketAddr,
    slot: Slot,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    shared.stats.requests.inc();
    let response = match admit(&shared, client, &req) {
        Err(err) => {
            tracing::warn!(%client, method = %req.method(), target = %req.uri(), status = err.status().as_u16(), reason = %err, "refused");
            err.response()
        }
        Ok(()) if req.method() == Method::CONNECT => {
            connect::handle(&shared, client, slot, req).await
        }
        Ok(()) if req.uri().scheme().is_some() => {
            forward::handle(&shared, client, slot, req, None).await
        }
        // GOPROXY=http://modgate:3128: origin-form requests are module requests.
        Ok(()) => match &shared.mitm {
            Some(mitm) => {
                let host = shared
                    .policy
                    .intercept
                    .as_ref()
                    .and_then(|i| i.hosts.first().cloned());
                mitm.gomod
                    .serve(host.as_deref().unwrap_or("proxy.golang.org"), req)
                    .await
            }
            None => ProxyError::BadRequest(
                "modgate is a proxy: send absolute-form requests (http://host/path) or CONNECT"
                    .into(),
            )
            .response(),
        },
    };
    Ok(response)
}

/// Client allow-list and proxy authentication, before anything else.
fn admit(shared: &Shared, client: SocketAddr, req: &Request<Incoming>) -> Result<(), ProxyError> {
    let ip = client.ip();
    if !shared
        .policy
        .allow_clients
        .iter()
        .any(|net| net.contains(&ip))
    {
        shared.stats.denied.inc();
        return Err(ProxyError::Forbidden(format!(
            "client {ip} is not in proxy.allow_clients"
        )));
    }
    if let Some(auth) = &shared.auth
        && !auth.check(req.headers().get(http::header::PROXY_AUTHORIZATION))
    {
        return Err(ProxyError::AuthRequired);
    }
    Ok(())
}
