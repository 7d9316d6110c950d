//! The client toward Go module mirrors: pooled, HTTP/2 when the mirror
//! offers it, TLS with webpki + system roots (+ `gomod.mirror_ca_file`),
//! egress through the parent proxy unless `upstream.no_proxy` matches (the
//! same [`Via`] as clients' traffic), redirects followed (also cross-host)
//! but never from https to http. Every connection goes through the
//! [`Dialer`]'s egress check; only a configured mirror's own origin (scheme,
//! host, port) may be inside `deny_destinations`, never a redirect hop
//! elsewhere.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{LOCATION, USER_AGENT};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::client::Conn;
use super::dial::{Failure, Side};
use super::{DialError, Dialer, Stream};
use crate::rules::{Exemption, Target, Via, Way, mask_userinfo};

const MAX_REDIRECTS: usize = 5;

/// The most a mirror connection reads at once (hyper grows its buffer to
/// this while the socket keeps it full): a module zip then crosses the
/// cache in a few large pieces rather than many small ones.
const MAX_BUF: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("bad URL {0}")]
    Url(String),
    #[error("no response head within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Request(String),
    #[error("redirect refused: {0}")]
    Redirect(String),
}

pub struct MirrorClient {
    client: Client<HttpsConnector<EgressConnector>, Empty<Bytes>>,
    /// The client's connector, for probes that connect and send nothing.
    connector: HttpsConnector<EgressConnector>,
    /// Time allowed for each response head.
    timeout: Duration,
}

