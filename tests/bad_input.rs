//! Bad input gets the right status or is closed on time, and other clients
//! are unaffected.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn still_serves(proxy: &Proxy, origin: &Origin) {
    let out = curl(&["-x", &proxy.url(), &origin.url("/bytes/100")]).await;
    assert_eq!(
        out.stdout,
        payload(100),
        "a normal client was affected: {}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_431_403() {
    let origin = Origin::start("127.0.0.1").await;
    let proxy = Proxy::start(&base_config("", "")).await;
    let limit = Duration::from_secs(5);

    let answer = raw_exchange(proxy.addr, b"GARBAGE\r\n\r\n", limit).await;
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "malformed line: {answer}"
    );

    let big = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        origin.url("/bytes/1"),
        "a".repeat(200 * 1024)
    );
    let answer = raw_exchange(proxy.addr, big.as_bytes(), limit).await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "200 KiB header: {answer}"
    );

    let answer = raw_exchange(
        proxy.addr,
        b"CONNECT example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
        limit,
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "CONNECT without port: {answer}"
    );
    assert!(answer.contains("needs a port"), "{answer}");

    let answer = raw_exchange(
        proxy.addr,
        b"CONNECT 127.0.0.1:25 HTTP/1.1\r\nHost: x\r\n\r\n",
        limit,
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 403"),
        "CONNECT to port 25: {answer}"
    );
    assert!(answer.contains("connect_ports"), "{answer}");

    // CL+TE: decoded by Transfer-Encoding alone, Content-Length never
    // forwarded, and the connection closed after the answer (RFC 9112 §6.1),
    // so the pipelined request hidden behind it is never served.
    let smuggle = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET {} HTTP/1.1\r\nHost: x\r\n\r\n",
        origin.url("/headers"),
        origin.url("/bytes/1")
    );
    let answer = raw_exchange(proxy.addr, smuggle.as_bytes(), limit).await;
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "CL+TE: {answer}");
    assert!(answer.contains("connection: close"), "CL+TE: {answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("content-length: 40"),
        "CL+TE: {answer}"
    );
    assert_eq!(origin.hits(), 1, "the smuggled request reached the origin");
    // A message whose Content-Length values disagree is refused outright.
    let conflicting = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        origin.url("/echo")
    );
    let answer = raw_exchange(proxy.addr, conflicting.as_bytes(), limit).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "CL conflict: {answer}");
    assert_eq!(origin.hits(), 1);

    // A malformed chunked body is the client's fault: 400, never a 502
    // blaming the origin. A well-formed one goes through.
    let chunked = |body: &str| {
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}",
            origin.url("/upload")
        )
    };
    let answer = raw_exchange(
        proxy.addr,
        chunked("5\r\nhello\r\n0\r\n\r\n").as_bytes(),
        limit,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "good chunks: {answer}");
    for broken in ["zz\r\nhello\r\n0\r\n\r\n", "5\r\nhelloXX0\r\n\r\n"] {
        let answer = raw_exchange(proxy.addr, chunked(broken).as_bytes(), limit).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{broken:?}: {answer}");
        assert!(answer.contains("request body"), "{broken:?}: {answer}");
    }

    let answer = raw_exchange(proxy.addr, b"GET /local HTTP/1.1\r\nHost: x\r\n\r\n", limit).await;
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "origin-form to the proxy: {answer}"
    );

    let answer = raw_exchange(
        proxy.addr,
        b"GET https://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n\r\n",
        limit,
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "https absolute-form: {answer}"
    );

    still_serves(&proxy, &origin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_outside_allow_clients_gets_403() {
    let origin = Origin::start("127.0.0.1").await;
    let proxy = Proxy::start_on(
        "127.0.0.1:0",
        "[proxy]\nallow_clients = [\"127.0.0.1/32\"]\ndeny_destinations = []\n[intercept]\nenabled = false\n",
    )
    .await;
    let out = curl(&[
        "-i",
        "--interface",
        "127.0.0.3",
        "-x",
        &proxy.url(),
        &origin.url("/bytes/1"),
    ])
    .await;
    assert!(stdout(&out).starts_with("HTTP/1.1 403"), "{}", stdout(&out));
    assert!(stdout(&out).contains("allow_clients"), "{}", stdout(&out));
    assert_eq!(origin.hits(), 0);
    assert_eq!(proxy.running.stats.denied.get(), 1);
    still_serves(&proxy, &origin).await;
}

/// A dual-stack `[::]` listener sees IPv4 clients as `::ffff:a.b.c.d`;
/// they are matched (and logged) as the IPv4 clients they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_clients_of_a_dual_stack_listener_match_ipv4_rules() {
    let origin = Origin::start("127.0.0.1").await;
    let proxy = Proxy::start_on(
        "[::]:0",
        "[proxy]\nallow_clients = [\"127.0.0.1/32\"]\ndeny_destinations = []\n[intercept]\nenabled = false\n",
    )
    .await;
    let url = format!("http://127.0.0.1:{}", proxy.addr.port());
    forward_status(&url, &origin.url("/bytes/1"), 200).await;
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_destinations_are_checked_after_dns() {
    let origin = Origin::start("127.0.0.2").await;
    let port = origin.addr.port();
    let config = format!(
        "[proxy]\nallow_clients = [\"127.0.0.0/8\"]\ndeny_destinations = [\"127.0.0.1/32\"]\nconnect_ports = [{port}]\n[intercept]\nenabled = false\n"
    );
    let proxy = Proxy::start(&config).await;
    // `localhost` resolves to 127.0.0.1: denied, though the name is not an IP.
    let by_name = format!("http://localhost:{port}/bytes/1");
    let answer = forward_status(&proxy.url(), &by_name, 403).await;
    assert!(answer.contains("deny_destinations"), "{answer}");
    tunnel_status(&proxy.url(), &by_name, 403).await;
    forward_status(&proxy.url(), &format!("http://127.0.0.1:{port}/"), 403).await;
    // modgate's own listener is always denied (no request loops).
    forward_status(&proxy.url(), &format!("{}/", proxy.url()), 403).await;
    assert_eq!(origin.hits(), 0);
    // The origin's own address is fine.
    let out = curl(&["-x", &proxy.url(), &origin.url("/bytes/7")]).await;
    assert_eq!(out.stdout, payload(7), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_closed_on_time_and_others_are_served() {
    let origin = Origin::start("127.0.0.1").await;
    let proxy = Proxy::start(&base_config("", "")).await; // header_read_timeout = 2s
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaa\r\n\r\n",
        origin.url("/bytes/1")
    );
    let started = Instant::now();
    let mut slow = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let slow_client = tokio::spawn(async move {
        // One byte a second, for at most 15 bytes (15 s).
        for byte in request.bytes().take(15) {
            if slow.write_all(&[byte]).await.is_err() {
                break;
            }
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => return true, // an error answer, then close
                Err(_) => {}
            }
        }
        false
    });
    // Meanwhile, a normal client is served.
    for _ in 0..3 {
        still_serves(&proxy, &origin).await;
    }
    // Each byte came within a second of the last, so only a deadline for
    // the whole head (2 s) can have closed it before the 15th.
    let closed = slow_client.await.unwrap();
    let took = started.elapsed();
    assert!(closed, "slowloris connection was never closed ({took:?})");
    still_serves(&proxy, &origin).await;
}

/// An absolute-form target whose port is not a port (too large, hex,
/// signed, zero) is refused with 400, as `explain` refuses it, instead of
/// quietly going to port 80.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_port_that_is_not_a_port_is_400() {
    let proxy = Proxy::start(&base_config("", "")).await;
    for port in ["65536", "0x19", "+80", "0", "99999999999"] {
        let request =
            format!("GET http://a.example:{port}/ HTTP/1.1\r\nHost: a.example:{port}\r\n\r\n");
        let answer = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(20)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{port}: {answer}");
        assert!(answer.contains("not a port"), "{port}: {answer}");
        let explained = run_modgate(&["explain", &format!("http://a.example:{port}/")]).await;
        assert!(!explained.status.success(), "{port}: explain accepted it");
    }
}
