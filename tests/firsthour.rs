//! The first hour with modgate: the CA is found the same way from any
//! directory and offered to clients (`/ca.pem`, `/ca`), and
//! `eval "$(modgate env)"` is all a shell needs for curl and the go command.

mod common;

use std::path::Path;
use std::time::Duration;

use common::gateway::tree;
use common::gomod::{Behaviour, Mirror, build_app, go_binary};
use common::netns::Modgate;
use common::*;

/// A port free now on 127.0.0.1 (for a config that must name its port).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A gateway config listening on `listen`, modules from `mirror`.
fn config(work: &Path, listen: &str, mirror: &str) -> std::path::PathBuf {
    let path = work.join("modgate.toml");
    std::fs::write(
        &path,
        format!(
            "[proxy]\nlisten = [\"{listen}\"]\nallow_clients = [\"127.0.0.0/8\"]\n\
             [intercept]\nca_dir = {:?}\n\
             [gomod]\nmirrors = [\"{mirror}\"]\nsumdb_mirrors = [\"{mirror}\"]\nverify = \"off\"\n\
             [cache]\ndir = {:?}\n",
            work.join("certs"),
            work.join("cache"),
        ),
    )
    .unwrap();
    path
}

/// `/ca.pem` is the CA `run` uses; `/ca` shows its fingerprint and how to
/// trust it, naming this proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explicit_listener_offers_the_ca() {
    let work = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&format!(
        "[proxy]\nallow_clients = [\"127.0.0.0/8\"]\n[intercept]\nca_dir = {:?}\n",
        work.path().join("certs")
    ))
    .await;
    let out = curl(&["-sf", &format!("{}/ca.pem", proxy.url())]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let on_disk = std::fs::read_to_string(work.path().join("certs/modgate-ca.pem")).unwrap();
    assert_eq!(stdout(&out).trim(), on_disk.replace("\r\n", "\n").trim());
    let page = stdout(&curl(&["-sf", &format!("{}/ca", proxy.url())]).await);
    // `ca show --pem` with a config naming that ca_dir shows the same one.
    let config = work.path().join("modgate.toml");
    let toml = format!("[intercept]\nca_dir = {:?}\n", work.path().join("certs"));
    std::fs::write(&config, toml).unwrap();
    let shown = run_modgate(&["ca", "show", "--pem", "--config", config.to_str().unwrap()]).await;
    assert_eq!(stdout(&shown), stdout(&out), "{}", stderr(&shown));
    assert!(
        page.contains(&format!("http://{}/ca.pem", proxy.addr)),
        "{page}"
    );
    assert!(
        page.contains("update-ca-certificates") && page.contains("certutil"),
        "{page}"
    );
    let fingerprint = page
        .split("<code id=\"fingerprint\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap();
    assert_eq!(fingerprint.len(), 95, "{fingerprint}");
}

/// Acceptance 2: `eval "$(modgate env)"` in a plain shell makes curl and the
/// go command go through modgate (both cases of the proxy variables set,
/// the CA trusted through the bundle it writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_modgate_env_makes_curl_and_go_work() {
    let modules = tree();
    let mirror = Mirror::start(modules.path().to_path_buf(), Behaviour::Serve).await;
    let work = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let config = config(work.path(), &listen, &mirror.url());
    let args = ["run", "--config", config.to_str().unwrap()];
    let _modgate = Modgate::spawn(None, &args, None, 1).await;
    let app = work.path().join("app");
    build_app(&app);
    let go_dir = go_binary().parent().unwrap().to_path_buf();
    let script = format!(
        "set -e\n\
         eval \"$({bin} env --config {config:?})\"\n\
         for v in HTTP_PROXY http_proxy HTTPS_PROXY https_proxy NO_PROXY no_proxy; do\n\
         \x20 eval \"test \\\"\\${{$v}}\\\" \" || {{ echo \"$v is not set\"; exit 1; }}\n\
         done\n\
         test \"$https_proxy\" = \"http://{listen}\"\n\
         curl -sfS https://proxy.golang.org/example.com/util/@v/v1.2.0.mod\n\
         cd {app:?} && go mod download -json example.com/util@v1.2.0\n",
        bin = env!("CARGO_BIN_EXE_modgate"),
    );
    let home = work.path().join("home");
    let gopath = home.join("go");
    let run = tokio::process::Command::new("sh")
        .args(["-c", &script])
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", go_dir.display()))
        .env("HOME", &home)
        .env("XDG_DATA_HOME", work.path().join("data"))
        .env("GOPATH", &gopath)
        .env("GOMODCACHE", gopath.join("pkg/mod"))
        .env("GOCACHE", home.join("gocache"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOSUMDB", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOTELEMETRY", "off")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("in time")
        .unwrap();
    let said = format!("{}\n{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("module example.com/util"),
        "curl got the go.mod: {said}"
    );
    assert!(
        said.contains("\"Version\": \"v1.2.0\""),
        "go downloaded it: {said}"
    );
    assert!(
        mirror.count("/example.com/util/@v/v1.2.0.zip") == 1,
        "through modgate"
    );
    assert!(work.path().join("data/modgate/bundle.pem").exists());
}
