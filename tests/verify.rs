//! Checksum verification at the gateway, end to end: the real go command
//! with GOSUMDB=off (modgate is its only check), real mirrors (one of them
//! tampered), and the real checksum database (golang.org/x/mod/sumdb's test
//! server), also lying or forked, in front of the modgate binary.

mod common;

use std::time::Duration;

use common::gateway::*;
use common::gomod::*;
use common::metrics::downloads_landed;

const UTIL_MOD: &str = "/example.com/util/@v/v1.2.0.mod";
const UTIL_INFO: &str = "/example.com/util/@v/v1.2.0.info";
const UTIL_ZIP: &str = "/example.com/util/@v/v1.2.0.zip";
const HUGE_ZIP: &str = "/example.com/huge/@v/v1.0.0.zip";

/// A 20 MiB module, in the tree and so in the checksum database.
const HUGE: Module = Module {
    path: "example.com/huge",
    version: "v1.0.0",
    package: "huge",
    func: "Huge",
    blob: 20 << 20,
};

/// The test graph with every zip tampered.
fn tampered_zips() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    build_goproxy_dir(dir.path(), " (tampered)");
    dir
}

/// The test graph with one go.mod and one .info tampered.
fn tampered_mod() -> tempfile::TempDir {
    let dir = tree();
    let go_mod = dir.path().join(UTIL_MOD.trim_start_matches('/'));
    let mut text = std::fs::read_to_string(&go_mod).unwrap();
    text.push_str("require example.com/evil v1.0.0\n");
    std::fs::write(go_mod, text).unwrap();
    let info = dir.path().join(UTIL_INFO.trim_start_matches('/'));
    std::fs::write(
        info,
        r#"{"Version":"v1.9.9","Time":"2026-01-02T03:04:05Z"}"#,
    )
    .unwrap();
    dir
}

/// `go mod download all` with GOSUMDB=off through `addr`; its output.
async fn download(work: &Work, name: &str, addr: std::net::SocketAddr) -> std::process::Output {
    let go = work.go(name, Some(addr), DEFAULT_GOPROXY, "off");
    let app = go.work.join("app");
    build_app(&app);
    go.run(&app, &["mod", "download", "all"]).await
}

fn cached(work: &Work, path: &str) -> Option<Vec<u8>> {
    std::fs::read(work.cache().join(path.trim_start_matches('/'))).ok()
}

