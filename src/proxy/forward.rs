//! The forward driver: plain http:// requests (absolute-form, or redirected
//! and routed by Host) through the pooled client: streaming bodies both
//! ways, hop-by-hop headers stripped, `Via` added, `Max-Forwards` honoured,
//! a response head due within `upstream.response_timeout` (else 504),
//! upgrades (WebSocket) relayed until `proxy.idle_timeout` of silence.

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

use super::idle::{Activity, Watched};
use super::{ProxyError, Shared, Slot};
use crate::access::{self, User};
use crate::message::{Body, BoxError, ClientBodyError, Metered, Paced, headers, text};
use crate::rules::{Action, Kind, Target, mask_userinfo, route};
use crate::upstream::{DialError, Side};

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
    let mut line = Line {
        client,
        user: req.extensions().get::<User>().map(|u| u.0.clone()),
        method: req.method().clone(),
        target: mask_userinfo(&req.uri().to_string()).into_owned(),
        original,
        decision: "-",
        rule: String::new(),
        side: "-",
        reason: String::new(),
        bytes_up: Arc::new(AtomicU64::new(0)),
        started: Instant::now(),
    };
    let response = match forward(shared, client, slot, req, original, &mut line).await {
        Ok(response) => response,
        Err(err) => {
            line.side = err.side();
            line.reason = err.to_string();
            err.response()
        }
    };
    let status = response.status().as_u16();
    let stats = shared.stats.clone();
    response.map(move |body| {
        let log = move |bytes_down: u64| line.log(&stats, status, bytes_down);
        Metered::new(body, Arc::new(AtomicU64::new(0)), Some(Box::new(log))).boxed()
    })
}

/// A forwarded request's access line, written when its response body ends.
struct Line {
    client: SocketAddr,
    user: Option<Arc<str>>,
    method: Method,
    /// The target, credentials masked.
    target: String,
    original: Option<SocketAddr>,
    /// The routing decision (`-` when the request never got that far).
    decision: &'static str,
    rule: String,
    /// The side that failed, if one did (`-`: none).
    side: &'static str,
    reason: String,
    /// Request body bytes sent on.
    bytes_up: Arc<AtomicU64>,
    started: Instant,
}

impl Line {
    fn log(&self, stats: &crate::stats::Stats, status: u16, bytes_down: u64) {
        let record = access::Record {
            kind: access::Kind::Request,
            client: self.client,
            user: self.user.as_deref(),
            method: self.method.as_str(),
            target: &self.target,
            original: self.original,
            decision: self.decision,
            rule: &self.rule,
            mirror: None,
            cache: None,
            status,
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down,
            duration: self.started.elapsed(),
            side: self.side,
            end: if self.reason.is_empty() {
                "sent"
            } else {
                &self.reason
            },
        };
        access::log(stats, &record);
    }
}

async fn forward(
    shared: &Arc<Shared>,
    client: SocketAddr,
    slot: Slot,
    mut req: Request<Incoming>,
    original: Option<SocketAddr>,
    line: &mut Line,
) -> Result<Response<Body>, ProxyError> {
    let target = check_request(&mut req)?;
    let client_version = req.version();
    if let Some(pac) = &shared.policy.via.pac {
        pac.prepare(&req.uri().to_string(), &target.host.to_string())
            .await;
    }
    let decision = route(&shared.policy, client.ip(), &target, Kind::Http);
    line.decision = decision.action.name();
    line.rule.clone_from(&decision.rule);
    if let Action::Deny(_) = decision.action {
        shared.stats.denied.inc();
        return Err(ProxyError::Forbidden(decision.rule));
    }
    if let Some(answer) = answer_max_forwards(&req) {
        return Ok(answer);
    }
    let upgrade = headers::upgrade_requested(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    prepare(&mut req, upgrade.as_ref());
    if let (Action::Direct, Some(original)) = (&decision.action, original) {
        pin_to(&mut req, original)?;
    }
    let side = match decision.action {
        Action::Parent => Side::Parent,
        _ => Side::Origin,
    };
    let pool = match decision.action {
        Action::Parent => {
            shared.stats.via_parent.inc();
            if let Some(auth) = shared.dialer.basic_authorization(&target).await {
                req.headers_mut().insert(PROXY_AUTHORIZATION, auth);
            }
            &shared.via_parent
        }
        _ => &shared.direct,
    };
    shared.stats.forwarded.inc();
    let idle = shared.timeouts.idle;
    let req = req.map(|body| {
        let metered = Metered::new(body, line.bytes_up.clone(), None);
        Paced::new(metered, idle, "client")
            .map_err(|e| Box::new(ClientBodyError(e)) as BoxError)
            .boxed()
    });
    let after = shared.timeouts.response;
    let mut response = tokio::time::timeout(after, pool.request(req))
        .await
        .map_err(|_| ProxyError::NoResponse { side, after })?
        .map_err(|err| client_error(side, err))?;
    parent_refusal(shared, side, response.status())?;
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
    let sender = if side == Side::Parent {
        "parent"
    } else {
        "origin"
    };
    Ok(response.map(|body| Paced::new(body, idle, sender).boxed()))
}

/// A parent's 407 is about modgate's credentials to it, never the
/// client's: answered as the parent's refusal (502), naming the parent
/// and the user modgate logged in as.
fn parent_refusal(shared: &Shared, side: Side, status: StatusCode) -> Result<(), ProxyError> {
    if side == Side::Parent && status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        return Err(ProxyError::Dial(Arc::new(shared.dialer.refused_login())));
    }
    Ok(())
}

