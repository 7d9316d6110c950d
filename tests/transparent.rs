//! Transparent mode end to end, in network namespaces these tests build
//! (root only; CI runs as root).
//!
//! Gateway topology: `client` ── veth ── `gw`. The client's default route is
//! the gateway and its /etc/hosts maps proxy.golang.org and sum.golang.org to
//! 10.202.0.10, origin.test to 10.202.0.20, addresses that live on `gw`'s
//! loopback. `gw` runs deploy/nftables-gateway.sh (REDIRECT of tcp/80 and
//! tcp/443 from the LAN link) and the modgate binary; its mirror and checksum
//! database listen on `gw`'s 127.0.0.1. The client configures no proxy.
//!
//! Single-host topology: one namespace running deploy/iptables-host.sh and
//! deploy/nftables-host.sh (its own outgoing traffic redirected, modgate's
//! marked sockets excepted).

mod common;

use std::net::SocketAddr;
use std::process::Output;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::gomod::*;
use common::netns::{Modgate, Netns, require_root, veth};
use common::{Origin, TlsOrigin};

const MODULE_HOSTS: &str = "10.202.0.10";
const ORIGIN: &str = "10.202.0.20";
const ECHO: &str = "10.202.0.30";
const ORIGIN6: &str = "fd00:202::20";
/// Deadline for a redirected client's ClientHello (`proxy.header_read_timeout`).
const HELLO_DEADLINE: Duration = Duration::from_secs(2);

