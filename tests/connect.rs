//! CONNECT tunnels with the real curl: TLS through the tunnel, dial-first
//! errors (502 refused, 504 timeout), idle timeout.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_through_connect_to_a_local_tls_origin() {
    let origin = TlsOrigin::start().await;
    let port = origin.addr.port();
    let proxy = Proxy::start(&base_config(&format!("connect_ports = [{port}]"), "")).await;
    let url = format!("https://localhost:{port}/");
    let cacert = origin.cert_pem.display().to_string();
    let out = curl(&["-x", &proxy.url(), "--cacert", &cacert, &url]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "tls-origin-ok");
    // Twice on one tunnel (keep-alive inside TLS), and the certificate is the origin's own.
    let out = curl(&["-v", "-x", &proxy.url(), "--cacert", &cacert, &url, &url]).await;
    assert_eq!(stdout(&out), "tls-origin-ok".repeat(2));
    assert!(
        stderr(&out).contains("issuer: CN=rcgen self signed cert"),
        "{}",
        stderr(&out)
    );
    assert_eq!(proxy.running.stats.tunnels.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_destination_gives_502() {
    // A port nobody listens on: bind, note it, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let proxy = Proxy::start(&base_config(&format!("connect_ports = [{port}]"), "")).await;
    let url = format!("http://127.0.0.1:{port}/");
    tunnel_status(&proxy.url(), &url, 502).await;
    let answer = forward_status(&proxy.url(), &url, 502).await;
    assert!(
        answer.contains("cannot connect to origin 127.0.0.1"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_connect_gives_504_on_time() {
    // A listener that never accepts, with its one-slot backlog filled:
    // further SYNs are dropped, so connecting hangs until the timeout.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(s);
    }
    // The backlog is full once a filler is connected (bounded: 10 s).
    for _ in 0..200 {
        if fillers.iter().any(|s| s.peer_addr().is_ok()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        fillers.iter().any(|s| s.peer_addr().is_ok()),
        "backlog filled"
    );
    let config = format!(
        "[proxy]\nallow_clients = [\"127.0.0.0/8\"]\ndeny_destinations = []\nconnect_ports = [{}]\n[upstream]\nconnect_timeout = \"1s\"\n[intercept]\nenabled = false\n",
        addr.port()
    );
    let proxy = Proxy::start(&config).await;
    let started = Instant::now();
    // Nothing answers the SYN: only connect_timeout ends this.
    tunnel_status(&proxy.url(), &format!("http://{addr}/"), 504).await;
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnel_is_closed() {
    let origin = Origin::start("127.0.0.1").await;
    let extra = format!(
        "connect_ports = [{}]\nidle_timeout = \"1s\"",
        origin.addr.port()
    );
    let proxy = Proxy::start(&base_config(&extra, "")).await;
    let request = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", origin.addr);
    // The tunnel opens, nothing is sent, and the proxy closes it: the
    // origin never closes on its own, so the end of the stream is the
    // idle timeout's doing (30 s bound the wait only).
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let ended =
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(ended.is_ok(), "idle tunnel was not closed");
}

/// A bulk transfer both ways (the relay's buffer grows while reads fill
/// it): 24 MiB through an echo server arrive byte-exact, and the client's
/// half-close travels through and ends the echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_tunnel_arrives_whole_both_ways() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&base_config(
        &format!("connect_ports = [{}]", echo.port()),
        "",
    ))
    .await;
    let stream = open_tunnel(proxy.addr, echo).await;
    let data: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (mut read, mut write) = stream.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let mut back = Vec::with_capacity(data.len());
    let reading = read.read_to_end(&mut back);
    tokio::time::timeout(std::time::Duration::from_secs(30), reading)
        .await
        .expect("the echo ends once the client's half-close went through")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the bytes came back changed");
}
