//! Parent proxy chaining: a second modgate instance is the parent; its
//! counters show what passed through it.

mod common;

use common::*;
use modgate::proxy::sha256;

fn hex(bytes: [u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_bypassed_traffic_goes_through_the_parent_and_no_proxy_does_not() {
    let origin = Origin::start("127.0.0.1").await;
    let tls = TlsOrigin::start().await;
    let ports = format!("connect_ports = [{}]", tls.addr.port());
    let parent = Proxy::start(&base_config(&ports, "")).await;
    let child = Proxy::start(&base_config(
        &ports,
        &format!(
            "proxy = \"http://{}\"\nno_proxy = \"localhost\"",
            parent.addr
        ),
    ))
    .await;
    let cacert = tls.cert_pem.display().to_string();

    // http:// to 127.0.0.1: not in no_proxy, so via the parent (absolute-form).
    let out = curl(&["-x", &child.url(), &origin.url("/headers")]).await;
    let seen = stdout(&out);
    assert!(seen.starts_with("GET /headers"), "{seen}");
    assert_eq!(
        seen.matches("via: 1.1 modgate").count(),
        2,
        "two hops expected: {seen}"
    );
    assert_eq!(parent.running.stats.forwarded.get(), 1);

    // CONNECT to 127.0.0.1: tunnelled through the parent.
    let url = format!("https://127.0.0.1:{}/", tls.addr.port());
    let out = curl(&["-x", &child.url(), "--cacert", &cacert, &url]).await;
    assert_eq!(stdout(&out), "tls-origin-ok", "{}", stderr(&out));
    assert_eq!(parent.running.stats.tunnels.get(), 1);

    // localhost is in no_proxy: direct, the parent sees nothing more.
    let url = format!("http://localhost:{}/bytes/3", origin.addr.port());
    let out = curl(&["-x", &child.url(), &url]).await;
    assert_eq!(out.stdout.len(), 3);
    let url = format!("https://localhost:{}/", tls.addr.port());
    let out = curl(&["-x", &child.url(), "--cacert", &cacert, &url]).await;
    assert_eq!(stdout(&out), "tls-origin-ok");
    assert_eq!(parent.running.stats.forwarded.get(), 1);
    assert_eq!(parent.running.stats.tunnels.get(), 1);
    assert_eq!(parent.running.stats.requests.get(), 2);
    assert_eq!(child.running.stats.via_parent.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_credentials_are_sent_to_the_parent_only() {
    let origin = Origin::start("127.0.0.1").await;
    let tls = TlsOrigin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, format!("corp:sha256:{}\n", hex(sha256(b"p@ss")))).unwrap();
    let parent_extra = format!(
        "connect_ports = [{}]\nauth_file = {:?}",
        tls.addr.port(),
        users
    );
    let parent = Proxy::start(&base_config(&parent_extra, "")).await;
    let ports = format!("connect_ports = [{}]", tls.addr.port());
    let with_auth = Proxy::start(&base_config(
        &ports,
        &format!(
            "proxy = \"http://corp:p%40ss@{}\"\nno_proxy = \"\"",
            parent.addr
        ),
    ))
    .await;
    let without_auth = Proxy::start(&base_config(
        &ports,
        &format!("proxy = \"http://{}\"\nno_proxy = \"\"", parent.addr),
    ))
    .await;

    let out = curl(&["-x", &with_auth.url(), &origin.url("/headers")]).await;
    let seen = stdout(&out).to_ascii_lowercase();
    assert!(seen.starts_with("get /headers"), "{seen}");
    assert!(
        !seen.contains("proxy-authorization"),
        "credentials leaked to the origin: {seen}"
    );
    let url = format!("https://127.0.0.1:{}/", tls.addr.port());
    let cacert = tls.cert_pem.display().to_string();
    let out = curl(&["-x", &with_auth.url(), "--cacert", &cacert, &url]).await;
    assert_eq!(stdout(&out), "tls-origin-ok", "{}", stderr(&out));

    // Without credentials the parent says 407: that is about modgate's
    // credentials, so the client gets 502 naming the parent, forwarded or
    // tunnelled.
    let named = format!("parent proxy {}", parent.addr);
    let text = forward_status(&without_auth.url(), &origin.url("/headers"), 502).await;
    assert!(
        text.contains(&named) && text.contains("407 Proxy Authentication Required"),
        "{text}"
    );
    assert!(text.contains("upstream.proxy"), "{text}");
    let connect = format!(
        "CONNECT 127.0.0.1:{0} HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\n\r\n",
        tls.addr.port()
    );
    let text = raw_exchange(
        without_auth.addr,
        connect.as_bytes(),
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 502"), "{text}");
    assert!(
        text.contains(&named) && text.contains("407 Proxy Authentication Required"),
        "{text}"
    );

    // The parent itself asks clients for credentials.
    let text = forward_status(&parent.url(), &origin.url("/headers"), 407).await;
    assert!(
        text.to_ascii_lowercase()
            .contains("proxy-authenticate: basic realm=\"modgate\""),
        "{text}"
    );
    let out = curl(&[
        "-x",
        &parent.url(),
        "-U",
        "corp:p@ss",
        &origin.url("/bytes/4"),
    ])
    .await;
    assert_eq!(out.stdout.len(), 4, "{}", stderr(&out));
}

/// A parent that is down: forwarded and tunnelled requests get 502 with a
/// text that names the parent proxy and its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_that_is_down_is_named() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let child = Proxy::start(&base_config(
        "connect_ports = [443]",
        &format!("proxy = \"http://{addr}\"\nno_proxy = \"\""),
    ))
    .await;
    let named = format!("cannot connect to parent proxy {addr}");
    let text = forward_status(&child.url(), "http://127.0.0.1:8080/x", 502).await;
    assert!(text.contains(&named), "{text}");
    let connect = b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n";
    let text = raw_exchange(child.addr, connect, std::time::Duration::from_secs(5)).await;
    assert!(
        text.starts_with("HTTP/1.1 502") && text.contains(&named),
        "{text}"
    );
}

/// Two parents, the first down: every request succeeds through the second,
/// `/metrics` (read by a real Prometheus parser) shows the first down, and
/// once it is back and `upstream.down_for` is over it is used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_that_is_down_is_skipped_until_it_is_back() {
    let origin = Origin::start("127.0.0.1").await;
    let tls = TlsOrigin::start().await;
    let ports = format!("connect_ports = [{}]", tls.addr.port());
    let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let first_addr = first.local_addr().unwrap();
    drop(first);
    let second = Proxy::start(&base_config(&ports, "")).await;
    let work = common::gateway::Work::new();
    let config = work.path("modgate.toml");
    let upstream = format!(
        "proxy = [\"http://{first_addr}\", \"http://{}\"]\nno_proxy = \"\"\ndown_for = \"1s\"",
        second.addr
    );
    std::fs::write(&config, base_config(&ports, &upstream)).unwrap();
    let child = common::gateway::Work::gateway(&work, &config).await;
    let url = format!("http://{}", child.addr("explicit proxy"));
    let cacert = tls.cert_pem.display().to_string();
    let https = format!("https://127.0.0.1:{}/", tls.addr.port());
    for n in 1..=3 {
        let out = curl(&["-x", &url, &origin.url(&format!("/bytes/{n}"))]).await;
        assert_eq!(out.stdout.len(), n, "{}", stderr(&out));
        let out = curl(&["-x", &url, "--cacert", &cacert, &https]).await;
        assert_eq!(stdout(&out), "tls-origin-ok", "{}", stderr(&out));
    }
    assert_eq!(second.running.stats.forwarded.get(), 3);
    assert_eq!(second.running.stats.tunnels.get(), 3);
    let admin = child.admin_addr().await;
    let metrics = common::metrics::scrape(admin, None).await;
    let up = |addr: std::net::SocketAddr, metrics: &std::collections::HashMap<String, f64>| {
        metrics[&format!("modgate_parent_up{{parent={addr}}}")]
    };
    assert_eq!(up(first_addr, &metrics), 0.0, "{metrics:?}");
    assert_eq!(up(second.addr, &metrics), 1.0);

    // The first comes back; after down_for it is tried first again.
    let first = Proxy::start_on(&first_addr.to_string(), &base_config(&ports, "")).await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    // Another origin: a new connection (the pooled ones to the second
    // parent are good as long as they last).
    let another = Origin::start("127.0.0.1").await;
    let out = curl(&["-x", &url, &another.url("/bytes/4")]).await;
    assert_eq!(out.stdout.len(), 4, "{}", stderr(&out));
    let out = curl(&["-x", &url, "--cacert", &cacert, &https]).await;
    assert_eq!(stdout(&out), "tls-origin-ok", "{}", stderr(&out));
    assert_eq!(first.running.stats.forwarded.get(), 1);
    assert_eq!(first.running.stats.tunnels.get(), 1);
    assert_eq!(
        second.running.stats.forwarded.get(),
        3,
        "the second is no longer used"
    );
    let metrics = common::metrics::scrape(admin, None).await;
    assert_eq!(up(first_addr, &metrics), 1.0, "{metrics:?}");
}