fn deploy(script: &str) -> String {
    format!("{}/deploy/{script}", env!("CARGO_MANIFEST_DIR"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Everything a gateway test needs; dropping it tears it all down.
struct Gateway {
    work: tempfile::TempDir,
    _tree: tempfile::TempDir,
    modgate: Modgate,
    parent: Option<Modgate>,
    mirror: Mirror,
    sumdb: SumDb,
    tls_origin: TlsOrigin,
    origin: Origin,
    tls_origin6: TlsOrigin,
    origin6: Origin,
    // Dropped last: the namespaces the servers above live in.
    client: Netns,
    _gw: Netns,
}

/// `with_parent`: a second modgate on `gw` is `upstream.proxy` for
/// everything but loopback (the mirrors).
async fn gateway(tag: &str, with_parent: bool) -> Gateway {
    require_root();
    let client = Netns::new(&format!("c{tag}"));
    let gw = Netns::new(&format!("g{tag}"));
    let (client_if, lan_if) = veth(&client, "10.201.0.2/24", &gw, "10.201.0.1/24");
    client.exec(&["ip", "route", "add", "default", "via", "10.201.0.1"]);
    client.exec(&[
        "ip",
        "addr",
        "add",
        "fd00:201::2/64",
        "dev",
        &client_if,
        "nodad",
    ]);
    gw.exec(&[
        "ip",
        "addr",
        "add",
        "fd00:201::1/64",
        "dev",
        &lan_if,
        "nodad",
    ]);
    client.exec(&["ip", "-6", "route", "add", "default", "via", "fd00:201::1"]);
    for ip in [MODULE_HOSTS, ORIGIN, ECHO] {
        gw.exec(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"]);
    }
    gw.exec(&["ip", "addr", "add", &format!("{ORIGIN6}/128"), "dev", "lo"]);
    client.hosts(&format!(
        "127.0.0.1 localhost\n{MODULE_HOSTS} proxy.golang.org sum.golang.org\n{ORIGIN} origin.test\n{ORIGIN6} origin6.test\n"
    ));

    let tree = tempfile::tempdir().unwrap();
    build_goproxy_dir(tree.path(), "");
    let mirror = Mirror::serve(
        gw.listener("127.0.0.1:0"),
        tree.path().to_path_buf(),
        Behaviour::Serve,
    );
    let sumdb = SumDb::start_in(Some(&gw.name), tree.path(), "sum.golang.org").await;
    let tls_origin = TlsOrigin::serve(gw.listener(&format!("{ORIGIN}:443")), &["origin.test"]);
    let origin = Origin::serve(gw.listener(&format!("{ORIGIN}:80")));
    let tls_origin6 = TlsOrigin::serve(gw.listener(&format!("[{ORIGIN6}]:443")), &["origin6.test"]);
    let origin6 = Origin::serve(gw.listener(&format!("[{ORIGIN6}]:80")));
    echo(gw.listener(&format!("{ECHO}:443")));

    let work = tempfile::tempdir().unwrap();
    let parent = match with_parent {
        true => Some(parent_proxy(&gw, work.path()).await),
        false => None,
    };
    let upstream = parent.as_ref().map_or(String::new(), |p| {
        format!(
            "proxy = \"http://127.0.0.1:{}\"\n",
            p.port("explicit proxy")
        )
    });
    let config = work.path().join("modgate.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = [\"127.0.0.1:0\"]\nheader_read_timeout = \"{}s\"\n\
             [transparent]\nhttp = \"[::]:0\"\nhttps = \"[::]:0\"\n\
             [upstream]\nconnect_timeout = \"2s\"\n{upstream}\
             [intercept]\nca_dir = {:?}\n\
             [gomod]\nmirrors = [\"{}\"]\nsumdb_mirrors = [\"{}\"]\nmirror_timeout = \"5s\"\nsumdb_key = {:?}\n",
            HELLO_DEADLINE.as_secs(),
            work.path().join("certs"),
            mirror.url(),
            sumdb.url(),
            sumdb.key,
        ),
    )
    .unwrap();
    let modgate = Modgate::start(&gw, &config, 3).await;
    gw.exec_env(
        &[&deploy("nftables-gateway.sh"), "up"],
        &[
            ("LAN_IF", lan_if),
            ("HTTP_PORT", modgate.port("transparent http").to_string()),
            ("HTTPS_PORT", modgate.port("transparent https").to_string()),
        ],
    );
    Gateway {
        work,
        _tree: tree,
        modgate,
        parent,
        mirror,
        sumdb,
        tls_origin,
        origin,
        tls_origin6,
        origin6,
        client,
        _gw: gw,
    }
}

/// A plain explicit modgate on `gw` (interception off) to chain to; `gw`'s
/// /etc/hosts lets it resolve origin.test.
async fn parent_proxy(gw: &Netns, work: &std::path::Path) -> Modgate {
    gw.hosts(&format!("127.0.0.1 localhost\n{ORIGIN} origin.test\n"));
    let config = work.join("parent.toml");
    std::fs::write(
        &config,
        "[proxy]\nlisten = [\"127.0.0.1:0\"]\nallow_clients = [\"127.0.0.0/8\"]\n[intercept]\nenabled = false\n",
    )
    .unwrap();
    Modgate::start(gw, &config, 1).await
}

/// A TCP echo server: shows what reached the original destination.
fn echo(listener: tokio::net::TcpListener) {
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
}

async fn curl_in(ns: &Netns, args: &[&str]) -> Output {
    let mut cmd = common::command_in(Some(&ns.name), "curl");
    cmd.args(["-sS", "--max-time", "10"])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("ALL_PROXY")
        .kill_on_drop(true);
    cmd.output().await.unwrap()
}

/// Acceptance 1: the go command, with no proxy variables, downloads and
/// builds through the redirect; modgate intercepts both module hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_builds_through_the_gateway_with_no_proxy_settings() {
    let g = gateway("1", false).await;
    let bundle = cert_bundle(
        &g.work.path().join("certs/modgate-ca.pem"),
        &g.work.path().join("bundle.pem"),
    );
    let go = GoEnv {
        proxy: None,
        netns: Some(g.client.name.clone()),
        work: g.work.path().to_path_buf(),
        cert_bundle: bundle,
        goproxy: "https://proxy.golang.org,direct".into(),
        gosumdb: g.sumdb.key.clone(),
    };
    let app = g.work.path().join("app");
    build_app(&app);
    for args in [
        &["mod", "download", "all"][..],
        &["build", "-o", "app", "."],
    ] {
        let out = go.run(&app, args).await;
        assert!(
            out.status.success(),
            "go {args:?}:\n{}\nmodgate:\n{}",
            text(&out),
            g.modgate.log()
        );
    }
    let run = std::process::Command::new(app.join("app"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "42\n".repeat(4));

    let seen: Vec<String> = g
        .mirror
        .requests()
        .iter()
        .map(|p| p.replace("%21", "!"))
        .collect();
    for m in MODULES {
        let zip = format!("/{}/@v/{}.zip", escape(m.path), m.version);
        assert!(seen.contains(&zip), "mirror never saw {zip}: {seen:#?}");
        let lookup = format!("/lookup/{}@{}", escape(m.path), m.version);
        assert!(g.sumdb.requests().contains(&lookup), "no {lookup}");
    }
    assert!(
        g.modgate.log().contains("access: module "),
        "{}",
        g.modgate.log()
    );
}

/// `modgate doctor` on a redirected client (no proxy variables, by
/// design) finds the transparent gateway instead of asking for
/// HTTPS_PROXY, passes once the CA is trusted, and names the CA fix when
/// it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_recognises_a_transparent_client() {
    let g = gateway("7", false).await;
    let bundle = cert_bundle(
        &g.work.path().join("certs/modgate-ca.pem"),
        &g.work.path().join("bundle.pem"),
    );
    let doctor = |roots: std::path::PathBuf| {
        let mut cmd = common::command_in(Some(&g.client.name), env!("CARGO_BIN_EXE_modgate"));
        cmd.arg("doctor")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("SSL_CERT_FILE", roots)
            .kill_on_drop(true);
        async move {
            let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
                .await
                .expect("doctor in time")
                .unwrap();
            (out.status.success(), text(&out))
        }
    };
    let (ok, said) = doctor(bundle).await;
    assert!(ok, "{said}");
    assert!(
        said.contains(
            "ok    transparent gateway: none set: proxy.golang.org:443 reaches a modgate gateway"
        ),
        "{said}"
    );
    assert!(!said.contains("HTTPS_PROXY"), "{said}");
    let (ok, said) = doctor("/etc/ssl/certs/ca-certificates.crt".into()).await;
    assert!(!ok, "{said}");
    assert!(
        said.contains("FAIL  the go command trusts modgate's CA"),
        "{said}"
    );
    assert!(
        said.contains("fix: mkdir -p ~/.config && curl -fsS http://GATEWAY:3128/ca.pem"),
        "{said}"
    );
}

/// Acceptance 2: another name is tunnelled untouched (the client sees the
/// origin's own certificate); plain HTTP is forwarded by Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_tls_is_tunnelled_and_http_is_forwarded_by_host() {
    let g = gateway("2", false).await;
    let cert = g.tls_origin.cert_pem.to_str().unwrap();
    // Only the origin's own certificate is trusted: success proves no interception.
    let out = curl_in(&g.client, &["--cacert", cert, "https://origin.test/"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "tls-origin-ok",
        "{}\nmodgate:\n{}",
        text(&out),
        g.modgate.log()
    );
    assert_eq!(g.tls_origin.accepted.load(Ordering::SeqCst), 1);

    let out = curl_in(&g.client, &["http://origin.test/headers"]).await;
    let headers = String::from_utf8_lossy(&out.stdout);
    assert!(headers.starts_with("GET /headers"), "{}", text(&out));
    assert!(headers.contains("host: origin.test\n"), "{headers}");
    assert!(headers.contains("via: 1.1 modgate"), "{headers}");
    assert_eq!(g.origin.hits(), 1);

    // The same over IPv6.
    let cert6 = g.tls_origin6.cert_pem.to_str().unwrap();
    let out = curl_in(&g.client, &["--cacert", cert6, "https://origin6.test/"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "tls-origin-ok",
        "{}",
        text(&out)
    );
    assert_eq!(g.tls_origin6.accepted.load(Ordering::SeqCst), 1);
    let out = curl_in(&g.client, &["http://origin6.test/headers"]).await;
    let headers = String::from_utf8_lossy(&out.stdout);
    assert!(headers.contains("host: origin6.test\n"), "{}", text(&out));
    assert_eq!(g.origin6.hits(), 1);

    let tunnelled = |log: &str| {
        ["origin.test:443", &format!("original=\"[{ORIGIN6}]:443\"")]
            .iter()
            .all(|t| {
                log.lines()
                    .any(|l| l.contains("method=\"TLS\"") && l.contains(t))
            })
    };
    let log = g.modgate.log_when(tunnelled).await;
    assert!(tunnelled(&log), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("access: request") && l.contains("http://origin.test/headers")),
        "{log}"
    );
}

/// Acceptance 4: random bytes and a truncated hello are tunnelled by address
/// (the echo server at the original destination answers them), a silent
/// client is closed at the deadline, and another client is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_the_transparent_port() {
    let g = gateway("4", false).await;
    let echo_addr: SocketAddr = format!("{ECHO}:443").parse().unwrap();
    let hello = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/client_hello/go.bin"
    ))
    .unwrap();
    let random: Vec<u8> = (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let exchange = |bytes: Vec<u8>| {
        let mut stream = g.client.connect(echo_addr);
        async move {
            stream.write_all(&bytes).await.unwrap();
            let mut back = vec![0; bytes.len()];
            let started = Instant::now();
            let read = tokio::time::timeout(Duration::from_secs(8), stream.read_exact(&mut back));
            let ok = matches!(read.await, Ok(Ok(_))) && back == bytes;
            (ok, started.elapsed())
        }
    };
    let silent = {
        let mut stream = g.client.connect(echo_addr);
        async move {
            let started = Instant::now();
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(Duration::from_secs(8), stream.read(&mut buf)).await;
            (matches!(read, Ok(Ok(0)) | Ok(Err(_))), started.elapsed())
        }
    };
    let cert = g.tls_origin.cert_pem.to_str().unwrap().to_string();
    let other_args = ["--cacert", &cert, "https://origin.test/"];
    let other = curl_in(&g.client, &other_args);
    let (random, truncated, silent, other) = tokio::join!(
        exchange(random),
        exchange(hello[..200].to_vec()),
        silent,
        other
    );
    let log = g
        .modgate
        .log_when(|log| log.contains("nothing sent within"))
        .await;
    assert!(
        random.0,
        "random bytes were not tunnelled by address:\n{log}"
    );
    assert!(
        truncated.0,
        "a truncated hello was not tunnelled by address:\n{log}"
    );
    assert!(
        truncated.1 >= HELLO_DEADLINE - Duration::from_millis(100),
        "{truncated:?}"
    );
    assert!(silent.0, "a silent client was not closed:\n{log}");
    assert!(
        silent.1 < HELLO_DEADLINE + Duration::from_secs(3),
        "{silent:?}"
    );
    assert_eq!(String::from_utf8_lossy(&other.stdout), "tls-origin-ok");
    assert!(log.contains("nothing sent within"), "{log}");
}