/// `path` as stored once storing is over (a client may finish first).
async fn stored(work: &Work, path: &str) -> Option<Vec<u8>> {
    for _ in 0..600 {
        if let Some(bytes) = cached(work, path) {
            return Some(bytes);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn file(tree: &tempfile::TempDir, path: &str) -> Vec<u8> {
    std::fs::read(tree.path().join(path.trim_start_matches('/'))).unwrap()
}

/// A gateway for `mirrors`, verifying against `sumdb`.
async fn gateway(work: &Work, mirrors: &[String], sumdb: &SumDb) -> common::netns::Modgate {
    let config = work.config_keyed(mirrors, &[sumdb.url()], Some(&sumdb.key), "");
    work.gateway(&config).await
}

/// Point 1, tampered zips: alone, the go command (GOSUMDB=off) fails,
/// nothing tampered is stored, and a security event names the module,
/// version, mirror and both hashes. With an honest mirror after it, the
/// client succeeds by its second attempt, with the honest bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_zip_is_refused_and_the_next_mirror_serves() {
    let good_tree = tree();
    let bad_tree = tampered_zips();
    let sumdb = SumDb::start(good_tree.path(), "sum.golang.org").await;
    let good = Mirror::start(good_tree.path().to_path_buf(), Behaviour::Serve).await;
    let bad = Mirror::start(bad_tree.path().to_path_buf(), Behaviour::Serve).await;

    let work = Work::new();
    let gate = gateway(&work, &[bad.url()], &sumdb).await;
    let out = download(&work, "client", gate.addr("explicit proxy")).await;
    assert!(
        !out.status.success(),
        "tampered graph accepted:\n{}",
        text(&out)
    );
    let zip_event = |l: &str| l.contains("verification failed") && l.contains("@v/v1.2.0.zip");
    let log = gate.log_when(|log| log.lines().any(zip_event)).await;
    let event = log
        .lines()
        .find(|l| zip_event(l))
        .unwrap_or_else(|| panic!("no security event for the zip:\n{log}"));
    assert!(
        event.contains("security=true")
            && event.contains("example.com/util")
            && event.contains(&bad.url())
            && event.contains("expected h1:")
            && event.contains("got h1:"),
        "{event}"
    );
    // Nothing is stored once every download is over, not only before.
    downloads_landed(gate.admin_addr().await, None).await;
    for m in MODULES {
        let zip = format!("{}/@v/{}.zip", escape(m.path), m.version);
        assert!(cached(&work, &zip).is_none(), "a tampered {zip} was stored");
    }
    // The admin sees it too: /metrics counts the refusals.
    let metrics = format!("http://{}/metrics", gate.admin_addr().await);
    let exposed = String::from_utf8(common::curl(&["-sf", &metrics]).await.stdout).unwrap();
    let refused: f64 = exposed
        .lines()
        .find_map(|l| l.strip_prefix("modgate_verification_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no verification failures counter:\n{exposed}"));
    assert!(refused >= 1.0, "{exposed}");
    gate.kill().await;

    // The admin adds an honest mirror after it; the same client tries again.
    let gate = gateway(&work, &[bad.url(), good.url()], &sumdb).await;
    let addr = gate.addr("explicit proxy");
    let first = download(&work, "client", addr).await;
    if !first.status.success() {
        let second = download(&work, "client", addr).await;
        assert!(
            second.status.success(),
            "second attempt:\n{}",
            text(&second)
        );
    }
    for m in MODULES {
        let zip = format!("/{}/@v/{}.zip", escape(m.path), m.version);
        assert!(
            stored(&work, &zip).await == Some(file(&good_tree, &zip)),
            "{zip}"
        );
        assert!(good.count(&zip) >= 1, "{zip}: {:?}", good.requests());
    }
}

/// Point 1, small files: a tampered go.mod (and a .info naming another
/// version) is checked whole before any byte goes out and fetched again
/// from the next mirror in the same request, so it never costs the client
/// an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_go_mod_never_costs_an_attempt() {
    let good_tree = tree();
    let bad_tree = tampered_mod();
    let sumdb = SumDb::start(good_tree.path(), "sum.golang.org").await;
    let good = Mirror::start(good_tree.path().to_path_buf(), Behaviour::Serve).await;
    let bad = Mirror::start(bad_tree.path().to_path_buf(), Behaviour::Serve).await;
    let work = Work::new();
    let gate = gateway(&work, &[bad.url(), good.url()], &sumdb).await;
    let out = download(&work, "client", gate.addr("explicit proxy")).await;
    assert!(out.status.success(), "first attempt:\n{}", text(&out));
    assert_eq!(bad.count(UTIL_MOD), 1, "{:?}", bad.requests());
    assert_eq!(good.count(UTIL_MOD), 1, "{:?}", good.requests());
    assert!(stored(&work, UTIL_MOD).await == Some(file(&good_tree, UTIL_MOD)));
    let module_line = |l: &str| l.contains("access: module") && l.contains(UTIL_MOD);
    let log = gate.log_when(|l| l.lines().any(module_line)).await;
    let served = log.lines().find(|l| module_line(l)).unwrap();
    assert!(
        served.contains("status=200") && served.contains(&good.url()),
        "{served}"
    );
    assert!(log.contains("verification failed"), "{log}");
    drop(gate);

    // A .info naming another version: refused the same way (a fresh
    // gateway, where the tampered mirror is first again).
    let work = Work::new();
    let gate = gateway(&work, &[bad.url(), good.url()], &sumdb).await;
    let asked = (bad.count(UTIL_INFO), good.count(UTIL_INFO));
    let (status, body, _) = get(gate.addr("explicit proxy"), UTIL_INFO).await;
    assert_eq!(status, 200);
    assert!(body == file(&good_tree, UTIL_INFO));
    let now = (bad.count(UTIL_INFO), good.count(UTIL_INFO));
    assert_eq!(now, (asked.0 + 1, asked.1 + 1), "each mirror asked once");
}

/// Point 2: a database signed with another key, and one whose lookup
/// carries a record that is not in its signed tree: the file is not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_another_key_or_a_lying_record_is_refused() {
    let tree = tree();
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let trusted = SumDb::start(tree.path(), "sum.golang.org").await;
    let impostor = SumDb::start(tree.path(), "sum.golang.org").await;
    let liar = SumDb::start_with(
        None,
        tree.path(),
        "sum.golang.org",
        &[("SUMDB_LIE", "1"), ("SUMDB_PREFILL", "300")],
    )
    .await;
    let cases = [
        (&impostor, &trusted.key, "is not signed by sum.golang.org"),
        (&liar, &liar.key, "is not in the signed tree"),
    ];
    for (db, key, reason) in cases {
        let work = Work::new();
        let config = work.config_keyed(&[mirror.url()], &[db.url()], Some(key), "");
        let gateway = work.gateway(&config).await;
        let addr = gateway.addr("explicit proxy");
        for path in [UTIL_MOD, UTIL_ZIP] {
            let (status, _, _) = get(addr, path).await;
            assert_ne!(status, 200, "{reason}: {path} served");
        }
        downloads_landed(gateway.admin_addr().await, None).await;
        assert!(cached(&work, UTIL_MOD).is_none() && cached(&work, UTIL_ZIP).is_none());
        let lookup = "sumdb/sum.golang.org/lookup/example.com/util@v1.2.0";
        assert!(cached(&work, lookup).is_none(), "{reason}: lookup stored");
        let log = gateway.log_when(|l| l.contains(reason)).await;
        assert!(log.contains(reason), "{reason}:\n{log}");
        // Tiles that took part in a failed proof are not kept.
        let tiles = work.cache().join("sumdb/sum.golang.org/tile");
        let kept = walkdir::WalkDir::new(&tiles)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .count();
        assert_eq!(kept, 0, "{reason}: tiles kept after a failed proof");
    }
}

