//! The client toward Go module mirrors: pooled, HTTP/2 when the mirror
//! offers it, TLS with webpki + system roots (+ `gomod.mirror_ca_file`),
//! egress through the parent proxy unless `upstream.no_proxy` matches,
//! redirects followed (also cross-host) but never from https to http.

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
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::{DialError, Dialer};
use crate::rules::{NoProxy, Target};

const MAX_REDIRECTS: usize = 5;

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
    /// Time allowed for each response head.
    timeout: Duration,
}

impl MirrorClient {
    pub fn new(
        dialer: Arc<Dialer>,
        no_proxy: NoProxy,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> MirrorClient {
        let egress = EgressConnector {
            dialer,
            no_proxy: Arc::new(no_proxy),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(egress);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        MirrorClient { client, timeout }
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
                .map_err(|e| MirrorError::Request(error_chain(&e)))?;
            if !response.status().is_redirection()
                || response.status() == http::StatusCode::NOT_MODIFIED
            {
                return Ok(response);
            }
            uri = redirect_target(&uri, response.headers().get(LOCATION))?;
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
            "https -> http downgrade to {next}"
        ))),
        (_, Some("http" | "https")) => Ok(next),
        _ => Err(MirrorError::Redirect(format!(
            "unsupported Location {location:?}"
        ))),
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// TCP toward mirrors: direct, or a CONNECT tunnel through the parent proxy.
#[derive(Clone)]
pub struct EgressConnector {
    dialer: Arc<Dialer>,
    no_proxy: Arc<NoProxy>,
}

impl tower_service::Service<Uri> for EgressConnector {
    type Response = TokioIo<TcpStream>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let dialer = self.dialer.clone();
        let no_proxy = self.no_proxy.clone();
        Box::pin(async move {
            let default_port = if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            };
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
            let target = Target::parse(authority, Some(default_port))
                .map_err(|e| DialError::ParentProtocol(format!("mirror URL {uri}: {e}")))?;
            let via_parent = dialer.parent().is_some()
                && !no_proxy.matches(&target.host.to_string(), target.port);
            let stream = if via_parent {
                let (stream, early) = dialer.parent_tunnel(&target).await?;
                if !early.is_empty() {
                    return Err(DialError::ParentProtocol(
                        "data before the client spoke".into(),
                    ));
                }
                stream
            } else {
                dialer.trusted(&target).await?
            };
            Ok(TokioIo::new(stream))
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