/// Acceptance 3: with the single-host rules from deploy/ (iptables, then
/// nftables), modgate's own marked connection is not redirected back to it:
/// one client connection makes exactly one connection to the origin. A
/// connection aimed at modgate's transparent port itself is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_host_rules_never_loop() {
    require_root();
    let host = Netns::new("h3");
    let ip = "10.203.0.20";
    host.exec(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"]);
    host.hosts(&format!("127.0.0.1 localhost\n{ip} origin.test\n"));
    let tls_origin = TlsOrigin::serve(host.listener(&format!("{ip}:443")), &["origin.test"]);
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("modgate.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = [\"127.0.0.1:0\"]\nheader_read_timeout = \"2s\"\n\
             [transparent]\nhttp = \"0.0.0.0:0\"\nhttps = \"0.0.0.0:0\"\noutbound_mark = 0x2a\n\
             [intercept]\nca_dir = {:?}\n",
            work.path().join("certs")
        ),
    )
    .unwrap();
    let modgate = Modgate::start(&host, &config, 3).await;
    let https_port = modgate.port("transparent https");
    let ports = [
        ("MARK", "0x2a".to_string()),
        ("HTTP_PORT", modgate.port("transparent http").to_string()),
        ("HTTPS_PORT", https_port.to_string()),
    ];
    let cert = tls_origin.cert_pem.to_str().unwrap().to_string();
    for (n, script) in ["iptables-host.sh", "nftables-host.sh"].iter().enumerate() {
        host.exec_env(&[&deploy(script), "up"], &ports);
        let out = curl_in(&host, &["--cacert", &cert, "https://origin.test/"]).await;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "tls-origin-ok",
            "{script}: {}\nmodgate:\n{}",
            text(&out),
            modgate.log()
        );
        // One client connection, one connection reaching the origin: no loop.
        assert_eq!(tls_origin.accepted.load(Ordering::SeqCst), n + 1);
        let count = |log: &str| log.matches("method=\"TLS\"").count();
        let log = modgate.log_when(|log| count(log) > n).await;
        assert_eq!(count(&log), n + 1, "{log}");

        // Aimed at the transparent port itself (with the rules in place):
        // refused at once, never dialled.
        let own: SocketAddr = format!("{ip}:{https_port}").parse().unwrap();
        let mut stream = host.connect(own);
        let local = stream.local_addr().unwrap();
        let _ = stream.write_all(b"\x16\x03\x01").await;
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
        let refused = |log: &str| {
            log.lines().any(|l| {
                l.contains("transparent: refused")
                    && l.contains("transparent port itself")
                    && l.contains(&local.to_string())
            })
        };
        let log = modgate.log_when(refused).await;
        assert!(refused(&log), "{log}");
        host.exec_env(&[&deploy(script), "down"], &ports);
    }
    assert_eq!(tls_origin.accepted.load(Ordering::SeqCst), 2);
}

