//! The proxy: every entry (explicit CONNECT, absolute-form, origin-form,
//! transparent TLS, transparent HTTP) states who the client is and where it
//! wants to go; one [`route`](crate::rules::route) over one [`Policy`]
//! decides; one driver per action runs it with the same timeouts, limits,
//! logging and shutdown on every path:
//!
//! - [`pipeline`]: client streams (CONNECT, redirected TLS) → tunnel
//!   ([`tunnel`]) or interception ([`intercept`]);
//! - [`forward`]: http:// requests (absolute-form, redirected by Host),
//!   upgraded relays included;
//! - origin-form requests on the explicit listener: the GOPROXY endpoint,
//!   served by the same gomod handler as intercepted requests.

mod auth;
mod connect;
mod error;
mod forward;
mod idle;
mod intercept;
mod pages;
mod pipeline;
mod prefixed;
pub mod transparent;
mod tunnel;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::message::Body;
pub use auth::{Auth, AuthFileError, User, sha256};
pub use error::ProxyError;
pub use intercept::Mitm;

use crate::access;
use crate::rules::{Policy, mask_userinfo};
use crate::stats::Stats;
use crate::upstream::{Dialer, HttpClient};

/// The routing policy as served: an intercept decision carries the MITM
/// that carries it out.
pub type ServePolicy = Policy<Arc<Mitm>>;

/// Timeouts every driver applies, the same on every path.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// A client's request head, TLS handshake or ClientHello must arrive within this.
    pub header_read: Duration,
    /// A tunnel, intercepted connection or upgraded relay with no bytes
    /// either way for this long is closed.
    pub idle: Duration,
    /// A forwarded request's response head must arrive within this (504).
    pub response: Duration,
}

/// State every request handler needs; built once per configuration.
pub struct Shared {
    pub policy: Arc<ServePolicy>,
    pub dialer: Arc<Dialer>,
    /// Pooled client toward origins.
    pub direct: HttpClient,
    /// Pooled client toward the parent proxy (absolute-form).
    pub via_parent: HttpClient,
    /// `proxy.auth_file`, when set.
    pub auth: Option<Auth>,
    pub timeouts: Timeouts,
    pub stats: Arc<Stats>,
    /// Tracks tunnels spawned after an upgrade, so shutdown waits for them.
    pub tasks: TaskTracker,
    /// Fires when shutdown starts: finish what is in flight, take nothing new.
    pub shutdown: CancellationToken,
    /// Fires when the shutdown grace period is over: cut remaining tunnels.
    pub force_stop: CancellationToken,
    /// `proxy.public_name`: what the PAC file names as the proxy.
    pub public_name: Option<String>,
    /// Connection limits (kept across a reload that does not change them).
    pub limits: crate::listener::ConnLimits,
    /// Fires when a reload replaces this config: its background work
    /// (leaf renewal) stops; its connections carry on.
    pub retire: CancellationToken,
}

pub use crate::limits::{Slot, SlotGuards};

/// The local address a request's connection arrived at: how the client
/// reached modgate, for pages that name the proxy when `public_name` is
/// unset (never the request's own `Host`).
#[derive(Clone, Copy, Debug)]
pub struct ReachedAt(pub SocketAddr);

/// hyper's own limit on a request head's buffer: above
/// `proxy.max_header_size`, so that [`head_too_large`] decides (exactly,
/// and the same on every path) and hyper's limit is only a backstop.
pub fn head_backstop(max_header_size: usize) -> usize {
    max_header_size * 2 + 8192
}

/// A 431 for a request whose head is larger than `proxy.max_header_size`
/// (measured by [`headers::head_size`](crate::message::headers::head_size)),
/// on every listener and protocol.
pub fn head_too_large<B>(
    max: usize,
    client: SocketAddr,
    req: &Request<B>,
) -> Option<Response<Body>> {
    let size = crate::message::headers::head_size(req);
    if size <= max {
        return None;
    }
    let err = ProxyError::HeadTooLarge { size, max };
    tracing::info!(%client, status = 431, reason = %err, "refused");
    Some(err.response())
}

