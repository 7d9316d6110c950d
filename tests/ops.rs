//! Running a gateway: one scripted mix of traffic through the modgate
//! binary (a forward, a tunnel, an intercepted module download with a dead
//! mirror first, the same file again from the cache), read back from
//! `/metrics` by a real Prometheus parser and from the access log file,
//! which logrotate can move away (SIGHUP reopens it).

mod common;

use std::path::Path;
use std::time::Duration;

use common::gomod::{Behaviour, Mirror, build_goproxy_dir};
use common::metrics::{downloads_landed, moved, scrape};
use common::netns::Modgate;
use common::*;

/// The access log's JSON lines once there are at least `count` (or after 30 s).
async fn access_lines(path: &Path, count: usize) -> Vec<serde_json::Value> {
    let read = || {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect::<Vec<serde_json::Value>>()
    };
    for _ in 0..600 {
        if read().len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    read()
}

fn field<'a>(line: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    &line["fields"][name]
}

fn number(line: &serde_json::Value, name: &str) -> f64 {
    field(line, name)
        .as_f64()
        .unwrap_or_else(|| panic!("{name} in {line}"))
}

/// The lines of `kind` (`request`, `tunnel`, `module`) with `decision`.
fn of<'a>(
    lines: &'a [serde_json::Value],
    kind: &str,
    decision: &str,
) -> Vec<&'a serde_json::Value> {
    lines
        .iter()
        .filter(|l| field(l, "message") == kind && field(l, "decision") == decision)
        .collect()
}

struct Gateway {
    _tree: tempfile::TempDir,
    work: tempfile::TempDir,
    good: Mirror,
    dead: &'static str,
    modgate: Modgate,
}

/// The modgate binary with a dead module mirror first and a good one, its
/// access log in JSON to a file; CONNECT allowed to `port` too; `extra`
/// added to `[proxy]`.
async fn gateway(port: u16, extra: &str) -> Gateway {
    let tree = tempfile::tempdir().unwrap();
    build_goproxy_dir(tree.path(), "");
    let good = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let dead = "http://127.0.0.1:9";
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("modgate.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = [\"127.0.0.1:0\"]\nallow_clients = [\"127.0.0.0/8\"]\n\
             deny_destinations = []\nconnect_ports = [443, {port}]\n{extra}\n\
             [intercept]\nca_dir = {:?}\n\
             [gomod]\nmirrors = [\"{dead}\", \"{}\"]\nsumdb_mirrors = [\"{}\"]\nverify = \"off\"\n\
             mirror_timeout = \"5s\"\n[cache]\ndir = {:?}\n\
             [log]\nformat = \"json\"\naccess_log = {:?}\n",
            work.path().join("certs"),
            good.url(),
            good.url(),
            work.path().join("cache"),
            work.path().join("access.log"),
        ),
    )
    .unwrap();
    let args = ["run", "--config", config.to_str().unwrap()];
    let modgate = Modgate::spawn(None, &args, None, 1).await;
    Gateway {
        _tree: tree,
        work,
        good,
        dead,
        modgate,
    }
}

