//! The gateway cannot be turned against its own network: with the embedded
//! default config, no spelling of loopback is reachable and plain http://
//! cannot reach SMTP; a mirror's redirects are checked like any client's
//! destination. Each test runs the real modgate binary inside a network
//! namespace it creates (root), so fixed ports (25, 80, 3128) and addresses
//! like 169.254.169.254 exist only there.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::netns::{Modgate, Netns, require_root};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Counts connections accepted on `listener`, and keeps what they sent.
fn count_accepts(listener: TcpListener) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    count
}

/// Sends `request` to `addr` from inside `ns`; returns the answer (up to EOF or 10 s).
async fn exchange(ns: &Netns, addr: SocketAddr, request: String) -> String {
    let mut stream = ns.connect(addr);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn forward(target: &str) -> String {
    format!("GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n")
}

fn connect(target: &str) -> String {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_config_reaches_no_loopback_spelling_and_no_smtp() {
    require_root();
    let ns = Netns::new("dflt");
    // An address of this namespace that no rule denies: the SMTP stand-in
    // and a web server live there.
    ns.exec(&["ip", "addr", "add", "10.203.0.1/32", "dev", "lo"]);
    let loopback_service = count_accepts(ns.listener("127.0.0.1:8080"));
    let smtp = count_accepts(ns.listener("10.203.0.1:25"));
    let web = count_accepts(ns.listener("10.203.0.1:8025"));
    // `modgate run` with no config at all: the embedded default.
    let work = tempfile::tempdir().unwrap();
    let modgate = Modgate::spawn(Some(&ns), &["run"], Some(work.path()), 1).await;
    let proxy = modgate.addr("explicit proxy");
    assert_eq!(proxy, "127.0.0.1:3128".parse().unwrap());

    let spellings = [
        "127.0.0.1",
        "127.1",
        "0x7f.1",
        "0x7F.0.0.1",
        "2130706433",
        "0177.0.0.1",
        "127.0.1",
        "127.0.0.2",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::]",
        "localhost",
        "localhost.",
        "LOCALHOST",
        "a.localhost",
    ];
    for host in spellings {
        let answer = exchange(&ns, proxy, forward(&format!("{host}:8080"))).await;
        assert!(
            answer.starts_with("HTTP/1.1 403"),
            "forward to {host}: {answer}"
        );
        assert!(
            answer.contains("deny_destinations"),
            "forward to {host}: {answer}"
        );
        let answer = exchange(&ns, proxy, connect(&format!("{host}:443"))).await;
        assert!(
            answer.starts_with("HTTP/1.1 403"),
            "CONNECT to {host}: {answer}"
        );
        assert!(
            answer.contains("deny_destinations"),
            "CONNECT to {host}: {answer}"
        );
    }
    assert_eq!(loopback_service.load(Ordering::SeqCst), 0);

    // A POST body meant for SMTP never leaves: port 25 is not a web port.
    let body = "HELO evil\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nspam\r\n.\r\nQUIT\r\n";
    let post = |target: &str| {
        format!(
            "POST http://{target}/ HTTP/1.1\r\nHost: {target}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let answer = exchange(&ns, proxy, post("10.203.0.1:25")).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("proxy.http_ports"), "{answer}");
    assert_eq!(smtp.load(Ordering::SeqCst), 0);
    // The same address on a web port is reachable: the port rule decided.
    let answer = exchange(&ns, proxy, post("10.203.0.1:8025")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(web.load(Ordering::SeqCst), 1);
}

/// A mirror that answers every request with a redirect chosen by the
/// module path's first element.
fn redirecting_mirror(
    listener: TcpListener,
    own: SocketAddr,
    service: SocketAddr,
) -> Arc<AtomicUsize> {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    // modgate's start-up probe: it connects and sends nothing.
                    return;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let location = if head.contains("/loopback.example/") {
                    format!("http://{service}/secret")
                } else if head.contains("/loop.example/") {
                    format!("http://{own}/loop.example/m/@v/list")
                } else {
                    "http://169.254.169.254/latest/meta-data/iam".to_string()
                };
                let answer = format!(
                    "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_redirects_cannot_reach_what_the_gateway_protects() {
    require_root();
    let ns = Netns::new("redir");
    ns.exec(&["ip", "addr", "add", "169.254.169.254/32", "dev", "lo"]);
    ns.exec(&["ip", "addr", "add", "10.203.0.2/32", "dev", "lo"]);
    let metadata = count_accepts(ns.listener("169.254.169.254:80"));
    let service_listener = ns.listener("127.0.0.1:0");
    let service_addr = service_listener.local_addr().unwrap();
    let service = count_accepts(service_listener);
    let web = count_accepts(ns.listener("10.203.0.2:8080"));
    let mirror_listener = ns.listener("127.0.0.1:0");
    let mirror_addr = mirror_listener.local_addr().unwrap();
    // modgate's own explicit listener is fixed so the mirror can aim at it.
    let own: SocketAddr = "127.0.0.1:3128".parse().unwrap();
    let mirror = redirecting_mirror(mirror_listener, own, service_addr);

    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("modgate.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = [\"{own}\"]\n[intercept]\nca_dir = {:?}\n[gomod]\nmirrors = [\"http://{mirror_addr}\"]\nmirror_timeout = \"2s\"\n",
            work.path().join("ca")
        ),
    )
    .unwrap();
    let modgate = Modgate::start(&ns, &config, 1).await;

    // Module requests through the GOPROXY endpoint, each redirected by the
    // mirror; a normal client is served at the same time.
    let module = |first: &str| {
        format!("GET /{first}/m/@v/list HTTP/1.1\r\nHost: {own}\r\nConnection: close\r\n\r\n")
    };
    let (loopback, looped, meta, normal) = tokio::join!(
        exchange(&ns, own, module("loopback.example")),
        exchange(&ns, own, module("loop.example")),
        exchange(&ns, own, module("metadata.example")),
        exchange(&ns, own, forward("10.203.0.2:8080")),
    );
    assert!(normal.starts_with("HTTP/1.1 200"), "{normal}");
    assert_eq!(web.load(Ordering::SeqCst), 1);
    for (answer, why) in [
        (&loopback, "deny_destinations"),
        (&looped, "own listener"),
        (&meta, "deny_destinations"),
    ] {
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        assert!(answer.contains("every mirror failed"), "{answer}");
        assert!(answer.contains(why), "{answer}");
    }
    assert_eq!(
        mirror.load(Ordering::SeqCst),
        3,
        "the mirror itself is reachable"
    );
    assert_eq!(service.load(Ordering::SeqCst), 0);
    assert_eq!(metadata.load(Ordering::SeqCst), 0);
    // modgate saw exactly the three module requests it was sent: the
    // redirect to its own listener never came back to it.
    let log = modgate
        .log_when(|l| l.matches("access: module ").count() >= 3)
        .await;
    assert_eq!(log.matches("access: module ").count(), 3, "{log}");
}
