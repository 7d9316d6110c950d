//! The README's quick start, run as written by a new user: a fresh home
//! directory, started from one directory and then from another, inside a
//! network namespace the test makes (so `127.0.0.1:3128` is its own and the
//! mirrors are the test's). One CA both times, the go command working
//! through modgate both times.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::gomod::{Behaviour, Mirror, Module, SumDb, go_binary, write_module};
use common::netns::{Netns, require_root};
use common::*;

/// The lines of the README's quick-start block, comments dropped.
fn quick_start() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("<!-- quick-start")
        .nth(1)
        .and_then(|rest| rest.split("```sh\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("a quick-start block in README.md");
    block
        .lines()
        .map(|line| line.split("  #").next().unwrap().trim().to_string())
        .filter(|line| !line.is_empty())
        .collect()
}

/// Whether something accepts on `addr` inside `ns`.
fn accepts(ns: &Netns, addr: &str) -> bool {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    ns.enter(move || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    })
}

/// A new user's environment: this home, the binaries on PATH, the test
/// checksum database's key (the go command's own key would refuse it).
fn user_env(home: &Path, sumdb_key: &str) -> Vec<(&'static str, String)> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_modgate"));
    let path = format!(
        "{}:{}:/usr/bin:/bin",
        bin.parent().unwrap().display(),
        go_binary().parent().unwrap().display()
    );
    vec![
        ("HOME", home.display().to_string()),
        ("PATH", path),
        ("GOSUMDB", sumdb_key.to_string()),
        ("GOTOOLCHAIN", "local".into()),
        ("GOTELEMETRY", "off".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quick_start_works_from_any_directory() {
    require_root();
    let lines = quick_start();
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert!(lines[0].starts_with("cargo install"), "{lines:#?}");
    assert_eq!(lines[1], "modgate run &");
    let ns = Netns::new("qs");
    let modules = tempfile::tempdir().unwrap();
    let text = Module {
        path: "golang.org/x/text",
        version: "v0.1.0",
        package: "text",
        func: "Hello",
        blob: 0,
    };
    write_module(modules.path(), &text, "");
    let mirror = Mirror::serve(
        ns.listener("127.0.0.1:0"),
        modules.path().to_path_buf(),
        Behaviour::Serve,
    );
    let sumdb = SumDb::start_in(Some(&ns.name), modules.path(), "sum.golang.org").await;
    // The user's config: this network's mirrors (the default names public ones).
    let home = tempfile::tempdir().unwrap();
    let config_dir = home.path().join(".config/modgate");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("modgate.toml"),
        format!(
            "[gomod]\nmirrors = [\"{}\"]\nsumdb_mirrors = [\"{}\"]\nsumdb_key = {:?}\n",
            mirror.url(),
            sumdb.url(),
            sumdb.key
        ),
    )
    .unwrap();
    let env = user_env(home.path(), &sumdb.key);
    let mut fingerprints = Vec::new();
    for place in ["first-dir", "second-dir"] {
        let dir = home.path().join(place);
        std::fs::create_dir_all(&dir).unwrap();
        // `modgate run &`: started in the background, as the shell would.
        let log = home.path().join(format!("{place}.log"));
        let mut run = command_in(Some(&ns.name), "modgate");
        run.arg("run")
            .current_dir(&dir)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        let mut modgate = run.spawn().unwrap();
        for _ in 0..600 {
            if accepts(&ns, "127.0.0.1:3128") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            accepts(&ns, "127.0.0.1:3128"),
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        // The rest in one shell, as typed.
        let script = format!("set -e\n{}\n", lines[2..].join("\n"));
        let shell = command_in(Some(&ns.name), "sh")
            .args(["-c", &script])
            .current_dir(&dir)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(120), shell)
            .await
            .expect("in time")
            .unwrap();
        let said = format!("{}{}", stdout(&out), stderr(&out));
        let log_text = std::fs::read_to_string(&log).unwrap();
        assert!(out.status.success(), "{said}\n{log_text}");
        assert_eq!(said.matches("\"Version\": \"v0.1.0\"").count(), 2, "{said}");
        assert!(!said.contains("\"Error\""), "{said}");
        modgate.kill().await.unwrap();
        let log_text = std::fs::read_to_string(&log).unwrap();
        let fingerprint = log_text
            .split("(sha256 ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or_else(|| panic!("no CA line: {log_text}"))
            .to_string();
        fingerprints.push(fingerprint);
        assert!(!dir.join("certs").exists(), "a CA in the working directory");
        // A cold module cache again, so the second round goes through modgate too.
        let gopath = home.path().join("go");
        let _ = std::process::Command::new("chmod")
            .args(["-R", "u+w"])
            .arg(&gopath)
            .status();
        let _ = std::fs::remove_dir_all(&gopath);
    }
    assert_eq!(
        fingerprints[0], fingerprints[1],
        "one CA, whatever the directory"
    );
    let data = home.path().join(".local/share/modgate");
    assert!(data.join("modgate-ca.pem").exists());
    assert!(
        mirror.count("/golang.org/x/text/@v/v0.1.0.zip") >= 1,
        "{:?}",
        mirror.requests()
    );
}