/// Point 3: the stored signed head survives a restart; a database with the
/// same key and another history is then refused, the stored head is kept,
/// and a security line names both heads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_database_is_refused_after_a_restart() {
    let tree = tree();
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let seed = ("SUMDB_SEED", "fork test");
    let honest = SumDb::start_with(None, tree.path(), "sum.golang.org", &[seed]).await;
    let work = Work::new();
    let config = work.config_keyed(&[mirror.url()], &[honest.url()], Some(&honest.key), "");
    let gateway = work.gateway(&config).await;
    for path in [UTIL_MOD, "/example.com/big/@v/v1.0.0.mod"] {
        let (status, _, _) = get(gateway.addr("explicit proxy"), path).await;
        assert_eq!(status, 200, "{path}");
    }
    let head_file = work.cache().join(".modgate/sum.golang.org.head");
    let stored = std::fs::read(&head_file).expect("the verified head is stored");
    gateway.kill().await;
    let honest_key = honest.key.clone();
    drop(honest);

    let forked = SumDb::start_with(
        None,
        tree.path(),
        "sum.golang.org",
        &[seed, ("SUMDB_PREFILL", "3")],
    )
    .await;
    assert_eq!(forked.key, honest_key, "the same key signs both histories");
    // Nothing of the first run's lookups is left to serve: everything is
    // asked of the forked database.
    for dir in ["sumdb", "example.com"] {
        std::fs::remove_dir_all(work.cache().join(dir)).unwrap();
    }
    let config = work.config_keyed(&[mirror.url()], &[forked.url()], Some(&forked.key), "");
    let gateway = work.gateway(&config).await;
    let (status, _, _) = get(gateway.addr("explicit proxy"), UTIL_MOD).await;
    assert_ne!(status, 200, "a module verified against a forked history");
    let log = gateway
        .log_when(|l| l.contains("signed head refused"))
        .await;
    let line = log
        .lines()
        .find(|l| l.contains("signed head refused"))
        .unwrap_or_else(|| panic!("no fork line:\n{log}"));
    assert!(
        line.contains("security=true") && line.contains("stored=") && line.contains("seen="),
        "{line}"
    );
    assert_eq!(
        std::fs::read(&head_file).unwrap(),
        stored,
        "the stored head is kept"
    );
}

