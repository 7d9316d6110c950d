//! Body types: what modgate answers with (a relayed stream or a short text),
//! and a metering wrapper that counts bytes and reports when the body ends.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

pub type Body = BoxBody<Bytes, hyper::Error>;

pub fn text(message: impl Into<Bytes>) -> Body {
    Full::new(message.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A `text/plain` answer with `status`: modgate's own short replies.
pub fn plain_text(status: StatusCode, message: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(text(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

type OnEnd = Box<dyn FnOnce(u64) + Send + Sync>;

/// Counts the data bytes of a streamed body; `on_end` runs once, when the
/// body is finished or dropped (client gone), with the total.
pub struct Metered<B> {
    inner: B,
    count: Arc<AtomicU64>,
    on_end: Option<OnEnd>,
}

impl<B> Metered<B> {
    pub fn new(inner: B, count: Arc<AtomicU64>, on_end: Option<OnEnd>) -> Self {
        Metered {
            inner,
            count,
            on_end,
        }
    }
}

impl<B> http_body::Body for Metered<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Metered<B> {
    fn drop(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end(self.count.load(Ordering::Relaxed));
        }
    }
}
