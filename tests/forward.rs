//! Plain http:// forwarding with the real curl: streaming both ways,
//! 100-continue, upgrades, header rules.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_post_one_mebibyte_both_ways() {
    let origin = Origin::start("127.0.0.1").await;
    let proxy = Proxy::start(&base_config("", "")).await;

    let out = curl(&["-x", &proxy.url(), &origin.url("/bytes/1048576"), "-o", "-"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, payload(1 << 20));

    let dir = tempfile::tempdir().unwrap();
    let upload = dir.path().join("upload.bin");
    std::fs::write(&upload, payload(1 << 20)).unwrap();
    let data = format!("@{}", upload.display());
    for framing in [&[][..], &["-H", "Transfer-Encoding: chunked"][..]] {
        let proxy_url = proxy.url();
        let mut args = vec!["-x", proxy_url.as_str(), "--data-binary", &data];
        args.extend_from_slice(framing);
        let url = origin.url("/echo");
        args.push(&url);
        let out = curl(&args).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(out.stdout.len(), 1 << 20);
        assert_eq!(
            out.stdout,
            payload(1 << 20),
            "echoed body differs ({framing:?})"
        );
    }
    assert_eq!(proxy.running.stats.forwarded.get(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_to_client_and_methods() {
    let origin = Origin::start("127.0.0.1").await;
    let proxy = Proxy::start(&base_config("", "")).await;
    // Two URLs on one curl invocation reuse the client connection.
    let url = origin.url("/bytes/10");
    let out = curl(&[
        "-v",
        "-x",
        &proxy.url(),
        &url,
        &url,
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
    ])
    .await;
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("Re-using existing connection"),
        "{}",
        stderr(&out)
    );
    for method in ["PUT", "DELETE", "PATCH"] {
        let out = curl(&["-x", &proxy.url(), "-X", method, &origin.url("/headers")]).await;
        assert!(
            stdout(&out).starts_with(&format!("{method} /headers")),
            "{}",
            stdout(&out)
        );
    }
    let out = curl(&["-I", "-x", &proxy.url(), &origin.url("/bytes/5")]).await;
    assert!(
        stdout(&out).contains("content-length: 5"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_relayed() {
    let origin = Origin::start("127.0.0.1").await;
    let proxy = Proxy::start(&base_config("", "")).await;
    let body = "x".repeat(4096);
    let out = curl(&[
        "-v",
        "-x",
        &proxy.url(),
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "10",
        "--data-binary",
        &body,
        &origin.url("/echo"),
    ])
    .await;
    let log = stderr(&out);
    assert!(log.contains("HTTP/1.1 100 Continue"), "{log}");
    assert_eq!(stdout(&out), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_relayed() {
    let origin = Origin::start("127.0.0.1").await;
    let proxy = Proxy::start(&base_config("", "")).await;
    // curl sees the 101 and the bytes the origin sends on the upgraded connection.
    let out = curl(&[
        "-i",
        "--max-time",
        "3",
        "-x",
        &proxy.url(),
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        &origin.url("/ws"),
    ])
    .await;
    let text = stdout(&out);
    assert!(text.contains("101 Switching Protocols"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("upgrade: websocket"),
        "{text}"
    );
    assert!(text.contains("hello-from-origin"), "{text}");

    // Both directions over the upgraded connection, with a raw client.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        origin.url("/ws"),
        origin.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("hello-from-origin\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    s.write_all(b"ping-from-client").await.unwrap();
    let mut echo = [0u8; 16];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping-from-client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_stripped_and_via_added() {
    let origin = Origin::start("127.0.0.1").await;
    let proxy = Proxy::start(&base_config("", "")).await;
    let out = curl(&[
        "-x",
        &proxy.url(),
        "-H",
        "Connection: X-Drop, keep-alive",
        "-H",
        "X-Drop: 1",
        "-H",
        "Keep-Alive: timeout=9",
        "-H",
        "Proxy-Authorization: Basic c2VjcmV0",
        "-H",
        "TE: trailers",
        "-H",
        "X-Keep: yes",
        &origin.url("/headers"),
    ])
    .await;
    let seen = stdout(&out).to_ascii_lowercase();
    assert!(seen.contains("x-keep: yes"), "{seen}");
    assert!(seen.contains("via: 1.1 modgate"), "{seen}");
    for gone in ["x-drop", "keep-alive", "proxy-authorization", "te:"] {
        assert!(!seen.contains(gone), "{gone} reached the origin: {seen}");
    }
    let out = curl(&["-i", "-x", &proxy.url(), &origin.url("/hop")]).await;
    let answer = stdout(&out).to_ascii_lowercase();
    assert!(answer.contains("via: 1.1 modgate"), "{answer}");
    assert!(
        !answer.contains("x-private") && !answer.contains("keep-alive: timeout"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_forwards_zero_is_answered_by_the_proxy() {
    let origin = Origin::start("127.0.0.1").await;
    let proxy = Proxy::start(&base_config("", "")).await;
    let out = curl(&[
        "-i",
        "-X",
        "OPTIONS",
        "-H",
        "Max-Forwards: 0",
        "-x",
        &proxy.url(),
        &origin.url("/headers"),
    ])
    .await;
    let text = stdout(&out).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("allow:"), "{text}");
    assert_eq!(origin.hits(), 0);
    let out = curl(&[
        "-X",
        "OPTIONS",
        "-H",
        "Max-Forwards: 5",
        "-x",
        &proxy.url(),
        &origin.url("/headers"),
    ])
    .await;
    assert!(
        stdout(&out)
            .to_ascii_lowercase()
            .contains("max-forwards: 4"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_target_never_travel_further() {
    let origin = Origin::start("127.0.0.1").await;
    let proxy = Proxy::start(&base_config("", "")).await;
    let request = format!(
        "GET http://user:secret@{}/headers HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        origin.addr, origin.addr
    );
    let answer = common::raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The origin's echo of what it received: no credentials anywhere.
    assert!(
        answer.contains(&format!("host: {}\n", origin.addr)),
        "{answer}"
    );
    assert!(!answer.contains("secret"), "{answer}");
    let bad = "GET http://user:secret@exa%mple/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let answer = common::raw_exchange(proxy.addr, bad.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(!answer.contains("secret"), "{answer}");
}
