//! The pooled keep-alive HTTP/1 client used to forward plain http:// requests,
//! either straight to origins or to the parent proxy (absolute-form).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::{DialError, Dialer, Failure, Side, Stream};
use crate::rules::{Exemption, Target};
use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

pub type HttpClient = Client<Connector, crate::message::Body>;

/// Builds a pooled client whose connections come from `dialer`, directly or
/// through the parent proxy.
pub fn new_client(dialer: Arc<Dialer>, via_parent: bool) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .pool_timer(TokioTimer::new())
        .build(Connector { dialer, via_parent })
}

/// Dials with the [`Dialer`], so forwarding obeys the same deny rules and
/// timeouts as tunnels.
#[derive(Clone)]
pub struct Connector {
    dialer: Arc<Dialer>,
    /// Connect to the parent proxy instead of the URI's host.
    via_parent: bool,
}

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = Arc<DialError>;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, Arc<DialError>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Arc<DialError>>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let dialer = self.dialer.clone();
        let via_parent = self.via_parent;
        Box::pin(async move {
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
            let target = Target::parse(authority, Some(80)).map_err(|e| {
                Arc::new(DialError {
                    side: Side::Origin,
                    target: authority.to_string(),
                    failure: Failure::BadAddress(e.to_string()),
                })
            })?;
            let stream = if via_parent {
                dialer.parent_connection(&target).await
            } else {
                let direct = dialer.direct(Side::Origin, &target, Exemption::None);
                direct.await.map(Stream::Tcp)
            };
            let stream = stream.map_err(Arc::new)?;
            Ok(Conn::new(stream, via_parent))
        })
    }
}

/// A dialled connection; tells hyper whether it leads to a proxy, so that
/// requests on it are written in absolute-form.
pub struct Conn {
    io: TokioIo<Stream>,
    via_parent: bool,
}

impl Conn {
    pub fn new(stream: Stream, via_parent: bool) -> Conn {
        Conn {
            io: TokioIo::new(stream),
            via_parent,
        }
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new().proxy(self.via_parent)
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