/// Through a parent proxy: redirected TLS goes to the parent by its server
/// name (CONNECT origin.test:443), redirected HTTP by its Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirected_traffic_takes_the_parent_by_name() {
    let g = gateway("5", true).await;
    let parent = g.parent.as_ref().unwrap();
    let cert = g.tls_origin.cert_pem.to_str().unwrap();
    let out = curl_in(&g.client, &["--cacert", cert, "https://origin.test/"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "tls-origin-ok",
        "{}\nmodgate:\n{}\nparent:\n{}",
        text(&out),
        g.modgate.log(),
        parent.log()
    );
    let out = curl_in(&g.client, &["http://origin.test/headers"]).await;
    let headers = String::from_utf8_lossy(&out.stdout);
    assert!(headers.contains("host: origin.test\n"), "{}", text(&out));
    // Two hops, both modgate.
    assert_eq!(headers.matches("via: 1.1 modgate").count(), 2, "{headers}");

    let seen = |log: &str| {
        log.lines()
            .any(|l| l.contains("method=\"CONNECT\"") && l.contains("origin.test:443"))
            && log
                .lines()
                .any(|l| l.contains("access: request") && l.contains("http://origin.test/headers"))
    };
    let log = parent.log_when(seen).await;
    assert!(seen(&log), "{log}");
    let log = g
        .modgate
        .log_when(|l| l.contains("decision=\"parent\""))
        .await;
    assert!(
        log.contains("method=\"TLS\"") && log.contains("decision=\"parent\""),
        "{log}"
    );
}