impl MirrorClient {
    /// `mirrors`: the configured base URLs, whose origins are admin-named.
    pub fn new(
        dialer: Arc<Dialer>,
        via: Via,
        mirrors: &[String],
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> MirrorClient {
        let origins = mirrors.iter().filter_map(|m| Origin::of(m)).collect();
        let egress = EgressConnector {
            dialer,
            via: Arc::new(via),
            admin_named: Arc::new(origins),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(egress);
        let connector = https.clone();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http1_max_buf_size(MAX_BUF)
            .build(https);
        MirrorClient {
            client,
            connector,
            timeout,
        }
    }

    /// Connects to the mirror at `base` the way a fetch would (egress
    /// check, parent, TLS) and closes again without a request: how long
    /// it took, or why it failed.
    pub async fn reach(&self, base: &str) -> Result<Duration, String> {
        use tower_service::Service;
        let uri: Uri = base.parse().map_err(|_| format!("bad URL {base}"))?;
        let mut connector = self.connector.clone();
        let started = std::time::Instant::now();
        let connect = async {
            std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
            connector.call(uri).await
        };
        match tokio::time::timeout(self.timeout, connect).await {
            Err(_) => Err(format!("no connection within {:?}", self.timeout)),
            Ok(Err(e)) => Err(crate::message::error_chain(e.as_ref())),
            Ok(Ok(_)) => Ok(started.elapsed()),
        }
    }

    /// GETs `url`, following redirects; any status is returned as is.
    pub async fn get(&self, url: &str) -> Result<Response<Incoming>, MirrorError> {
        let mut uri: Uri = url.parse().map_err(|_| MirrorError::Url(url.to_string()))?;
        for _ in 0..=MAX_REDIRECTS {
            let request = Request::get(uri.clone())
                .header(USER_AGENT, HeaderValue::from_static("modgate"))
                .body(Empty::new())
                .map_err(|e| MirrorError::Url(e.to_string()))?;
            let response = tokio::time::timeout(self.timeout, self.client.request(request))
                .await
                .map_err(|_| MirrorError::Timeout(self.timeout))?
                .map_err(|e| MirrorError::Request(crate::message::error_chain(&e)))?;
            if !response.status().is_redirection()
                || response.status() == http::StatusCode::NOT_MODIFIED
            {
                return Ok(response);
            }
            uri = redirect_target(&uri, response.headers().get(LOCATION))?;
            tracing::debug!(to = %mask_userinfo(&uri.to_string()), "mirror redirect");
        }
        Err(MirrorError::Redirect(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }
}

/// Resolves a `Location` against `base`; refuses https -> http.
fn redirect_target(base: &Uri, location: Option<&HeaderValue>) -> Result<Uri, MirrorError> {
    let location = location
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| MirrorError::Redirect("redirect without Location".into()))?;
    let next: Uri = if location.starts_with('/') {
        let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
        let scheme = base.scheme_str().unwrap_or("https");
        format!("{scheme}://{authority}{location}").parse()
    } else {
        location.parse()
    }
    .map_err(|_| MirrorError::Redirect(format!("bad Location {location:?}")))?;
    match (base.scheme_str(), next.scheme_str()) {
        (Some("https"), Some("http")) => Err(MirrorError::Redirect(format!(
            "https -> http downgrade to {}",
            mask_userinfo(&next.to_string())
        ))),
        (_, Some("http" | "https")) => Ok(next),
        _ => Err(MirrorError::Redirect(format!(
            "unsupported Location {location:?}"
        ))),
    }
}

/// A scheme, host and port: what a mirror's base URL names.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    https: bool,
    target: Target,
}

impl Origin {
    fn of(url: &str) -> Option<Origin> {
        let uri: Uri = url.parse().ok()?;
        let https = uri.scheme_str() == Some("https");
        let target = Target::parse(
            uri.authority()?.as_str(),
            Some(if https { 443 } else { 80 }),
        )
        .ok()?;
        Some(Origin { https, target })
    }
}

/// TCP toward mirrors: direct, or a CONNECT tunnel through the parent proxy.
#[derive(Clone)]
pub struct EgressConnector {
    dialer: Arc<Dialer>,
    via: Arc<Via>,
    /// The configured mirrors' origins: dialled even inside `deny_destinations`.
    admin_named: Arc<Vec<Origin>>,
}

impl tower_service::Service<Uri> for EgressConnector {
    /// Requests on it are origin-form: through a parent, it is a tunnel.
    type Response = Conn;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let https = uri.scheme_str() != Some("http");
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
            let target =
                Target::parse(authority, Some(if https { 443 } else { 80 })).map_err(|e| {
                    DialError {
                        side: Side::Mirror,
                        target: mask_userinfo(authority).into_owned(),
                        failure: Failure::BadAddress(e.to_string()),
                    }
                })?;
            let origin = Origin { https, target };
            let exemption = if connector.admin_named.contains(&origin) {
                Exemption::AdminNamed
            } else {
                Exemption::None
            };
            let target = origin.target;
            // The office PAC file decides for mirrors as for clients.
            if let Some(pac) = &connector.via.pac {
                let host = target.host.to_string();
                pac.prepare(&format!("https://{host}/"), &host).await;
            }
            let stream = match connector.via.way(&target).0 {
                Way::Parent => {
                    let (stream, early) = connector
                        .dialer
                        .parent_tunnel(Side::Mirror, &target, exemption)
                        .await?;
                    if !early.is_empty() {
                        return Err(DialError {
                            side: Side::Parent,
                            target: target.to_string(),
                            failure: Failure::ParentProtocol("data before the client spoke".into()),
                        });
                    }
                    stream
                }
                Way::Direct => {
                    let direct = connector.dialer.direct(Side::Mirror, &target, exemption);
                    Stream::Tcp(direct.await?)
                }
            };
            Ok(Conn::new(stream, false))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects() {
        let base: Uri = "https://m.example/a/b".parse().unwrap();
        let loc = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            redirect_target(&base, Some(&loc("/c"))).unwrap(),
            "https://m.example/c"
        );
        assert_eq!(
            redirect_target(&base, Some(&loc("https://cdn.example/z"))).unwrap(),
            "https://cdn.example/z"
        );
        assert!(redirect_target(&base, Some(&loc("http://cdn.example/z"))).is_err());
        assert!(redirect_target(&base, Some(&loc("ftp://x/"))).is_err());
        assert!(redirect_target(&base, None).is_err());
        let plain: Uri = "http://m.example/a".parse().unwrap();
        assert!(redirect_target(&plain, Some(&loc("https://m.example/b"))).is_ok());
    }
}
