//! Body types: what modgate answers with (a relayed stream or a short text),
//! a metering wrapper that counts bytes and reports when the body ends, and
//! a pacing wrapper that ends a body whose sender went quiet.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Why a body ended early: the side that failed says so in the message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub type Body = BoxBody<Bytes, BoxError>;

/// The client's request body failed (malformed chunked framing, a client
/// gone quiet): marks the error so that whoever sent the body on can
/// answer it as the client's fault, never the origin's.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body: {0}")]
pub struct ClientBodyError(pub BoxError);

/// A body fed by a task: each item is a chunk, or the error that ends the
/// body (the client then sees the response cut, never a short file). The
/// body ends when the sender is dropped.
pub fn channel(capacity: usize) -> (tokio::sync::mpsc::Sender<Result<Bytes, BoxError>>, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity);
    (tx, ChannelBody { rx }.boxed())
}

struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|chunk| chunk.map(Frame::data)))
    }
}

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

/// All of `body`, refused past `max` bytes.
pub async fn whole(mut body: Body, max: usize) -> Result<Bytes, String> {
    let mut all = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if all.len() + data.len() > max {
                return Err(format!("larger than {max} bytes"));
            }
            all.extend_from_slice(&data);
        }
    }
    Ok(all.freeze())
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

/// A relayed body whose sender must keep sending: once modgate has waited
/// `idle` for its next frame, the body ends with an error naming `side`
/// (the connection is closed, not held). Time the receiver spends not
/// asking (a slow client) does not count.
pub struct Paced<B> {
    inner: B,
    idle: Duration,
    side: &'static str,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// Waiting for a frame: the timer runs.
    waiting: bool,
}

impl<B> Paced<B> {
    pub fn new(inner: B, idle: Duration, side: &'static str) -> Self {
        Paced {
            inner,
            idle,
            side,
            timer: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
        }
    }
}

impl<B> http_body::Body for Paced<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if !this.waiting {
            this.waiting = true;
            let deadline = tokio::time::Instant::now() + this.idle;
            this.timer.as_mut().reset(deadline);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let (side, idle) = (this.side, this.idle);
                let stalled = format!("{side} sent nothing for {idle:?} (proxy.idle_timeout)");
                Poll::Ready(Some(Err(stalled.into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The timer counts only while waiting for the sender: a body that
    /// stalls ends after `idle`; a receiver slow to ask costs nothing.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_sender_ends_the_body_after_the_idle_timeout() {
        let (tx, body) = channel(4);
        let idle = Duration::from_secs(5);
        let mut paced = Paced::new(body, idle, "origin");
        tx.send(Ok(Bytes::from_static(b"a"))).await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await; // a slow receiver
        let first = paced.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        let started = tokio::time::Instant::now();
        let stalled = paced.frame().await.unwrap().unwrap_err();
        assert_eq!(started.elapsed(), idle);
        assert!(
            stalled.to_string().contains("origin sent nothing"),
            "{stalled}"
        );
        drop(tx);
    }
}