/// Acceptance 1 and 6 of the operations issue: every counter moved exactly
/// as the mix went, and the access log has one line for each request and
/// tunnel, with client, bytes, duration and (modules) the mirror.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_mix_moves_the_metrics_and_logs_every_line() {
    let origin = Origin::start("127.0.0.1").await;
    let tls = TlsOrigin::start().await;
    let port = tls.addr.port();
    let g = gateway(port, "").await;
    let admin = g.modgate.admin_addr().await;
    let proxy = format!("http://{}", g.modgate.addr("explicit proxy"));
    let access = g.work.path().join("access.log");
    // The start-up summary names each mirror with its first probe (in a
    // JSON log, one event a row).
    let log = g
        .modgate
        .log_when(|l| l.contains("\"what\":\"sumdb\""))
        .await;
    let good_url = g.good.url();
    assert!(log.contains(&format!("{good_url} (reachable, ")), "{log}");
    assert!(log.contains(&format!("{} (UNREACHABLE: ", g.dead)), "{log}");
    let before = scrape(admin, None).await;

    let out = curl(&["-sf", "-x", &proxy, &origin.url("/bytes/10")]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let cacert = tls.cert_pem.display().to_string();
    let url = format!("https://localhost:{port}/");
    let out = curl(&["-sf", "-x", &proxy, "--cacert", &cacert, &url]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let ca = g.work.path().join("certs/modgate-ca.pem");
    let module = "https://proxy.golang.org/example.com/util/@v/v1.2.0.mod";
    for _ in 0..2 {
        let out = curl(&[
            "-sf",
            "-x",
            &proxy,
            "--cacert",
            ca.to_str().unwrap(),
            module,
        ])
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        // Answered before it is stored: the second request is a hit once
        // the first download has landed (before that, it would join it).
        downloads_landed(admin, None).await;
    }
    let lines = access_lines(&access, 6).await;
    assert_eq!(lines.len(), 6, "{lines:#?}");
    // Counted when each body ends, before its line is written: the last
    // line read, the counters are in.
    let after = scrape(admin, None).await;
    let moved = |key: &str| moved(&before, &after, key);

    // The access log: one line each, every one with client, bytes, duration.
    for line in &lines {
        assert_eq!(line["target"], "access");
        assert!(
            field(line, "client")
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:")
        );
        for name in ["bytes_up", "bytes_down", "duration_ms", "status"] {
            number(line, name);
        }
    }
    let forwarded = of(&lines, "request", "direct");
    assert_eq!(forwarded.len(), 1);
    assert_eq!(
        field(forwarded[0], "target"),
        origin.url("/bytes/10").as_str()
    );
    assert_eq!(number(forwarded[0], "bytes_down"), 10.0);
    let tunnel = of(&lines, "tunnel", "direct");
    assert_eq!(tunnel.len(), 1);
    assert_eq!(
        field(tunnel[0], "target"),
        format!("localhost:{port}").as_str()
    );
    assert!(number(tunnel[0], "bytes_up") > 0.0 && number(tunnel[0], "bytes_down") > 0.0);
    let intercepted = of(&lines, "tunnel", "intercept");
    assert_eq!(intercepted.len(), 2);
    let modules = of(&lines, "module", "intercept");
    assert_eq!(modules.len(), 2);
    let cache: Vec<&str> = modules
        .iter()
        .map(|l| field(l, "cache").as_str().unwrap())
        .collect();
    // The second asks after the first download landed: from the cache.
    assert_eq!(cache, ["miss", "hit"]);
    assert_eq!(field(modules[0], "mirror"), g.good.url().as_str());
    let mod_size = number(modules[1], "bytes_down");
    assert!(mod_size > 0.0);

    // The counters moved exactly so.
    let handled = |kind: &str, decision: &str| {
        moved(&format!(
            "modgate_handled_total{{decision={decision},kind={kind},status=200}}"
        ))
    };
    assert_eq!(handled("request", "direct"), 1.0);
    assert_eq!(handled("tunnel", "direct"), 1.0);
    assert_eq!(handled("tunnel", "intercept"), 2.0);
    assert_eq!(handled("module", "intercept"), 2.0);
    assert_eq!(moved("modgate_requests_total{}"), 4.0);
    assert_eq!(moved("modgate_tunnels_total{}"), 3.0);
    assert_eq!(moved("modgate_forwarded_total{}"), 1.0);
    assert_eq!(
        moved("modgate_module_requests_total{cache=miss,status=200}"),
        1.0
    );
    assert_eq!(
        moved("modgate_module_requests_total{cache=hit,status=200}"),
        1.0
    );
    let (good, dead) = (g.good.url(), g.dead);
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
        1.0
    );
    assert_eq!(
        moved(&format!("modgate_mirror_demotions_total{{mirror={dead}}}")),
        1.0
    );
    let cache_keys: Vec<_> = after
        .iter()
        .filter(|(k, _)| k.contains("cache") || k.contains("module"))
        .collect();
    assert_eq!(
        moved("modgate_cache_bytes_served_total{}"),
        mod_size,
        "{cache_keys:#?}\n{lines:#?}"
    );
    assert_eq!(moved("modgate_cache_bytes_saved_total{}"), mod_size);
    assert_eq!(moved("modgate_cache_evictions_total{}"), 0.0);
    assert_eq!(
        moved(&format!(
            "modgate_mirror_response_seconds_count{{mirror={good}}}"
        )),
        1.0
    );
    let sum = |name: &str| lines.iter().map(|l| number(l, name)).sum::<f64>();
    assert_eq!(
        moved("modgate_client_bytes_total{direction=to_client}"),
        sum("bytes_down")
    );
    assert_eq!(
        moved("modgate_client_bytes_total{direction=from_client}"),
        sum("bytes_up")
    );
    assert_eq!(moved("modgate_duration_seconds_count{kind=tunnel}"), 3.0);
    assert_eq!(moved("modgate_duration_seconds_count{kind=module}"), 2.0);
    assert_eq!(moved("modgate_duration_seconds_count{kind=request}"), 1.0);
    let up = |mirror: &str| after[&format!("modgate_mirror_up{{kind=module,mirror={mirror}}}")];
    assert_eq!(
        (up(dead), up(&good)),
        (0.0, 1.0),
        "the dead mirror is demoted"
    );
    assert_eq!(after["modgate_tunnels_open{}"], 0.0);
    assert_eq!(after["modgate_connections_max{}"], 25000.0);
    // One leaf per intercepted host, minted at start.
    assert_eq!(after["modgate_leaf_certificates_minted_total{}"], 2.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(after["modgate_ca_expiry_timestamp_seconds{}"] > now + 86400.0 * 365.0);
    let mut open = after["modgate_connections_open{}"];
    for _ in 0..300 {
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        open = scrape(admin, None).await["modgate_connections_open{}"];
    }
    assert_eq!(open, 0.0, "every connection closed");
}

/// logrotate moves the access log away and sends SIGHUP: new lines go to a
/// new file at the configured path, none are lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_the_access_log() {
    let origin = Origin::start("127.0.0.1").await;
    let g = gateway(443, "").await;
    let admin = g.modgate.admin_addr().await;
    let proxy = format!("http://{}", g.modgate.addr("explicit proxy"));
    let access = g.work.path().join("access.log");
    let rotated = g.work.path().join("access.log.1");
    let out = curl(&["-sf", "-x", &proxy, &origin.url("/bytes/3")]).await;
    assert!(out.status.success());
    assert_eq!(access_lines(&access, 1).await.len(), 1);
    std::fs::rename(&access, &rotated).unwrap();
    g.modgate.signal(libc::SIGHUP);
    g.modgate.log_when(|l| l.contains("config reloaded")).await;
    let out = curl(&["-sf", "-x", &proxy, &origin.url("/bytes/4")]).await;
    assert!(out.status.success());
    let fresh = access_lines(&access, 1).await;
    assert_eq!(fresh.len(), 1, "{fresh:#?}");
    assert_eq!(number(&fresh[0], "bytes_down"), 4.0);
    let old = access_lines(&rotated, 1).await;
    assert_eq!(old.len(), 1);
    assert_eq!(number(&old[0], "bytes_down"), 3.0);
    let metrics = scrape(admin, None).await;
    assert_eq!(metrics["modgate_reloads_total{result=ok}"], 1.0);
}

