//! The modgate binary: `check`, `explain`, and `run` on the embedded default.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs modgate to its end, the user's directories (the default CA and
/// cache) kept in a temporary home.
fn modgate(args: &[&str]) -> std::process::Output {
    let home = std::env::temp_dir().join(format!("modgate-cli-{}", std::process::id()));
    Command::new(env!("CARGO_BIN_EXE_modgate"))
        .args(args)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .output()
        .expect("modgate runs")
}

#[test]
fn check_reports_three_errors_with_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[proxy]\nlisten = [\"127.0.0.1:3128\"]\nconnect_ports = [443, 0]\n\n[upstream]\nconnect_timeout = \"soon\"\n\n[log]\nformat = \"xml\"\n",
    )
    .unwrap();
    let out = modgate(&["check", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    let shown = file.display().to_string();
    assert!(text.contains(&format!("{shown}:3:")), "{text}");
    assert!(text.contains("connect_ports: 0 is not a port"), "{text}");
    assert!(text.contains(&format!("{shown}:6:")), "{text}");
    assert!(text.contains("connect_timeout"), "{text}");
    assert!(text.contains(&format!("{shown}:9:")), "{text}");
    assert!(text.contains("log.format"), "{text}");
    assert!(text.contains("3 error(s)"), "{text}");
}

#[test]
fn check_accepts_the_default_the_example_and_the_deployment_configs() {
    let out = modgate(&["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/modgate.toml");
    let out = modgate(&["check", "--config", example]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = modgate(&["check", "--config", "/nonexistent/modgate.toml"]);
    assert_eq!(out.status.code(), Some(1));
    // In the same test, one after the other: check binds each listener to
    // see it is free, and these configs share 127.0.0.1:3128.
    for name in ["workstation", "gateway-explicit", "gateway-transparent"] {
        let path = format!("{}/config/{name}.toml", env!("CARGO_MANIFEST_DIR"));
        let out = modgate(&["check", "--config", &path]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            said,
            format!("config OK: {path}\n"),
            "it names the file it checked"
        );
    }
}

#[test]
fn explain_prints_decision_and_rule() {
    let out = modgate(&["explain", "https://example.org/x"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("target:   example.org:443 (CONNECT tunnel)"),
        "{text}"
    );
    assert!(text.contains("decision: direct"), "{text}");
    let out = modgate(&["explain", "example.org:25", "--client", "10.1.2.3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("decision: deny") && text.contains("connect_ports"),
        "{text}"
    );
    let out = modgate(&["explain", "http://example.org/", "--client", "203.0.113.9"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("decision: deny") && text.contains("allow_clients"),
        "{text}"
    );
}

#[test]
fn run_serves_and_stops_on_sigterm() {
    // With no --config, run reads the user's config file (here one whose
    // mirrors are on loopback: the start-up probe must not reach the public
    // ones) and creates the CA in the user's data directory
    // ($XDG_DATA_HOME/modgate), whatever the working directory.
    let dir = tempfile::tempdir().unwrap();
    let user_config = dir.path().join("config/modgate/modgate.toml");
    std::fs::create_dir_all(user_config.parent().unwrap()).unwrap();
    std::fs::write(
        &user_config,
        "[gomod]\nmirrors = [\"http://127.0.0.1:9\"]\nsumdb_mirrors = [\"http://127.0.0.1:9\"]\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_modgate"))
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    // Up to the summary's last line, logged once the mirrors were probed.
    for line in lines.by_ref().take(60) {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("  cache      ") {
            break;
        }
    }
    assert!(seen.contains("modgate listening"), "{seen}");
    assert!(seen.contains("created a new local CA"), "{seen}");
    // The start-up summary: the config, the listeners, the probes, the CA, the cache.
    let shown = format!("  config     {}", user_config.display());
    assert!(seen.contains(&shown), "{seen}");
    assert!(
        seen.contains("  mirrors    http://127.0.0.1:9 (UNREACHABLE: "),
        "{seen}"
    );
    let ca = dir.path().join("data/modgate/modgate-ca.pem");
    assert!(
        seen.contains(&format!("  CA         {} (sha256 ", ca.display())),
        "{seen}"
    );
    assert!(seen.contains("  cache      "), "{seen}");
    assert!(dir.path().join("data/modgate/modgate-ca.pem").exists());
    assert!(!dir.path().join("certs").exists());
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    // Waits for the exit itself; the 60 s only catch a hang.
    let (exited, status) = std::sync::mpsc::channel();
    std::thread::spawn(move || exited.send(child.wait().unwrap()));
    let status = status
        .recv_timeout(Duration::from_secs(60))
        .expect("modgate did not stop on SIGTERM");
    assert!(status.success(), "{status}");
}

/// `modgate <command> --config <file with text>` as a user with no
/// capabilities (nobody, when the tests run as root); the output and the
/// config file's path.
fn without_capabilities(command: &str, text: &str) -> (std::process::Output, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.path().join("mark.toml");
    std::fs::write(&file, text).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A copy nobody can reach, wherever the checkout lives.
    let bin = dir.path().join("modgate");
    std::fs::copy(env!("CARGO_BIN_EXE_modgate"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = file.to_str().unwrap().to_string();
    let as_root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let out = if as_root {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args([command, "--config", &config])
            .output()
            .unwrap()
    } else {
        modgate(&[command, "--config", &config])
    };
    (out, config)
}

/// Without CAP_NET_ADMIN (as root the test drops to `nobody` with setpriv,
/// which also drops every capability) `run` stops with a clear error.
#[test]
fn outbound_mark_without_cap_net_admin_is_a_clear_error() {
    let (out, _) = without_capabilities(
        "run",
        "[proxy]\nlisten = [\"127.0.0.1:0\"]\n[transparent]\noutbound_mark = 0x2a\n[intercept]\nenabled = false\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("cannot set SO_MARK 0x2a")
            && text.contains("needs CAP_NET_ADMIN")
            && text.matches("Operation not permitted").count() == 1,
        "{text}"
    );
}

/// `check` on `text`: exit 1, and each `(line, words)` shown at `file:line:`.
fn refused_at(text: &str, expected: &[(usize, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, text).unwrap();
    let out = modgate(&["check", "--config", file.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}\n{said}");
    for (line, words) in expected {
        let place = format!("{}:{line}:", file.display());
        assert!(
            said.lines()
                .any(|l| l.starts_with(&place) && l.contains(words)),
            "expected {words:?} at line {line}:\n{said}"
        );
    }
    assert!(!said.contains("secret"), "credentials shown: {said}");
}

#[test]
fn check_refuses_unsafe_and_impossible_configs_with_locations() {
    refused_at(
        "[proxy]\nmax_connections = 2305843009213693952\nmax_connections_per_client = 0\nmax_header_size = \"2GiB\"\nidle_timeout = \"100000h\"\n",
        &[
            (2, "max_connections must be between 1 and"),
            (3, "max_connections_per_client must be between 1 and"),
            (4, "max_header_size"),
            (5, "idle_timeout must be at most 30 days"),
        ],
    );
    refused_at("[proxy]\nlisten = []\n", &[(2, "proxy.listen is empty")]);
    refused_at(
        "[proxy]\nhttp_ports = [\"80\", \"90-80\", \"0\"]\n",
        &[(2, "empty range"), (2, "is not a port")],
    );
    refused_at(
        "[gomod]\nproxy_hosts = []\nsumdb_hosts = []\n",
        &[(2, "both empty while intercept.enabled")],
    );
    refused_at(
        "[gomod]\nmirrors = [\"https://user:secret@mirror.example/goproxy\"]\nsumdb_mirrors = [\"https://sum.example/?x=1\"]\n",
        &[(2, "carries credentials"), (3, "has a query")],
    );
    // A transparent listener alone is a valid way to serve.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ok.toml");
    std::fs::write(
        &file,
        "[proxy]\nlisten = []\n[transparent]\nhttps = \"0.0.0.0:3130\"\n",
    )
    .unwrap();
    let out = modgate(&["check", "--config", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ca_init_without_hosts_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nohosts.toml");
    std::fs::write(
        &config,
        format!(
            "[intercept]\nenabled = false\nca_dir = {:?}\n[gomod]\nproxy_hosts = []\nsumdb_hosts = []\n",
            dir.path().join("ca")
        ),
    )
    .unwrap();
    let ca_dir = dir.path().join("ca");
    let out = modgate(&["ca", "init", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no intercepted host names"), "{said}");
    assert!(!ca_dir.exists(), "ca init wrote {}", ca_dir.display());
}

/// Acceptance 5 of the first-hour issue: `check` refuses what `run` would
/// meet, each at its key's line: a listener in use, an auth file it cannot
/// read, a ca_dir where no CA can be created, a missing mirror CA file, an
/// upstream CA file with no certificate in it.
#[test]
fn check_refuses_what_run_would_meet_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let text = format!(
        "[proxy]\nlisten = [\"127.0.0.1:{port}\"]\nauth_file = {:?}\n\
         [intercept]\nca_dir = {:?}\n\
         [gomod]\nmirror_ca_file = {:?}\n\
         [cache]\ndir = {:?}\n[admin]\nlisten = \"\"\n[log]\naccess_log = {:?}\n\
         [upstream]\nca_file = {:?}\npac = {:?}\n",
        at("no-users"),
        blocker.join("ca").display().to_string(),
        at("no-mirror-ca.pem"),
        at("cache"),
        blocker.join("access.log").display().to_string(),
        blocker.display().to_string(),
        blocker.display().to_string(),
    );
    refused_at(
        &text,
        &[
            (2, "cannot listen on 127.0.0.1"),
            (3, "proxy.auth_file: cannot read"),
            (5, "intercept.ca_dir: no CA in"),
            (7, "gomod.mirror_ca_file"),
            (13, "log.access_log"),
            (15, "upstream.ca_file"),
            (16, "upstream.pac"),
        ],
    );
    drop(busy);
}

/// The same for `transparent.outbound_mark` without CAP_NET_ADMIN (as
/// nobody when the tests run as root).
#[test]
fn check_refuses_outbound_mark_without_the_capability() {
    let (out, config) = without_capabilities(
        "check",
        "[proxy]\nlisten = [\"127.0.0.1:0\"]\n[transparent]\noutbound_mark = 0x2a\n\
         [intercept]\nenabled = false\n[gomod]\nverify = \"off\"\n[cache]\nenabled = false\n\
         [admin]\nlisten = \"\"\n",
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("{config}:4:17: cannot set SO_MARK 0x2a"))
            && said.contains("CAP_NET_ADMIN"),
        "{said}"
    );
}

/// A command whose output is closed early (`modgate doctor | head -1`)
/// ends quietly, never with a panic (exit 101).
#[test]
fn a_closed_stdout_is_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["doctor", "--proxy", "http://127.0.0.1:9"][..],
        &["env"],
        &["explain", "https://proxy.golang.org/x/@v/list"],
        &["ca", "show"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_modgate"))
            .args(args)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader is gone before a line is written
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(101), "{args:?}: {said}");
        assert!(!said.contains("panicked"), "{args:?}: {said}");
    }
}

/// With no `--config`, `$MODGATE_CONFIG` names the file; every command
/// says on stderr which file it read.
#[test]
fn modgate_config_names_the_file_and_commands_say_which() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        "[upstream]\nproxy = \"http://parent.example:8080\"\nno_proxy = \"\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_modgate"))
        .args(["explain", "http://a.example/"])
        .env("MODGATE_CONFIG", &file)
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .output()
        .unwrap();
    let (said, noted) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(said.contains("decision: parent"), "{said}{noted}");
    assert!(
        noted.contains(&format!("modgate: config {}", file.display())),
        "{noted}"
    );
}

/// A cache command run by another user than the cache directory's owner
/// (root warming the service's cache) is refused, naming the user to run
/// as, instead of leaving files the service cannot write. Root, as CI runs.
#[test]
fn cache_commands_refuse_another_users_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let chowned = Command::new("chown")
        .arg("nobody")
        .arg(&cache)
        .status()
        .unwrap();
    assert!(chowned.success(), "chown needs root (CI runs as root)");
    let config = dir.path().join("modgate.toml");
    std::fs::write(&config, format!("[cache]\ndir = {cache:?}\n")).unwrap();
    let list = dir.path().join("go.sum");
    std::fs::write(&list, "").unwrap();
    for args in [
        vec!["cache", "prune"],
        vec!["cache", "warm", list.to_str().unwrap()],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_modgate"))
            .args(&args)
            .args(["--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {said}");
        assert!(
            said.contains("belongs to nobody") && said.contains("sudo -u nobody"),
            "{said}"
        );
    }
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        0,
        "wrote into it"
    );
}

/// `modgate reload` signals only a modgate: a stale pid file naming some
/// other process is refused, and that process is left alone.
#[test]
fn reload_signals_only_a_modgate() {
    let dir = tempfile::tempdir().unwrap();
    let mut other = Command::new("sleep").arg("30").spawn().unwrap();
    let pid_file = dir.path().join("modgate.pid");
    std::fs::write(&pid_file, format!("{}\n", other.id())).unwrap();
    let config = dir.path().join("modgate.toml");
    std::fs::write(&config, format!("[proxy]\npid_file = {pid_file:?}\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_modgate"))
        .args(["reload", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("not modgate"), "{said}");
    assert!(
        other.try_wait().unwrap().is_none(),
        "the other process was signalled"
    );
    let _ = other.kill();
    let _ = other.wait();
}