/// Serves one request from `client` on the explicit listener.
pub async fn handle(
    shared: Arc<Shared>,
    client: SocketAddr,
    slot: Slot,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    shared.stats.requests.inc();
    if let Some(refused) = head_too_large(shared.limits.max_header_size, client, &req) {
        return Ok(refused);
    }
    let started = Instant::now();
    if let Some(page) = pages::Page::of(&req) {
        // Browsers fetch the PAC file and the CA without proxy credentials.
        let answered = allowed(&shared, client).map(|()| page.answer(&shared, &req));
        let response = answered.unwrap_or_else(|err| err.response());
        let own = Own::answer(&response, page.name(), req.uri().path());
        own.log(&shared, client, &req, started);
        return Ok(response);
    }
    let response = match admit(&shared, client, &req) {
        Err(err) => {
            let decision = if err.status() == http::StatusCode::FORBIDDEN {
                "deny"
            } else {
                "refused"
            };
            let reason = err.to_string();
            let own = Own {
                side: err.side(),
                ..Own::answer(&err.response(), decision, &reason)
            };
            own.log(&shared, client, &req, started);
            err.response()
        }
        Ok(user) => {
            if let Some(user) = user {
                req.extensions_mut().insert(user);
            }
            if req.method() == Method::CONNECT {
                connect::handle(&shared, client, slot, req).await
            } else if req.uri().scheme().is_some() {
                forward::handle(&shared, client, slot, req, None).await
            } else {
                goproxy_endpoint(&shared, client, req).await
            }
        }
    };
    Ok(response)
}

/// A request modgate answered itself (the PAC file, a refusal), for the access log.
struct Own<'a> {
    decision: &'static str,
    rule: &'a str,
    status: u16,
    bytes: u64,
    side: &'static str,
}

impl<'a> Own<'a> {
    fn answer(response: &Response<Body>, decision: &'static str, rule: &'a str) -> Own<'a> {
        use http_body::Body as _;
        Own {
            decision,
            rule,
            status: response.status().as_u16(),
            bytes: response.body().size_hint().exact().unwrap_or(0),
            side: "-",
        }
    }

    fn log(&self, shared: &Shared, client: SocketAddr, req: &Request<Incoming>, started: Instant) {
        let target = mask_userinfo(&req.uri().to_string()).into_owned();
        let record = access::Record {
            kind: access::Kind::Request,
            client,
            user: None,
            method: req.method().as_str(),
            target: &target,
            original: None,
            decision: self.decision,
            rule: self.rule,
            mirror: None,
            cache: None,
            status: self.status,
            bytes_up: 0,
            bytes_down: self.bytes,
            duration: started.elapsed(),
            side: self.side,
            end: "answered",
        };
        access::log(&shared.stats, &record);
    }
}

/// `GOPROXY=http://modgate:3128`: origin-form requests are module requests
/// for the first intercepted host, served by the same gomod handler.
async fn goproxy_endpoint(
    shared: &Shared,
    client: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some(intercept) = &shared.policy.intercept else {
        return ProxyError::BadRequest(
            "modgate is a proxy: send absolute-form requests (http://host/path) or CONNECT".into(),
        )
        .response();
    };
    let path = req.uri().path();
    if let (Some(pypi), Some(rest)) = (&intercept.with.pypi, path.strip_prefix("/pypi/")) {
        let base = format!("http://{}/pypi", named(&req));
        return pypi
            .serve(client, ("endpoint", &base), &format!("/{rest}"), req)
            .await;
    }
    if let (Some(npm), Some(rest)) = (&intercept.with.npm, path.strip_prefix("/npm/")) {
        let base = format!("http://{}/npm", named(&req));
        return npm
            .serve(client, ("endpoint", &base), &format!("/{rest}"), req)
            .await;
    }
    let host = intercept
        .hosts
        .first()
        .map_or("proxy.golang.org", String::as_str);
    intercept
        .with
        .gomod
        .serve(client, host, "endpoint", req)
        .await
}

/// The address the client named modgate by (its Host, when that is a
/// plain authority), for the URLs modgate hands back.
fn named<B>(req: &Request<B>) -> &str {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok());
    host.filter(|h| {
        h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    })
    .unwrap_or("localhost")
}

/// Client allow-list and proxy authentication, before anything else: the
/// authenticated user, when `proxy.auth_file` is set.
fn admit(
    shared: &Shared,
    client: SocketAddr,
    req: &Request<Incoming>,
) -> Result<Option<User>, ProxyError> {
    allowed(shared, client)?;
    let Some(auth) = &shared.auth else {
        return Ok(None);
    };
    match auth.user(req.headers().get(http::header::PROXY_AUTHORIZATION)) {
        Some(user) => Ok(Some(user)),
        None => Err(ProxyError::AuthRequired),
    }
}

/// The client allow-list.
fn allowed(shared: &Shared, client: SocketAddr) -> Result<(), ProxyError> {
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
    Ok(())
}