/// With proxy.auth_file, the access line names the user, never the
/// password; a refused client is logged without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_the_user_not_the_password() {
    let origin = Origin::start("127.0.0.1").await;
    let users = tempfile::NamedTempFile::new().unwrap();
    let digest: String = modgate::proxy::sha256(b"s3cret-pass")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(users.path(), format!("alice:sha256:{digest}\n")).unwrap();
    let g = gateway(443, &format!("auth_file = {:?}", users.path())).await;
    let proxy = format!("http://{}", g.modgate.addr("explicit proxy"));
    let url = origin.url("/bytes/5");
    let out = curl(&["-sf", "-x", &proxy, "-U", "alice:s3cret-pass", &url]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = curl(&["-s", "-x", &proxy, "-U", "alice:wrong-pass", &url]).await;
    assert!(out.status.success());
    let access = g.work.path().join("access.log");
    let lines = access_lines(&access, 2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(field(&lines[0], "user"), "alice");
    assert_eq!(number(&lines[0], "status"), 200.0);
    assert_eq!(field(&lines[1], "user"), "-");
    assert_eq!(number(&lines[1], "status"), 407.0);
    let text = std::fs::read_to_string(&access).unwrap();
    assert!(
        !text.contains("pass"),
        "a password in the access log: {text}"
    );
}
