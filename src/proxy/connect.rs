//! CONNECT: decide, dial first (only a connected upstream gets `200`), then
//! relay bytes once the client's connection is handed over by hyper.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::{Body, empty};
use super::{ProxyError, Shared, Slot, intercept, tunnel};
use crate::rules::{Action, Kind, Target, TargetError, decide};

/// A dialled upstream, ready to be relayed.
struct Opened {
    /// The upstream connection; `None` when intercepting (nothing is dialled).
    stream: Option<TcpStream>,
    /// The target host, for interception.
    host: String,
    /// Bytes the parent proxy sent after its `200`.
    early: Bytes,
    action: Action,
}

pub async fn handle(
    shared: &Arc<Shared>,
    client: SocketAddr,
    slot: Slot,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let opened = match open(shared, client, &authority).await {
        Ok(opened) => opened,
        Err(err) => {
            tracing::info!(%client, method = "CONNECT", target = %authority, status = err.status().as_u16(), reason = %err, "tunnel refused");
            return err.response();
        }
    };
    shared.stats.tunnels.inc();
    let task_shared = shared.clone();
    shared.tasks.spawn(async move {
        let _slot = slot;
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                relay(&task_shared, upgraded, opened, client, &authority, started).await;
            }
            Err(err) => tracing::debug!(%client, target = %authority, "client left before the tunnel: {err}"),
        }
    });
    Response::new(empty())
}

/// Checks the target and policy, then dials (directly or via the parent).
async fn open(shared: &Shared, client: SocketAddr, authority: &str) -> Result<Opened, ProxyError> {
    let target = Target::parse(authority, None).map_err(|err| match err {
        TargetError::MissingPort => ProxyError::BadRequest(format!(
            "CONNECT target {authority:?} needs a port (host:port)"
        )),
        other => ProxyError::BadRequest(format!("CONNECT target {authority:?}: {other}")),
    })?;
    let decision = decide(&shared.policy, client.ip(), &target, Kind::Connect);
    match decision.action {
        Action::Deny(_) => {
            shared.stats.denied.inc();
            Err(ProxyError::Forbidden(decision.rule))
        }
        Action::Intercept => Ok(Opened {
            stream: None,
            early: Bytes::new(),
            action: Action::Intercept,
            host: target.host.to_string(),
        }),
        Action::Direct => Ok(Opened {
            stream: Some(shared.dialer.direct(&target).await?),
            early: Bytes::new(),
            action: Action::Direct,
            host: target.host.to_string(),
        }),
        Action::Parent => {
            let (stream, early) = shared.dialer.parent_tunnel(&target).await?;
            shared.stats.via_parent.inc();
            Ok(Opened {
                stream: Some(stream),
                early,
                action: Action::Parent,
                host: target.host.to_string(),
            })
        }
    }
}

async fn relay(
    shared: &Shared,
    upgraded: Upgraded,
    opened: Opened,
    client: SocketAddr,
    target: &str,
    started: Instant,
) {
    // The server side always runs on a plain TcpStream, so this succeeds;
    // recovering it lets the relay wait on readiness without buffers.
    let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => parts,
        Err(_) => {
            tracing::error!(%client, %target, "tunnel: unexpected connection type");
            return;
        }
    };
    let client_stream = parts.io.into_inner();
    // Bytes the client pipelined after CONNECT (a TLS hello), copied out:
    // `read_buf` shares hyper's whole read buffer, which an idle tunnel
    // must not keep alive.
    let early = Bytes::copy_from_slice(&parts.read_buf);
    drop(parts.read_buf);
    let Some(upstream) = opened.stream else {
        if let Some(mitm) = &shared.mitm {
            intercept::serve(shared, mitm, client, &opened.host, client_stream, early).await;
        }
        return;
    };
    let outcome = tunnel::relay(
        &client_stream,
        &early,
        &upstream,
        &opened.early,
        shared.idle_timeout,
        &shared.force_stop,
    )
    .await;
    tracing::info!(
        %client,
        method = "CONNECT",
        %target,
        decision = %opened.action,
        status = 200,
        bytes_up = outcome.up,
        bytes_down = outcome.down,
        duration_ms = started.elapsed().as_millis() as u64,
        end = outcome.end,
        "tunnel"
    );
}