/// Point 5: verification keeps streaming: through a slow mirror, a client
/// has the first bytes of a 20 MiB zip before the mirror has sent it all,
/// and the whole verified zip in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_zip_still_streams() {
    let tree = tree();
    write_module(tree.path(), &HUGE, "");
    let sumdb = SumDb::start(tree.path(), "sum.golang.org").await;
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Throttled(8 << 20)).await;
    let work = Work::new();
    let config = work.config_keyed(&[mirror.url()], &[sumdb.url()], Some(&sumdb.key), "");
    let gateway = work.gateway(&config).await;
    let (status, body, first) = get(gateway.addr("explicit proxy"), HUGE_ZIP).await;
    assert_eq!(status, 200);
    let zip = file(&tree, HUGE_ZIP);
    assert!(body == zip, "{} bytes, not the zip", body.len());
    let done = mirror.finished_sending(HUGE_ZIP).await;
    assert!(
        first.unwrap() < done,
        "first bytes only after the mirror was done"
    );
    assert!(
        stored(&work, HUGE_ZIP).await == Some(zip),
        "the verified zip is stored"
    );
}

/// `modgate cache verify` re-checks every cached `.mod` and `.zip` against
/// the go.sum lines of the cached (proved) lookups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_verify_rechecks_against_the_database() {
    let tree = tree();
    let sumdb = SumDb::start(tree.path(), "sum.golang.org").await;
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let work = Work::new();
    let config = work.config_keyed(&[mirror.url()], &[sumdb.url()], Some(&sumdb.key), "");
    let gate = work.gateway(&config).await;
    let out = download(&work, "client", gate.addr("explicit proxy")).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(stored(&work, UTIL_ZIP).await.is_some());
    gate.kill().await;
    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_modgate"))
            .args(["cache", "verify", "--config", config.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let clean = verify();
    let said = text(&clean);
    assert!(clean.status.success(), "{said}");
    let summed = 2 * MODULES.len();
    assert!(
        said.contains(&format!("{summed} checked against the checksum database")),
        "{said}"
    );
    let go_mod = work.cache().join(UTIL_MOD.trim_start_matches('/'));
    std::fs::write(&go_mod, "module example.com/util\n\ngo 1.22\n").unwrap();
    let damaged = verify();
    let said = text(&damaged);
    assert!(!damaged.status.success(), "{said}");
    assert!(
        said.contains(
            "example.com/util/@v/v1.2.0.mod: against the checksum database: hash mismatch"
        ),
        "{said}"
    );
}

/// A checksum database that cannot be reached is nobody's bytes being
/// wrong: the file is not served (fail closed), the mirror is asked once,
/// not demoted, and no security event is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_fails_closed_and_blames_no_mirror() {
    let tree = tree();
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let gone = SumDb::start(tree.path(), "sum.golang.org").await;
    let (url, key) = (gone.url(), gone.key.clone());
    drop(gone);
    let work = Work::new();
    let config = work.config_keyed(&[mirror.url()], &[url], Some(&key), "");
    let gate = work.gateway(&config).await;
    let (status, _, _) = get(gate.addr("explicit proxy"), UTIL_MOD).await;
    assert_ne!(status, 200);
    assert_eq!(mirror.count(UTIL_MOD), 1, "{:?}", mirror.requests());
    let log = gate.log_when(|l| l.contains("cannot be checked")).await;
    assert!(log.contains("cannot be checked"), "{log}");
    let blamed = format!("mirror demoted mirror={}", mirror.url());
    assert!(
        !log.contains("verification failed") && !log.contains(&blamed),
        "{log}"
    );
    downloads_landed(gate.admin_addr().await, None).await;
    assert!(cached(&work, UTIL_MOD).is_none());
}
