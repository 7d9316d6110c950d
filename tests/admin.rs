//! The admin listener: `/metrics` read by a real Prometheus text-format
//! parser (PyPI's prometheus_client, installed by scripts/test-deps.sh)
//! before and after real traffic; `/healthz`, `/readyz` (not ready once
//! every module mirror keeps failing) and the bearer token.

mod common;

use common::gomod::{Behaviour, Mirror, build_goproxy_dir};
use common::metrics::{downloads_landed, scrape};
use common::*;

async fn status(url: &str) -> String {
    let out = curl(&["-s", "-o", "/dev/null", "-w", "%{http_code}", url]).await;
    stdout(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic_and_parse() {
    let origin = Origin::start("127.0.0.1").await;
    let tls = TlsOrigin::start().await;
    let port = tls.addr.port();
    let proxy = Proxy::start(&base_config(&format!("connect_ports = [{port}]"), "")).await;
    let admin = proxy.running.admin.expect("an admin listener");
    let before = scrape(admin, None).await;
    for name in ["requests", "denied", "tunnels", "forwarded", "via_parent"] {
        assert_eq!(before[&format!("modgate_{name}_total{{}}")], 0.0, "{name}");
    }
    // Two forwards, one tunnel, one denied destination.
    for _ in 0..2 {
        let out = curl(&["-x", &proxy.url(), &origin.url("/bytes/10")]).await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let cacert = tls.cert_pem.display().to_string();
    let url = format!("https://localhost:{port}/");
    let out = curl(&["-x", &proxy.url(), "--cacert", &cacert, &url]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = curl(&["-x", &proxy.url(), "http://127.0.0.1:25/"]).await;
    assert!(out.status.success());
    let after = scrape(admin, None).await;
    let moved = |name: &str| {
        let key = format!("modgate_{name}_total{{}}");
        after[&key] - before[&key]
    };
    assert_eq!(moved("requests"), 4.0);
    assert_eq!(moved("forwarded"), 2.0);
    assert_eq!(moved("tunnels"), 1.0);
    assert_eq!(moved("denied"), 1.0);
    assert_eq!(moved("via_parent"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_the_token() {
    let token = "s3cret-admin-token";
    let proxy = Proxy::start(&format!(
        "[proxy]\nallow_clients = [\"127.0.0.0/8\"]\n[intercept]\nenabled = false\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{token}\"\n"
    ))
    .await;
    let admin = proxy.running.admin.unwrap();
    assert_eq!(status(&format!("http://{admin}/healthz")).await, "200");
    assert_eq!(status(&format!("http://{admin}/readyz")).await, "200");
    assert_eq!(status(&format!("http://{admin}/metrics")).await, "401");
    let metrics = scrape(admin, Some(token)).await;
    assert!(metrics.contains_key("modgate_requests_total{}"));
}

/// Readiness follows the mirrors over a window: one request that finds
/// the only mirror down demotes it (it is tried last) but leaves /readyz
/// 200, so no single client decides it; repeated failures with no
/// success make it 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_once_every_mirror_keeps_failing() {
    let work = tempfile::tempdir().unwrap();
    // Port 9 on loopback refuses: the one mirror fails and is demoted.
    let proxy = Proxy::start(&format!(
        "[proxy]\nallow_clients = [\"127.0.0.0/8\"]\n[intercept]\nca_dir = {:?}\n\
         [gomod]\nmirrors = [\"http://127.0.0.1:9\"]\nverify = \"off\"\nmirror_timeout = \"2s\"\n",
        work.path().join("certs")
    ))
    .await;
    let admin = proxy.running.admin.unwrap();
    assert_eq!(status(&format!("http://{admin}/readyz")).await, "200");
    for n in 1..=3 {
        let module = format!("{}/example.com/m/@v/v1.0.{n}.mod", proxy.url());
        let out = curl(&["-s", &module]).await;
        assert!(
            stdout(&out).contains("every mirror failed"),
            "{}",
            stdout(&out)
        );
        if n == 1 {
            let out = curl(&["-s", &format!("http://{admin}/readyz")]).await;
            assert_eq!(stdout(&out), "ready\n", "one request flipped readiness");
        }
    }
    let out = curl(&["-s", &format!("http://{admin}/readyz")]).await;
    assert!(
        stdout(&out).contains("not ready: every module mirror (1) failed 3 times"),
        "{}",
        stdout(&out)
    );
}

/// A gateway whose first module mirror refuses connections (port 9 on
/// loopback) and whose second serves the test graph.
struct DeadFirst {
    _tree: tempfile::TempDir,
    _work: tempfile::TempDir,
    good: Mirror,
    dead: &'static str,
    proxy: Proxy,
}

async fn dead_first() -> DeadFirst {
    let tree = tempfile::tempdir().unwrap();
    build_goproxy_dir(tree.path(), "");
    let good = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let dead = "http://127.0.0.1:9";
    let work = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&format!(
        "[proxy]\nallow_clients = [\"127.0.0.0/8\"]\n[intercept]\nca_dir = {:?}\n\
         [gomod]\nmirrors = [\"{dead}\", \"{}\"]\nsumdb_mirrors = [\"{}\"]\nverify = \"off\"\n\
         mirror_timeout = \"5s\"\n",
        work.path().join("certs"),
        good.url(),
        good.url()
    ))
    .await;
    DeadFirst {
        _tree: tree,
        _work: work,
        good,
        dead,
        proxy,
    }
}

/// Module requests through the GOPROXY endpoint with a failing mirror
/// first: the counters per cache outcome, per mirror and result, and of
/// demotions move exactly as the requests went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_metrics_follow_the_mirrors_and_the_cache() {
    let DeadFirst {
        _tree,
        _work,
        good,
        dead,
        proxy,
    } = dead_first().await;
    let admin = proxy.running.admin.unwrap();
    let before = scrape(admin, None).await;
    for path in [
        "/example.com/util/@v/v1.2.0.mod",
        "/example.com/util/@v/v1.2.0.mod",
        "/example.com/util/@v/v1.2.0.info",
    ] {
        let out = curl(&["-sf", &format!("{}{path}", proxy.url())]).await;
        assert!(out.status.success(), "{path}: {}", stderr(&out));
        // The client can have its answer before the file is stored: the
        // next request for it is a hit only once the download has landed
        // (before, it joins the download, which is right too).
        downloads_landed(admin, None).await;
    }
    let after = scrape(admin, None).await;
    let moved = |key: &str| {
        after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
    };
    assert_eq!(
        moved("modgate_module_requests_total{cache=miss,status=200}"),
        2.0,
        "{after:#?}"
    );
    assert_eq!(
        moved("modgate_module_requests_total{cache=hit,status=200}"),
        1.0
    );
    let good = good.url();
    assert_eq!(
        moved(&format!(
            "modgate_mirror_requests_total{{mirror={dead},result=failed}}"
        )),
        1.0
    );
    assert_eq!(
        moved(&format!(
            "modgate_mirror_requests_total{{mirror={good},result=ok}}"
        )),
        2.0
    );
    assert_eq!(
        moved(&format!("modgate_mirror_demotions_total{{mirror={dead}}}")),
        1.0
    );
    assert_eq!(
        moved(&format!("modgate_mirror_demotions_total{{mirror={good}}}")),
        0.0
    );
    assert_eq!(moved("modgate_requests_total{}"), 3.0);
    assert_eq!(moved("modgate_verification_failures_total{}"), 0.0);
}

/// The text of `url` as headless chromium renders it (tags stripped).
async fn rendered(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .env("HOME", profile.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), out)
        .await
        .expect("chromium in time")
        .expect("chromium runs (scripts/test-deps.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    let mut text = String::new();
    let mut in_tag = false;
    for c in dom.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The status page, rendered by headless chromium, shows each mirror and
/// its health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_mirrors() {
    let DeadFirst {
        _tree,
        _work,
        good,
        dead,
        proxy,
    } = dead_first().await;
    let out = curl(&[
        "-sf",
        &format!("{}/example.com/util/@v/v1.2.0.mod", proxy.url()),
    ])
    .await;
    assert!(out.status.success());
    let admin = proxy.running.admin.unwrap();
    let text = rendered(&format!("http://{admin}/")).await;
    assert!(text.contains(&format!("{dead} demoted for")), "{text}");
    assert!(text.contains(&format!("{} healthy", good.url())), "{text}");
    assert!(
        text.contains("ms to answer"),
        "the good mirror's latency: {text}"
    );
    assert!(
        text.contains(&format!("explicit proxy {}", proxy.addr)),
        "{text}"
    );
    assert!(text.contains("module files served 1"), "{text}");
}
