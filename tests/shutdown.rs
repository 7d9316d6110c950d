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
        .exited(Duration::from_secs(30))
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

/// An intercepted HTTP/2 download in flight when SIGTERM comes finishes
/// whole (its connection is told GOAWAY, not cut), `/readyz` answers 503
/// while draining, new clients are refused, and the exit code is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_intercepted_http2_download_finish() {
    use common::gateway::tree;
    use common::gomod::{Behaviour, Mirror};
    let modules = tree();
    // 11 MiB at 4 MiB/s: about three seconds in flight.
    let mirror = Mirror::start(modules.path().to_path_buf(), Behaviour::Throttled(4 << 20)).await;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("modgate.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = [\"127.0.0.1:0\"]\nallow_clients = [\"127.0.0.0/8\"]\n\
             shutdown_grace = \"30s\"\n[intercept]\nca_dir = {:?}\n\
             [gomod]\nmirrors = [\"{}\"]\nsumdb_mirrors = [\"{}\"]\nverify = \"off\"\n\
             [cache]\ndir = {:?}\n",
            work.path().join("certs"),
            mirror.url(),
            mirror.url(),
            work.path().join("cache"),
        ),
    )
    .unwrap();
    let args = ["run", "--config", config.to_str().unwrap()];
    let mut modgate = Modgate::spawn(None, &args, None, 1).await;
    let proxy = modgate.addr("explicit proxy");
    let admin = modgate.admin_addr().await;
    let ca = work.path().join("certs/modgate-ca.pem");
    let saved = work.path().join("big.zip");
    let zip = "/example.com/big/@v/v1.0.0.zip";
    let download = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "30", "--noproxy", "", "--http2"])
        .args(["-w", "%{http_version} %{http_code}", "-o"])
        .arg(&saved)
        .args(["-x", &format!("http://{proxy}"), "--cacert"])
        .arg(&ca)
        .arg(format!("https://proxy.golang.org{zip}"))
        .kill_on_drop(true)
        .output();
    let download = tokio::spawn(download);
    // SIGTERM once the client has the first MiB (bounded: 30 s).
    let arrived = || std::fs::metadata(&saved).map_or(0, |m| m.len());
    for _ in 0..1500 {
        if arrived() >= 1 << 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mirror.count(zip), 1, "the download started");
    assert!(arrived() >= 1 << 20, "the download is under way");
    modgate.signal(libc::SIGTERM);
    modgate.log_when(|l| l.contains("shutting down")).await;

    let ready = common::curl(&["-s", &format!("http://{admin}/readyz")]).await;
    assert_eq!(common::stdout(&ready), "not ready: shutting down\n");
    // Refused outright (the listener is closed), or at least never served.
    if let Ok(mut stream) = TcpStream::connect(proxy).await {
        let request =
            b"CONNECT proxy.golang.org:443 HTTP/1.1\r\nHost: proxy.golang.org:443\r\n\r\n";
        let _ = stream.write_all(request).await;
        let mut answer = [0u8; 12];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut answer)).await;
        assert!(
            !matches!(read, Ok(Ok(n)) if n > 0 && answer.starts_with(b"HTTP/1.1 200")),
            "a new client was served while draining"
        );
    }
    let out = download.await.unwrap().unwrap();
    assert_eq!(common::stdout(&out), "2 200", "{}", common::stderr(&out));
    let whole = std::fs::read(modules.path().join(&zip[1..])).unwrap();
    assert!(
        std::fs::read(&saved).unwrap() == whole,
        "the download is not whole"
    );
    let status = modgate
        .exited(Duration::from_secs(30))
        .await
        .expect("exits once drained");
    assert_eq!(status.code(), Some(0), "{}", modgate.log());
}
