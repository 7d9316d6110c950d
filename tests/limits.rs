//! Nothing a client does can grow modgate's memory without bound or hold its
//! connections forever: leaves exist only for the configured names, every
//! path has its timeouts, and one client cannot take every connection.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::netns::Modgate;
use common::{Origin, Proxy, base_config, curl, forward_status, stdout};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Sends CONNECT and reads the answer head.
async fn connect_tunnel(proxy: SocketAddr, target: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
        match read {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    (stream, String::from_utf8_lossy(&head).into_owned())
}

fn tls_client(ca_pem: &Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One handshake with `sni` inside a tunnel to proxy.golang.org.
async fn handshake(proxy: SocketAddr, tls: &tokio_rustls::TlsConnector, sni: String) -> bool {
    let (stream, head) = connect_tunnel(proxy, "proxy.golang.org:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let name = ServerName::try_from(sni).unwrap();
    let attempt = tokio::time::timeout(Duration::from_secs(5), tls.connect(name, stream)).await;
    matches!(attempt, Ok(Ok(_)))
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Distinct server names under the intercepted hosts, deep and long ones included.
fn hostile_sni(i: usize) -> String {
    let label = format!("{i:x}")
        .repeat(63)
        .chars()
        .take(63)
        .collect::<String>();
    match i % 3 {
        0 => format!("h{i}.proxy.golang.org"),
        1 => format!("a.b.c.d.e{i}.sum.golang.org"),
        _ => format!("{label}.x{i}.proxy.golang.org"),
    }
}

/// Handshakes with the distinct names of `range`, 8 at a time; returns how many succeeded.
async fn hostile_handshakes(proxy: SocketAddr, ca: &Path, range: std::ops::Range<usize>) -> usize {
    let tls = tls_client(ca);
    let mut accepted = 0;
    let indices: Vec<usize> = range.collect();
    for chunk in indices.chunks(8) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let tls = tls.clone();
            set.spawn(async move { handshake(proxy, &tls, hostile_sni(i)).await });
        }
        accepted += set.join_all().await.into_iter().filter(|ok| *ok).count();
    }
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_configured_names_get_a_certificate_and_memory_stays_flat() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("modgate.toml");
    let ca_dir = work.path().join("ca");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = [\"127.0.0.1:0\"]\nallow_clients = [\"127.0.0.0/8\"]\n[intercept]\nca_dir = {ca_dir:?}\n[gomod]\nmirrors = [\"http://127.0.0.1:9\"]\nsumdb_mirrors = [\"http://127.0.0.1:9\"]\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let modgate = Modgate::spawn(None, &["run", "--config", config], None, 1).await;
    let proxy = modgate.addr("explicit proxy");
    let ca = ca_dir.join("modgate-ca.pem");

    let tls = tls_client(&ca);
    assert!(handshake(proxy, &tls, "proxy.golang.org".into()).await);
    assert!(handshake(proxy, &tls, "sum.golang.org".into()).await);
    // Warm up the runtime and the allocator, then measure 5 000 more.
    assert_eq!(hostile_handshakes(proxy, &ca, 0..500).await, 0);
    let before = rss_kib(modgate.pid());
    assert_eq!(hostile_handshakes(proxy, &ca, 500..5500).await, 0);
    let after = rss_kib(modgate.pid());
    eprintln!("RSS before {before} KiB, after 5 000 refused names {after} KiB");
    assert!(
        after < before + 2048,
        "RSS grew from {before} KiB to {after} KiB over 5 000 refused names"
    );
    assert!(handshake(proxy, &tls, "proxy.golang.org".into()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_intercepted_connections_are_closed_and_others_served() {
    let work = tempfile::tempdir().unwrap();
    let origin = Origin::start("127.0.0.1").await;
    let toml = format!(
        "[proxy]\nallow_clients = [\"127.0.0.0/8\"]\ndeny_destinations = []\nmax_connections = 20\nheader_read_timeout = \"1s\"\n[intercept]\nca_dir = {:?}\n[gomod]\nmirrors = [\"http://127.0.0.1:9\"]\nsumdb_mirrors = [\"http://127.0.0.1:9\"]\n",
        work.path()
    );
    let proxy = Proxy::start(&toml).await;
    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..20 {
        let (stream, head) = connect_tunnel(proxy.addr, "proxy.golang.org:443").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        silent.push(stream);
    }
    // Every one is closed by modgate (EOF) once the handshake deadline passes.
    for mut stream in silent {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "still open: {read:?}"
        );
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed too early: {waited:?}"
    );
    forward_status(&proxy.url(), &origin.url("/bytes/10"), 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upgraded_relays_are_closed() {
    let origin = Origin::start("127.0.0.1").await;
    let proxy = Proxy::start(&base_config("idle_timeout = \"1s\"", "")).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        origin.url("/ws"),
        origin.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("hello-from-origin") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the greeting");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 101"));
    // The relay works, then goes silent: closed after about a second.
    stream.write_all(b"ping").await.unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"ping");
    let quiet = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "relay still open: {read:?}"
    );
    assert!(quiet.elapsed() >= Duration::from_millis(900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_never_answers_gets_504() {
    // Accepts and reads the request, never answers.
    let mute = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = mute.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = mute.accept().await {
            held.push(stream);
        }
    });
    let proxy = Proxy::start(&base_config("", "response_timeout = \"1s\"")).await;
    let started = Instant::now();
    // The origin never answers: only the response timeout ends this.
    let answer = forward_status(&proxy.url(), &format!("http://{addr}/"), 504).await;
    assert!(
        answer.contains("origin") && answer.contains("no response"),
        "{answer}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
}

/// A connection to `proxy` from source address `from`.
async fn connect_from(from: &str, proxy: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(proxy).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_take_every_connection() {
    let origin = Origin::start("127.0.0.1").await;
    let proxy = Proxy::start(&base_config(
        "max_connections = 20\nmax_connections_per_client = 5",
        "",
    ))
    .await;
    // Client A opens 20 connections and sends nothing.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect_from("127.0.0.2", proxy.addr).await);
    }
    // Client B is served meanwhile, while A still holds its five.
    let out = curl(&[
        "--interface",
        "127.0.0.3",
        "-x",
        &proxy.url(),
        &origin.url("/bytes/10"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ])
    .await;
    assert_eq!(stdout(&out), "200");
    // Beyond its five, A's connections are closed at once (A's five stay
    // open until the 2 s header deadline).
    let mut closed = 0;
    for stream in held.iter_mut() {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
        if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
            closed += 1;
        }
    }
    assert_eq!(closed, 15);
    drop(held);
}
