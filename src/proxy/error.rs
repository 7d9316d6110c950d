//! What went wrong while serving a request, and which side it was on; the
//! status the client gets follows from the variant, never from message text.

use std::sync::Arc;

use http::header::{CONNECTION, PROXY_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use super::body::{Body, plain_text};
use crate::upstream::DialError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The client sent something we cannot act on (400).
    #[error("{0}")]
    BadRequest(String),
    /// Policy says no (403); the text names the rule.
    #[error("{0}")]
    Forbidden(String),
    /// Proxy credentials missing or wrong (407).
    #[error("proxy authentication required")]
    AuthRequired,
    /// The destination could not be reached (403/502/504 by cause).
    #[error(transparent)]
    Dial(Arc<DialError>),
    /// The upstream broke the exchange after connecting (502).
    #[error("upstream failed: {0}")]
    Upstream(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::AuthRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ProxyError::Dial(err) => err.status(),
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
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
            ProxyError::BadRequest(_) => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

impl From<DialError> for ProxyError {
    fn from(err: DialError) -> Self {
        ProxyError::Dial(Arc::new(err))
    }
}