/// Validates an absolute-form request, drops any `user:pass@` from its
/// target (credentials never travel further, nor into logs or answers),
/// and returns where it goes.
fn check_request(req: &mut Request<Incoming>) -> Result<Target, ProxyError> {
    let uri = req.uri();
    if uri.scheme_str() != Some("http") {
        let shown = mask_userinfo(&uri.to_string()).into_owned();
        return Err(ProxyError::BadRequest(format!(
            "cannot forward {shown}: only http:// is forwarded, https:// goes through CONNECT"
        )));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| ProxyError::BadRequest("request target has no host".into()))?;
    // As written (an empty port means the default): Target::parse, the one
    // place ports are read, refuses `65536`, `0x19` or `+80`, which the
    // URI parser would quietly turn into port 80.
    let host_port = match written_port(authority.as_str()) {
        Some(port) => format!("{}:{port}", authority.host()),
        None => authority.host().to_string(),
    };
    if let Some(conflict) = headers::framing_conflict(req.headers()) {
        return Err(ProxyError::BadRequest(format!(
            "bad message framing: {conflict}"
        )));
    }
    let target = Target::parse(&host_port, Some(80))
        .map_err(|err| ProxyError::BadRequest(format!("request target {host_port}: {err}")))?;
    if authority.as_str() != host_port {
        let mut parts = req.uri().clone().into_parts();
        parts.authority = http::uri::Authority::try_from(host_port.as_str()).ok();
        *req.uri_mut() = http::Uri::from_parts(parts)
            .map_err(|e| ProxyError::BadRequest(format!("request target: {e}")))?;
    }
    Ok(target)
}

/// The port as written after the host of `authority` (`None`: no port,
/// or an empty one, which means the default).
fn written_port(authority: &str) -> Option<&str> {
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.ends_with(']') {
        return None;
    }
    host_port
        .rsplit_once(':')
        .map(|(_, port)| port)
        .filter(|port| !port.is_empty())
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
        let line = format!(
            "TRACE {} HTTP/1.1\r\n\r\n",
            mask_userinfo(&req.uri().to_string())
        );
        let mut r = Response::new(text(line));
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

/// The side that failed, from the pooled client's error: a dial error says
/// it itself; anything after connecting is the `side` the request went to.
fn client_error(side: Side, err: hyper_util::client::legacy::Error) -> ProxyError {
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        if let Some(dial) = cause.downcast_ref::<Arc<DialError>>() {
            return ProxyError::Dial(dial.clone());
        }
        if let Some(body) = cause.downcast_ref::<ClientBodyError>() {
            return ProxyError::BadRequest(body.to_string());
        }
        source = cause.source();
    }
    let detail = std::error::Error::source(&err).map_or_else(|| err.to_string(), |s| s.to_string());
    ProxyError::Upstream { side, detail }
}

/// Relays an upgraded (WebSocket) connection until either side closes, no
/// byte moves for `proxy.idle_timeout`, or the shutdown grace period ends.
async fn relay_upgraded(shared: &Shared, client: OnUpgrade, upstream: OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!("upgrade failed: {err}");
            return;
        }
    };
    let activity = Arc::new(Activity::new());
    let mut client = Watched::new(TokioIo::new(client), activity.clone());
    let mut upstream = TokioIo::new(upstream);
    let end = tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match result {
            Ok(_) => "closed",
            Err(_) => "error",
        },
        () = activity.idle_for(shared.timeouts.idle) => "idle timeout",
        () = shared.force_stop.cancelled() => "shutdown",
    };
    tracing::debug!(end, "upgraded connection ended");
}
