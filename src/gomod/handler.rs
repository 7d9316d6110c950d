//! Serves intercepted Go module requests: `supported` answered here, private
//! modules answered 404 here (never sent anywhere), everything else from the
//! mirrors in health order with failover, streamed to the client.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::mirrors::MirrorSet;
use super::path::{Route, classify, module_of};
use crate::config::{GomodConfig, OnMirrorFailure};
use crate::proxy::{Body, plain_text};
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
    pub fn new(
        config: &GomodConfig,
        dialer: Arc<Dialer>,
        no_proxy: crate::rules::NoProxy,
    ) -> Result<Gomod, GomodError> {
        let tls = client_config(config.mirror_ca_file.as_deref())?;
        Ok(Gomod {
            proxy_mirrors: MirrorSet::new(&config.mirrors, config.demote_for),
            sumdb_mirrors: MirrorSet::new(&config.sumdb_mirrors, config.demote_for),
            client: MirrorClient::new(dialer, no_proxy, tls, config.mirror_timeout),
            config: config.clone(),
        })
    }

    pub fn is_sumdb_host(&self, host: &str) -> bool {
        self.config.sumdb_hosts.iter().any(|h| h == host)
    }

    /// Serves `req`, which arrived for `host` (a proxy or sumdb host).
    pub async fn serve(&self, host: &str, req: Request<Incoming>) -> Response<Body> {
        let on_sumdb = self.is_sumdb_host(host);
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let response = self.route(host, on_sumdb, &req, &path).await;
        tracing::info!(host, method = %req.method(), path, status = response.status().as_u16(), "gomod");
        response
    }

    async fn route(
        &self,
        host: &str,
        on_sumdb: bool,
        req: &Request<Incoming>,
        path: &str,
    ) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return plain_text(
                StatusCode::METHOD_NOT_ALLOWED,
                "modgate: module requests are GET or HEAD\n",
            );
        }
        let route = classify(on_sumdb, path, &self.config.sumdb_hosts);
        match module_of(&route) {
            Err(reason) => {
                return plain_text(StatusCode::BAD_REQUEST, format!("modgate: {reason}\n"));
            }
            Ok(Some(module)) => {
                if let Some(pattern) = self.config.private.find(&module) {
                    let reason = format!(
                        "modgate: {module} matches gomod.private {pattern:?}; not sent to any mirror\n"
                    );
                    return plain_text(StatusCode::NOT_FOUND, reason);
                }
            }
            Ok(None) => {}
        }
        match route {
            Route::Supported => plain_text(StatusCode::OK, ""),
            Route::NotFound(reason) => {
                plain_text(StatusCode::NOT_FOUND, format!("modgate: {reason}\n"))
            }
            Route::Proxy(p) => self.fetch(&self.proxy_mirrors, host, p).await,
            Route::Sumdb(rest) => self.fetch(&self.sumdb_mirrors, host, rest).await,
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

    pub fn mirrors_for(&self, sumdb: bool) -> Vec<String> {
        let set = if sumdb {
            &self.sumdb_mirrors
        } else {
            &self.proxy_mirrors
        };
        set.bases().map(str::to_string).collect()
    }
}

/// Streams a mirror's answer; a mirror failing mid-body ends the response
/// with an error (never a silent truncation).
fn relay(response: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    crate::proxy::strip_hop_by_hop(&mut parts.headers);
    parts.version = http::Version::HTTP_11;
    Response::from_parts(parts, body.boxed())
}
