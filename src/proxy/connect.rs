//! CONNECT: the target is parsed, routed and opened by the [`pipeline`]
//! (only a connected upstream gets `200`), then the client's connection,
//! handed over by hyper, is driven by the same pipeline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::pipeline::{self, Inbound};
use super::{ProxyError, Shared, Slot};
use crate::access::{self, User};
use crate::message::{Body, empty};
use crate::rules::{Kind, Target, TargetError, mask_userinfo};

pub async fn handle(
    shared: &Arc<Shared>,
    client: SocketAddr,
    slot: Slot,
    req: Request<Incoming>,
) -> Response<Body> {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let user = req.extensions().get::<User>().cloned();
    let target = match parse_target(&authority) {
        Ok(target) => target,
        Err(err) => {
            log_unparsed(shared, client, user.as_ref(), &authority, &err);
            return err.response();
        }
    };
    let inbound = Inbound {
        client,
        target,
        kind: Kind::Connect,
        original: None,
        started: Instant::now(),
        user,
    };
    let decision = pipeline::decide(shared, &inbound).await;
    let outbound = match pipeline::open(shared, &inbound, &decision).await {
        Ok(outbound) => outbound,
        Err(err) => {
            pipeline::log_refused(shared, &inbound, &decision, &err);
            return err.response();
        }
    };
    let task_shared = shared.clone();
    shared.tasks.spawn(async move {
        let _slot = slot;
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let Some((stream, early)) = client_stream(upgraded) else {
                    tracing::error!(%client, "tunnel: unexpected connection type");
                    return;
                };
                pipeline::drive(&task_shared, &inbound, outbound, &decision, stream, early).await;
            }
            Err(err) => tracing::debug!(%client, target = %inbound.target, "client left before the tunnel: {err}"),
        }
    });
    Response::new(empty())
}

/// The access line of a CONNECT whose target could not be read.
fn log_unparsed(
    shared: &Shared,
    client: SocketAddr,
    user: Option<&User>,
    authority: &str,
    err: &ProxyError,
) {
    let shown = mask_userinfo(authority);
    let reason = err.to_string();
    let record = access::Record {
        kind: access::Kind::Tunnel,
        client,
        user: user.map(|u| &*u.0),
        method: "CONNECT",
        target: &shown,
        original: None,
        decision: "-",
        rule: "-",
        mirror: None,
        cache: None,
        status: err.status().as_u16(),
        bytes_up: 0,
        bytes_down: 0,
        duration: std::time::Duration::ZERO,
        side: err.side(),
        end: &reason,
    };
    access::log(&shared.stats, &record);
}

fn parse_target(authority: &str) -> Result<Target, ProxyError> {
    Target::parse(authority, None).map_err(|err| match err {
        TargetError::MissingPort => ProxyError::BadRequest(format!(
            "CONNECT target {:?} needs a port (host:port)",
            mask_userinfo(authority)
        )),
        other => ProxyError::BadRequest(format!(
            "CONNECT target {:?}: {other}",
            mask_userinfo(authority)
        )),
    })
}

/// The client's TCP stream behind hyper's upgrade, and the bytes it
/// pipelined after CONNECT (a TLS hello), copied out: `read_buf` shares
/// hyper's whole read buffer, which an idle tunnel must not keep alive.
fn client_stream(upgraded: Upgraded) -> Option<(TcpStream, Bytes)> {
    // The server side always runs on a plain TcpStream, so this succeeds;
    // recovering it lets the relay wait on readiness without buffers.
    let parts = upgraded.downcast::<TokioIo<TcpStream>>().ok()?;
    let early = Bytes::copy_from_slice(&parts.read_buf);
    drop(parts.read_buf);
    Some((parts.io.into_inner(), early))
}
