//! Stopping the modgate binary: SIGTERM drains (a tunnel in flight keeps
//! working within `proxy.shutdown_grace`, new connections are refused, the
//! exit code is 0 once it is done); a second signal exits at once.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::netns::Modgate;
use common::{echo_server, open_tunnel, round_trip};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn gateway(work: &tempfile::TempDir, origin: SocketAddr) -> Modgate {
    let config = work.path().join("modgate.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = [\"127.0.0.1:0\"]\ndeny_destinations = []\nconnect_ports = [{}]\n\
             shutdown_grace = \"30s\"\n[intercept]\nenabled = false\n",
            origin.port()
        ),
    )
    .unwrap();
    Modgate::spawn(
        None,
        &["run", "--config", config.to_str().unwrap()],
        None,
        1,
    )
    .await
}

/// Whether a new client is still served: refused, reset or closed is "no".
async fn serves(proxy: SocketAddr, origin: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(proxy).await else {
        return false;
    };
    let request = format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut answer = [0u8; 12];
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut answer)).await;
    matches!(read, Ok(Ok(n)) if n > 0 && answer.starts_with(b"HTTP/1.1 200"))
}

/// A gateway with a working tunnel in flight, sent SIGTERM and draining.
async fn draining() -> (tempfile::TempDir, SocketAddr, Modgate, TcpStream) {
    let origin = echo_server().await;
    let work = tempfile::tempdir().unwrap();
    let modgate = gateway(&work, origin).await;
    let mut stream = open_tunnel(modgate.addr("explicit proxy"), origin).await;
    round_trip(&mut stream, b"before").await;
    modgate.signal(libc::SIGTERM);
    modgate.log_when(|l| l.contains("shutting down")).await;
    (work, origin, modgate, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_exits_0() {
    let (_work, origin, mut modgate, mut stream) = draining().await;
    let proxy = modgate.addr("explicit proxy");
    assert!(
        !serves(proxy, origin).await,
        "a new connection was served while draining"
    );
    // The tunnel in flight goes on, well within the grace period.
    for i in 0..20 {
        round_trip(&mut stream, format!("during {i} ").repeat(1000).as_bytes()).await;
    }
    assert!(
        modgate.exited(Duration::from_millis(300)).await.is_none(),
        "exited with a tunnel in flight"
    );
    drop(stream);
    let status = modgate
        .exited(Duration::from_secs(10))
        .await
        .expect("exits once drained");
    assert_eq!(status.code(), Some(0), "{}", modgate.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let (_work, _, mut modgate, mut stream) = draining().await;
    modgate.signal(libc::SIGINT);
    let status = modgate
        .exited(Duration::from_secs(5))
        .await
        .expect("exits at once, though the grace period is 30 s");
    assert_eq!(status.code(), Some(1));
    // The tunnel was cut with the process (closed or reset, not left hanging).
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the tunnel outlived the process");
}
