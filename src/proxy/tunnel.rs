//! Byte relay between two TCP streams for CONNECT tunnels (and, through
//! tokio's copy, between a client and a TLS upstream).
//!
//! An idle tunnel holds no copy buffer: each direction waits for readiness
//! and takes a buffer only while bytes flow, returning it as soon as the
//! socket would block. Half-close is relayed (EOF on one side shuts down
//! writing on the other). The tunnel ends when both directions finished, on
//! an error, after `idle` with no bytes either way, or when `stop` fires.

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::idle::{Activity, Watched};

/// The buffer a direction takes when bytes arrive after a pause.
const BUF_SIZE: usize = 64 * 1024;
/// The most it grows to while reads keep filling it (bulk transfers):
/// fewer, larger reads and writes, so fewer wake-ups of each peer per byte.
const BULK_BUF_SIZE: usize = 1024 * 1024;

/// How a tunnel ended and what it carried.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Client to upstream.
    pub up: u64,
    /// Upstream to client.
    pub down: u64,
    pub end: &'static str,
}

/// Relays until done; `*_early` are bytes already read from the other side
/// (a pipelined TLS hello, a parent proxy's first bytes).
pub async fn relay(
    client: &TcpStream,
    client_early: &[u8],
    upstream: &TcpStream,
    upstream_early: &[u8],
    idle: Duration,
    stop: &CancellationToken,
) -> Outcome {
    let activity = Activity::new();
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let pumps = async {
        write_all(upstream, client_early).await?;
        write_all(client, upstream_early).await?;
        tokio::try_join!(
            pump(client, upstream, &up, &activity),
            pump(upstream, client, &down, &activity),
        )
    };
    let end = ended(pumps, &activity, idle, stop).await;
    Outcome {
        up: up.load(Ordering::Relaxed) + client_early.len() as u64,
        down: down.load(Ordering::Relaxed) + upstream_early.len() as u64,
        end,
    }
}

/// Relays between the client and an upstream that is not a bare socket
/// (TLS to an https:// parent): the same ends as [`relay`], through
/// tokio's copy, which holds a buffer per direction for the tunnel's life.
pub async fn relay_stream<U: AsyncRead + AsyncWrite + Unpin>(
    client: TcpStream,
    client_early: &[u8],
    mut upstream: U,
    upstream_early: &[u8],
    idle: Duration,
    stop: &CancellationToken,
) -> Outcome {
    let activity = Arc::new(Activity::new());
    let mut client = Watched::new(client, activity.clone());
    let pumps = async {
        upstream.write_all(client_early).await?;
        client.write_all(upstream_early).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await
    };
    let end = ended(pumps, &activity, idle, stop).await;
    Outcome {
        up: activity.read.load(Ordering::Relaxed) + client_early.len() as u64,
        down: activity.written.load(Ordering::Relaxed),
        end,
    }
}

/// How a tunnel whose directions are `pumps` ended: both done, an error,
/// `idle` with no bytes, or `stop`.
async fn ended<T>(
    pumps: impl Future<Output = io::Result<T>>,
    activity: &Activity,
    idle: Duration,
    stop: &CancellationToken,
) -> &'static str {
    tokio::select! {
        result = pumps => match result {
            Ok(_) => "closed",
            Err(_) => "error",
        },
        () = activity.idle_for(idle) => "idle timeout",
        () = stop.cancelled() => "shutdown",
    }
}

async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    moved: &AtomicU64,
    activity: &Activity,
) -> io::Result<()> {
    loop {
        src.readable().await?;
        // Read into spare capacity: nothing is zeroed first.
        let mut buf = bytes::BytesMut::with_capacity(BUF_SIZE);
        loop {
            if buf.len() == buf.capacity() && buf.capacity() < BULK_BUF_SIZE {
                buf = bytes::BytesMut::with_capacity(buf.capacity() * 4);
            }
            buf.clear();
            match src.try_read_buf(&mut buf) {
                Ok(0) => {
                    // Relay the half-close; the peer may still answer.
                    let _ = socket2::SockRef::from(dst).shutdown(Shutdown::Write);
                    return Ok(());
                }
                Ok(n) => {
                    write_all(dst, &buf[..n]).await?;
                    moved.fetch_add(n as u64, Ordering::Relaxed);
                    activity.touch();
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => return Err(err),
            }
        }
    }
}

async fn write_all(dst: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        dst.writable().await?;
        match dst.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
