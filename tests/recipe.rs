//! The README's transparent-gateway recipe, run as written (root only; CI
//! runs as root). Its install commands run inside the gateway's network
//! namespace in a private mount namespace whose /etc, /usr/local, /var/lib
//! and /var/log are overlays on a tmpfs, so they change nothing on the host.
//! The unit is then started the way systemd would: its directories, its
//! user, its capability bounding set, no ambient capabilities, no new
//! privileges. The recipe's nftables rules redirect the LAN, and a client
//! with no proxy settings (only the CA, fetched from the gateway) downloads
//! modules.
//!
//! Topology: `client` ── veth ── `gw`, as in tests/transparent.rs; the
//! module hosts resolve (client's /etc/hosts) to an address on `gw`'s
//! loopback; the mirror and checksum database listen on `gw`'s 127.0.0.1.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::gomod::*;
use common::netns::{Netns, require_root, veth};

const MODULE_HOSTS: &str = "10.202.0.10";
const LAN: &str = "10.201.0.0/24";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The commands of the recipe's first step (install), comments dropped.
fn install_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let section = readme.split("## Transparent gateway").nth(1).unwrap();
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    block
        .lines()
        .map(|l| l.split("  #").next().unwrap().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// `key=value` lines of the unit's `[Service]` section.
fn unit(key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo("deploy/modgate.service")).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

fn one(key: &str) -> String {
    let values = unit(key);
    assert_eq!(values.len(), 1, "{key} in the unit: {values:?}");
    values[0].clone()
}

/// The shell that installs and starts the gateway as the recipe and unit
/// say, in a private mount namespace, ending in `exec` of the service.
fn gateway_script(scratch: &Path, checkout: &Path, edits: &str) -> String {
    let mut script = String::from("set -e\n");
    script.push_str(&format!("mount -t tmpfs tmpfs {scratch:?}\n"));
    for dir in ["etc", "usr/local", "var/lib", "var/log"] {
        let (upper, work) = (
            scratch.join(dir).join("upper"),
            scratch.join(dir).join("work"),
        );
        script.push_str(&format!(
            "mkdir -p {upper:?} {work:?}\nmount -t overlay overlay -o lowerdir=/{dir},upperdir={},workdir={} /{dir}\n",
            upper.display(),
            work.display()
        ));
    }
    script.push_str(&format!("cd {checkout:?}\n"));
    for command in install_commands() {
        // The release build is the test's own binary, already in place.
        if !command.starts_with("cargo build") {
            script.push_str(&command);
            script.push('\n');
        }
    }
    script.push_str(edits);
    // What systemd does for the unit before ExecStart.
    let (user, group) = (one("User"), one("Group"));
    let state = format!("/var/lib/{}", one("StateDirectory"));
    let logs = format!("/var/log/{}", one("LogsDirectory"));
    script.push_str(&format!(
        "install -d -o {user} -g {group} -m {} {state}\ninstall -d -o {user} -g {group} -m 0755 {logs}\n\
         cd {}\numask {}\n",
        one("StateDirectoryMode"),
        one("WorkingDirectory"),
        one("UMask"),
    ));
    assert_eq!(
        one("AmbientCapabilities"),
        "",
        "the unit grants no ambient capabilities"
    );
    assert_eq!(one("NoNewPrivileges"), "yes");
    let bounding = one("CapabilityBoundingSet").to_ascii_lowercase();
    let bounding = bounding.trim_start_matches("cap_");
    let setpriv = format!(
        "setpriv --reuid={user} --regid={group} --init-groups --inh-caps=-all \
         --bounding-set=-all,+{bounding} --no-new-privs env HOME={state} USER={user}"
    );
    for pre in unit("ExecStartPre") {
        script.push_str(&format!("{setpriv} {pre}\n"));
    }
    script.push_str(&format!("exec {setpriv} {}\n", one("ExecStart")));
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transparent_gateway_recipe_works_as_written() {
    require_root();
    let client = Netns::new("rc");
    let gw = Netns::new("rg");
    let (_, lan_if) = veth(&client, "10.201.0.2/24", &gw, "10.201.0.1/24");
    client.exec(&["ip", "route", "add", "default", "via", "10.201.0.1"]);
    gw.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{MODULE_HOSTS}/32"),
        "dev",
        "lo",
    ]);
    client.hosts(&format!(
        "127.0.0.1 localhost\n{MODULE_HOSTS} proxy.golang.org sum.golang.org\n"
    ));
    let tree = tempfile::tempdir().unwrap();
    build_goproxy_dir(tree.path(), "");
    let mirror = Mirror::serve(
        gw.listener("127.0.0.1:0"),
        tree.path().to_path_buf(),
        Behaviour::Serve,
    );
    let sumdb = SumDb::start_in(Some(&gw.name), tree.path(), "sum.golang.org").await;

    // A checkout: the release binary where `cargo build --release` puts it,
    // config/ and deploy/ as in the repository.
    let work = tempfile::tempdir().unwrap();
    let checkout = work.path().join("modgate");
    std::fs::create_dir_all(checkout.join("target/release")).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_modgate"),
        checkout.join("target/release/modgate"),
    )
    .unwrap();
    for dir in ["config", "deploy"] {
        let status = std::process::Command::new("cp")
            .args(["-r"])
            .arg(repo(dir))
            .arg(&checkout)
            .status()
            .unwrap();
        assert!(status.success());
    }
    // "In /etc/modgate/modgate.toml set proxy.allow_clients to the LAN, the
    // mirrors, and gomod.private": this network's (the test checksum
    // database has its own key).
    let file = "/etc/modgate/modgate.toml";
    let edits = format!(
        "sed -i 's|^allow_clients = .*|allow_clients = [\"{LAN}\"]|' {file}\n\
         sed -i 's|^mirrors = .*|mirrors = [\"{m}\"]|; s|^sumdb_mirrors = .*|sumdb_mirrors = [\"{s}\"]\\nsumdb_key = \"{k}\"|' {file}\n",
        m = mirror.url(),
        s = sumdb.url(),
        k = sumdb.key,
    );
    let scratch = work.path().join("overlays");
    std::fs::create_dir_all(&scratch).unwrap();
    let log = work.path().join("gateway.log");
    let script = gateway_script(&scratch, &checkout, &edits);
    let mut service = common::command_in(Some(&gw.name), "unshare");
    service
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdout(std::fs::File::create(work.path().join("install.log")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true);
    let mut service = service.spawn().unwrap();
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    for _ in 0..600 {
        if read(&log).matches("modgate listening").count() >= 3 {
            break;
        }
        if let Ok(Some(status)) = service.try_wait() {
            panic!(
                "the service ended ({status}):\n{}\n{}",
                read(&work.path().join("install.log")),
                read(&log)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        read(&log).matches("modgate listening").count() >= 3,
        "{}",
        read(&log)
    );
    assert!(
        read(&work.path().join("install.log")).contains("config OK: /etc/modgate/modgate.toml")
    );

    // Step 3, as written, with this gateway's LAN interface.
    let nft = repo("deploy/nftables-gateway.sh");
    gw.exec_env(&[nft.to_str().unwrap(), "up"], &[("LAN_IF", lan_if)]);

    // A client with no proxy settings: it trusts the CA the gateway offers.
    let ca = common::command_in(Some(&client.name), "curl")
        .args(["-fsS", "--max-time", "10", "http://10.201.0.1:3128/ca.pem"])
        .output()
        .await
        .unwrap();
    assert!(
        ca.status.success(),
        "{}",
        String::from_utf8_lossy(&ca.stderr)
    );
    let ca_file = work.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.stdout).unwrap();
    let bundle = cert_bundle(&ca_file, &work.path().join("bundle.pem"));
    let go = GoEnv {
        proxy: None,
        netns: Some(client.name.clone()),
        work: work.path().to_path_buf(),
        cert_bundle: bundle,
        goproxy: "https://proxy.golang.org,direct".into(),
        gosumdb: sumdb.key.clone(),
    };
    let app = work.path().join("app");
    build_app(&app);
    let out = go.run(&app, &["mod", "download", "all"]).await;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}\n{}", read(&log));
    assert!(
        mirror.requests().iter().any(|p| p.ends_with(".zip")),
        "{:?}",
        mirror.requests()
    );
    // It ran as the service user, not root.
    let pid = service.id().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(!uid.split_whitespace().skip(1).any(|u| u == "0"), "{uid}");
    let caps = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert!(caps.ends_with("0000000000000000"), "{caps}");
}
