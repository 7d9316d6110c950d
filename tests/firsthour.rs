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

/// The modgate binary on a free port of 127.0.0.1, modules from `mirror`:
/// its directory, its `host:port`, its config file, the process.
async fn gateway(mirror: &str) -> (tempfile::TempDir, String, std::path::PathBuf, Modgate) {
    let work = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let config = config(work.path(), &listen, mirror);
    let args = ["run", "--config", config.to_str().unwrap()];
    let modgate = Modgate::spawn(None, &args, None, 1).await;
    (work, listen, config, modgate)
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
    let (work, listen, config, _modgate) = gateway(&mirror.url()).await;
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

/// The variables `modgate env --config <config>` sets (its sh lines).
async fn env_of(config: &Path, data: &Path) -> Vec<(String, String)> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_modgate"))
        .args(["env", "--config", config.to_str().unwrap()])
        .env("XDG_DATA_HOME", data)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

/// `modgate doctor` with exactly `vars` in its environment.
async fn doctor(vars: &[(String, String)]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_modgate"))
        .arg("doctor")
        .env_clear()
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("doctor in time")
        .unwrap();
    (
        out.status.success(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

fn with(vars: &[(String, String)], changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars = vars.to_vec();
    for (name, value) in changes {
        vars.retain(|(k, _)| k != name);
        vars.push((name.to_string(), value.to_string()));
    }
    vars
}

/// Acceptance 3: doctor passes on a client set up by `modgate env`, and
/// names the fix on a client without the CA, with a wrong proxy address,
/// and when every mirror of the gateway is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_good_client_and_names_each_fix() {
    let modules = tree();
    let mirror = Mirror::start(modules.path().to_path_buf(), Behaviour::Serve).await;
    let (work, listen, config, _modgate) = gateway(&mirror.url()).await;
    let good = env_of(&config, &work.path().join("data")).await;

    let (ok, said) = doctor(&good).await;
    assert!(ok, "{said}");
    assert_eq!(said.matches("ok    ").count(), 5, "{said}");

    let empty = work.path().join("empty-dir");
    std::fs::create_dir_all(&empty).unwrap();
    let no_ca = with(
        &good,
        &[
            ("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"),
            ("SSL_CERT_DIR", empty.to_str().unwrap()),
        ],
    );
    let (ok, said) = doctor(&no_ca).await;
    assert!(!ok, "{said}");
    assert!(
        said.contains("FAIL  the go command trusts modgate's CA"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "fix: mkdir -p ~/.config && curl -fsS --noproxy '*' http://{listen}/ca.pem"
        )),
        "{said}"
    );
    // The fix works as printed, in a home without ~/.config.
    let fix = said
        .lines()
        .find_map(|l| l.trim().strip_prefix("fix: mkdir"))
        .unwrap();
    let fix = format!("mkdir{}", fix.split("   (").next().unwrap());
    let home = work.path().join("fresh-home");
    std::fs::create_dir_all(&home).unwrap();
    let out = tokio::process::Command::new("sh")
        .args(["-c", &format!("{fix} && test -s \"$SSL_CERT_FILE\"")])
        .env("HOME", &home)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{fix}: {}", stderr(&out));
    let mut fixed = no_ca.clone();
    fixed.retain(|(k, _)| k != "SSL_CERT_FILE");
    fixed.push((
        "SSL_CERT_FILE".into(),
        home.join(".config/modgate-bundle.pem")
            .display()
            .to_string(),
    ));
    let (ok, said) = doctor(&fixed).await;
    assert!(ok, "after the fix: {said}");

    let wrong = format!("http://127.0.0.1:{}", free_port());
    let names = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"];
    let changes: Vec<(&str, &str)> = names.iter().map(|n| (*n, wrong.as_str())).collect();
    let (ok, said) = doctor(&with(&good, &changes)).await;
    assert!(!ok, "{said}");
    assert!(
        said.contains("FAIL  proxy answers: nothing answers at"),
        "{said}"
    );
    assert!(said.contains("fix: check the proxy address"), "{said}");

    // Upper case only: the go command reads it, so doctor passes, and
    // names what other tools would miss.
    let upper: Vec<(String, String)> = good
        .iter()
        .filter(|(k, _)| k != "https_proxy" && k != "http_proxy")
        .cloned()
        .collect();
    let (ok, said) = doctor(&upper).await;
    assert!(ok, "{said}");
    assert!(said.contains("not set: https_proxy, http_proxy"), "{said}");
    let (ok, said) = doctor(&with(&good, &[("http_proxy", &wrong)])).await;
    assert!(
        !ok && said.contains("FAIL  proxy variables: http_proxy name(s) another proxy"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_says_when_every_mirror_of_the_gateway_is_down() {
    let refused = format!("http://127.0.0.1:{}", free_port());
    let (work, listen, config, modgate) = gateway(&refused).await;
    let good = env_of(&config, &work.path().join("data")).await;
    // A module request fails: the gateway demotes its one mirror.
    let module = format!("http://{listen}/example.com/util/@v/v1.2.0.mod");
    let out = curl(&["-s", &module]).await;
    assert!(
        stdout(&out).contains("every mirror failed"),
        "{}",
        modgate.log()
    );
    let (ok, said) = doctor(&good).await;
    assert!(!ok, "{said}");
    assert!(
        said.contains("FAIL  the gateway's mirrors: every module mirror of the gateway is down"),
        "{said}"
    );
    assert!(
        said.contains("fix: nothing to fix on this machine"),
        "{said}"
    );
    assert_eq!(said.matches("ok    ").count(), 4, "{said}");
}
