//! Absolute-form forwarding of plain http:// requests through the pooled
//! client: streaming bodies both ways, hop-by-hop headers stripped, `Via`
//! added, `Max-Forwards` honoured, upgrades (WebSocket) relayed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::header::{ALLOW, CONTENT_TYPE, HOST, PROXY_AUTHORIZATION, UPGRADE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::body::{Body, Metered, text};
use super::{ProxyError, Shared, Slot, headers};
use crate::rules::{Action, Kind, Target, decide};
use crate::upstream::DialError;

/// Forwards `req`; `original` is set for transparent requests, whose direct
/// route goes to the address the client connected to, not to a fresh
/// resolution of `Host`.
pub async fn handle(
    shared: &Arc<Shared>,
    client: SocketAddr,
    slot: Slot,
    req: Request<Incoming>,
    original: Option<SocketAddr>,
) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let target = req.uri().clone();
    let bytes_up = Arc::new(AtomicU64::new(0));
    let (response, decision) =
        match forward(shared, client, slot, req, original, bytes_up.clone()).await {
            Ok((response, action)) => (response, action.to_string()),
            Err(err) => (err.response(), "refused".to_string()),
        };
    let status = response.status().as_u16();
    response.map(move |body| {
        let log = move |bytes_down: u64| {
            tracing::info!(
                %client, %method, %target, %decision, status,
                bytes_up = bytes_up.load(Ordering::Relaxed), bytes_down,
                duration_ms = started.elapsed().as_millis() as u64,
                "forward"
            );
        };
        Metered::new(body, Arc::new(AtomicU64::new(0)), Some(Box::new(log))).boxed()
    })
}

async fn forward(
    shared: &Arc<Shared>,
    client: SocketAddr,
    slot: Slot,
    mut req: Request<Incoming>,
    original: Option<SocketAddr>,
    bytes_up: Arc<AtomicU64>,
) -> Result<(Response<Body>, Action), ProxyError> {
    let target = check_request(&req)?;
    let client_version = req.version();
    let decision = decide(&shared.policy, client.ip(), &target, Kind::Http);
    if let Action::Deny(_) = decision.action {
        shared.stats.denied.inc();
        return Err(ProxyError::Forbidden(decision.rule));
    }
    if let Some(answer) = answer_max_forwards(&req) {
        return Ok((answer, decision.action));
    }
    let upgrade = headers::upgrade_requested(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    prepare(&mut req, upgrade.as_ref());
    if let (Action::Direct, Some(original)) = (&decision.action, original) {
        pin_to(&mut req, original)?;
    }
    let pool = match decision.action {
        Action::Parent => {
            shared.stats.via_parent.inc();
            if let Some(auth) = shared.dialer.parent().and_then(|p| p.authorization.clone()) {
                req.headers_mut().insert(PROXY_AUTHORIZATION, auth);
            }
            &shared.via_parent
        }
        _ => &shared.direct,
    };
    shared.stats.forwarded.inc();
    let req = req.map(|body| Metered::new(body, bytes_up, None).boxed());
    let mut response = pool.request(req).await.map_err(client_error)?;
    let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let keep_upgrade = switched
        .then(|| response.headers().get(UPGRADE).cloned())
        .flatten();
    if let (true, Some(client_side)) = (switched, client_upgrade) {
        let upstream_side = hyper::upgrade::on(&mut response);
        let shared_for_task = shared.clone();
        shared.tasks.spawn(async move {
            let _slot = slot;
            relay_upgraded(&shared_for_task, client_side, upstream_side).await;
        });
    }
    headers::strip_hop_by_hop(response.headers_mut(), keep_upgrade.as_ref());
    let version = response.version();
    headers::add_via(response.headers_mut(), version);
    // Our answer speaks the client's HTTP version, whatever the origin spoke.
    *response.version_mut() = client_version;
    Ok((response.map(BodyExt::boxed), decision.action))
}

/// Validates an absolute-form request and returns where it goes.
fn check_request(req: &Request<Incoming>) -> Result<Target, ProxyError> {
    let uri = req.uri();
    if uri.scheme_str() != Some("http") {
        return Err(ProxyError::BadRequest(format!(
            "cannot forward {uri}: only http:// is forwarded, https:// goes through CONNECT"
        )));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| ProxyError::BadRequest("request target has no host".into()))?;
    if let Some(conflict) = headers::framing_conflict(req.headers()) {
        return Err(ProxyError::BadRequest(format!(
            "bad message framing: {conflict}"
        )));
    }
    Target::parse(authority.as_str(), Some(80))
        .map_err(|err| ProxyError::BadRequest(format!("request target {authority}: {err}")))
}

/// Rewrites the request for the next hop.
fn prepare(req: &mut Request<Incoming>, upgrade: Option<&HeaderValue>) {
    let version = req.version();
    let host = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    let headers = req.headers_mut();
    headers::strip_hop_by_hop(headers, upgrade);
    headers::add_via(headers, version);
    if let Some(host) = host {
        headers.insert(HOST, host);
    }
    if let Some(remaining) = headers::max_forwards(headers) {
        headers.insert(
            "max-forwards",
            HeaderValue::from(remaining.saturating_sub(1)),
        );
    }
    *req.version_mut() = Version::HTTP_11;
}

/// Sends the request to `addr` (the `Host` header, already set, stays).
fn pin_to(req: &mut Request<Incoming>, addr: SocketAddr) -> Result<(), ProxyError> {
    let mut parts = req.uri().clone().into_parts();
    parts.authority = Some(
        http::uri::Authority::try_from(addr.to_string())
            .map_err(|e| ProxyError::BadRequest(format!("original destination: {e}")))?,
    );
    *req.uri_mut() = http::Uri::from_parts(parts)
        .map_err(|e| ProxyError::BadRequest(format!("request target: {e}")))?;
    Ok(())
}

/// OPTIONS/TRACE with `Max-Forwards: 0` are answered here (RFC 9110 §7.6.2).
fn answer_max_forwards(req: &Request<Incoming>) -> Option<Response<Body>> {
    let method = req.method();
    if (method != Method::OPTIONS && method != Method::TRACE)
        || headers::max_forwards(req.headers()) != Some(0)
    {
        return None;
    }
    let mut response = if method == Method::TRACE {
        let mut r = Response::new(text(format!("TRACE {} HTTP/1.1\r\n\r\n", req.uri())));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("message/http"));
        r
    } else {
        let mut r = Response::new(text(""));
        r.headers_mut().insert(
            ALLOW,
            HeaderValue::from_static(
                "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH, CONNECT",
            ),
        );
        r
    };
    headers::add_via(response.headers_mut(), Version::HTTP_11);
    Some(response)
}

fn client_error(err: hyper_util::client::legacy::Error) -> ProxyError {
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        if let Some(dial) = cause.downcast_ref::<Arc<DialError>>() {
            return ProxyError::Dial(dial.clone());
        }
        source = cause.source();
    }
    let detail = std::error::Error::source(&err).map_or_else(|| err.to_string(), |s| s.to_string());
    ProxyError::Upstream(detail)
}

async fn relay_upgraded(shared: &Shared, client: OnUpgrade, upstream: OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!("upgrade failed: {err}");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Ok((up, down)) = result {
                tracing::debug!(bytes_up = up, bytes_down = down, "upgraded connection closed");
            }
        }
        () = shared.force_stop.cancelled() => {}
    }
}
