//! What went wrong while serving a request, and which side it was on: the
//! client (400/407), policy (403), the origin or the parent proxy (502/504),
//! or modgate itself (500). The status follows from the variant, never from
//! message text.

use std::sync::Arc;
use std::time::Duration;

use http::header::{CONNECTION, PROXY_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use crate::message::{Body, plain_text};
use crate::upstream::{DialError, Side};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The client sent something we cannot act on (400).
    #[error("{0}")]
    BadRequest(String),
    /// The request head is larger than `proxy.max_header_size` (431).
    #[error("the request head is {size} bytes, more than proxy.max_header_size ({max} bytes)")]
    HeadTooLarge { size: usize, max: usize },
    /// Policy says no (403); the text names the rule.
    #[error("{0}")]
    Forbidden(String),
    /// Proxy credentials missing or wrong (407).
    #[error("proxy authentication required")]
    AuthRequired,
    /// The origin or the parent could not be reached (403/502/504 by cause).
    #[error(transparent)]
    Dial(Arc<DialError>),
    /// The far side broke the exchange after connecting (502).
    #[error("{side} failed: {detail}")]
    Upstream { side: Side, detail: String },
    /// The far side sent no response head in time (504).
    #[error("{side} sent no response within {after:?}")]
    NoResponse { side: Side, after: Duration },
    /// modgate itself could not do what was asked (500).
    #[error("modgate: {0}")]
    Internal(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::AuthRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ProxyError::Dial(err) => err.status(),
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::NoResponse { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Which side failed, for the log: client, policy, origin, parent, mirror or modgate.
    pub fn side(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::HeadTooLarge { .. }
            | ProxyError::AuthRequired => "client",
            ProxyError::Forbidden(_) => "policy",
            ProxyError::Dial(err) => side_name(err.side),
            ProxyError::Upstream { side, .. } | ProxyError::NoResponse { side, .. } => {
                side_name(*side)
            }
            ProxyError::Internal(_) => "modgate",
        }
    }

    /// A short `text/plain` answer.
    pub fn response(&self) -> Response<Body> {
        let mut response = plain_text(self.status(), format!("modgate: {self}\n"));
        let headers = response.headers_mut();
        match self {
            ProxyError::AuthRequired => {
                headers.insert(
                    PROXY_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"modgate\""),
                );
            }
            ProxyError::BadRequest(_) | ProxyError::HeadTooLarge { .. } => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Origin => "origin",
        Side::Parent => "parent",
        Side::Mirror => "mirror",
    }
}

impl From<DialError> for ProxyError {
    fn from(err: DialError) -> Self {
        ProxyError::Dial(Arc::new(err))
    }
}
