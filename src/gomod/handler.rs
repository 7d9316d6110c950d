//! Serves intercepted Go module requests: `supported` answered here, private
//! modules answered 404 here (never sent anywhere), everything else from the
//! mirrors in health order with failover, streamed to the client.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use std::net::SocketAddr;
use std::time::Instant;

use super::mirrors::MirrorSet;
use super::path::{Plan, Route, plan};
use crate::config::{GomodConfig, OnMirrorFailure};
use crate::message::{Body, plain_text};
use crate::rules::Via;
use crate::tls::roots::{RootsError, client_config};
use crate::upstream::{Dialer, MirrorClient};

/// Everything the handler needs; built once per config.
pub struct Gomod {
    config: GomodConfig,
    proxy_mirrors: MirrorSet,
    sumdb_mirrors: MirrorSet,
    client: MirrorClient,
}

#[derive(Debug, thiserror::Error)]
pub enum GomodError {
    #[error("gomod.mirror_ca_file: {0}")]
    Roots(#[from] RootsError),
}

/// The outcome of one mirror attempt that did not produce an answer.
enum Miss {
    NotFound(String),
    Failed(String),
}

impl Gomod {
    pub fn new(config: &GomodConfig, dialer: Arc<Dialer>, via: Via) -> Result<Gomod, GomodError> {
        let tls = client_config(config.mirror_ca_file.as_deref())?;
        // "origin" names the real hosts, which the admin named too.
        let origin = config
            .mirrors
            .iter()
            .chain(&config.sumdb_mirrors)
            .any(|m| m == "origin");
        let real_hosts = config.hosts().into_iter().filter(|_| origin);
        let admin_named: Vec<String> = config
            .mirrors
            .iter()
            .chain(&config.sumdb_mirrors)
            .cloned()
            .chain(real_hosts.map(|h| format!("https://{h}")))
            .collect();
        Ok(Gomod {
            proxy_mirrors: MirrorSet::new(&config.mirrors, config.demote_for),
            sumdb_mirrors: MirrorSet::new(&config.sumdb_mirrors, config.demote_for),
            client: MirrorClient::new(dialer, via, &admin_named, tls, config.mirror_timeout),
            config: config.clone(),
        })
    }

    /// Serves `req` from `client`, which arrived for `host` (a proxy or sumdb host).
    pub async fn serve(
        &self,
        client: SocketAddr,
        host: &str,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let started = Instant::now();
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let plan = plan(host, path, &self.config.sumdb_hosts, &self.config.private);
        let planned = plan.name();
        let response = if req.method() == Method::GET || req.method() == Method::HEAD {
            self.carry_out(host, plan).await
        } else {
            plain_text(
                StatusCode::METHOD_NOT_ALLOWED,
                "modgate: module requests are GET or HEAD\n",
            )
        };
        tracing::info!(
            %client, host, method = %req.method(), path, plan = planned,
            status = response.status().as_u16(),
            duration_ms = started.elapsed().as_millis() as u64,
            "gomod"
        );
        response
    }

    async fn carry_out(&self, host: &str, plan: Plan<'_>) -> Response<Body> {
        match plan {
            Plan::Invalid(reason) => {
                plain_text(StatusCode::BAD_REQUEST, format!("modgate: {reason}\n"))
            }
            Plan::Private { module, pattern } => plain_text(
                StatusCode::NOT_FOUND,
                format!(
                    "modgate: {module} matches gomod.private {pattern:?}; not sent to any mirror\n"
                ),
            ),
            Plan::Serve(Route::Supported) => plain_text(StatusCode::OK, ""),
            Plan::Serve(Route::NotFound(reason)) => {
                plain_text(StatusCode::NOT_FOUND, format!("modgate: {reason}\n"))
            }
            Plan::Serve(Route::Proxy(p)) => self.fetch(&self.proxy_mirrors, host, p).await,
            Plan::Serve(Route::Sumdb(rest)) => self.fetch(&self.sumdb_mirrors, host, rest).await,
        }
    }

    /// Tries each mirror in health order; the first 2xx is streamed back.
    async fn fetch(&self, set: &MirrorSet, host: &str, suffix: &str) -> Response<Body> {
        let mut misses = Vec::new();
        for index in set.order() {
            let base = set.base(index);
            let url = if base == "origin" {
                format!("https://{host}{suffix}")
            } else {
                format!("{base}{suffix}")
            };
            match self.client.get(&url).await {
                Ok(response) if response.status().is_success() => {
                    set.restore(index);
                    return relay(response);
                }
                Ok(response) => {
                    let status = response.status();
                    let miss = format!("{base}: {status}");
                    if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
                        misses.push(Miss::NotFound(miss));
                    } else {
                        if status.is_server_error() {
                            set.demote(index, &miss);
                        }
                        misses.push(Miss::Failed(miss));
                    }
                }
                Err(err) => {
                    let miss = format!("{base}: {err}");
                    set.demote(index, &miss);
                    misses.push(Miss::Failed(miss));
                }
            }
        }
        self.all_missed(&misses)
    }

    fn all_missed(&self, misses: &[Miss]) -> Response<Body> {
        let lines: Vec<&str> = misses
            .iter()
            .map(|m| match m {
                Miss::NotFound(s) | Miss::Failed(s) => s.as_str(),
            })
            .collect();
        let any_failed = misses.iter().any(|m| matches!(m, Miss::Failed(_)));
        if !any_failed {
            return plain_text(
                StatusCode::NOT_FOUND,
                format!("modgate: not found on any mirror ({})\n", lines.join("; ")),
            );
        }
        let status = match self.config.on_mirror_failure {
            OnMirrorFailure::NotFound => StatusCode::NOT_FOUND,
            OnMirrorFailure::BadGateway => StatusCode::BAD_GATEWAY,
        };
        plain_text(
            status,
            format!("modgate: every mirror failed ({})\n", lines.join("; ")),
        )
    }
}

/// Streams a mirror's answer; a mirror failing mid-body ends the response
/// with an error (never a silent truncation).
fn relay(response: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    crate::message::headers::strip_hop_by_hop(&mut parts.headers, None);
    parts.version = http::Version::HTTP_11;
    Response::from_parts(parts, body.boxed())
}
