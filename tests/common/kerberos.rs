//! A real MIT Kerberos realm for a test (Debian's krb5-kdc): `CORP.TEST`
//! in a temporary directory, its KDC on a free loopback port, and keytabs
//! for the parent's service (`HTTP/<parent host>`) and for the gateway's
//! own identity (`modgate/gw.corp.test`). Nothing outside the directory is
//! touched: every tool is pointed at its files by `KRB5_CONFIG` and
//! `KRB5_KDC_PROFILE`. The KDC is killed on drop.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REALM: &str = "CORP.TEST";
/// The gateway's principal (without the realm).
pub const GATEWAY: &str = "modgate/gw.corp.test";

pub struct Realm {
    dir: tempfile::TempDir,
    kdc: Child,
    pub port: u16,
}

impl Realm {
    /// The realm, with `HTTP/<service_host>` keyed in `http.keytab` (owned
    /// by Squid's proxy user), the gateway's key in `modgate.keytab`, and
    /// an older key of the gateway's (stale since) in `stale.keytab`.
    pub fn start(service_host: &str) -> Realm {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        // Squid's helper (the proxy user) reads krb5.conf and its keytab here.
        set_mode(&path, 0o755);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let at = |name: &str| path.join(name).display().to_string();
        std::fs::write(
            path.join("krb5.conf"),
            format!(
                "[libdefaults]\n default_realm = {REALM}\n dns_lookup_realm = false\n\
                 dns_lookup_kdc = false\n rdns = false\n dns_canonicalize_hostname = false\n\
                 [realms]\n {REALM} = {{\n  kdc = 127.0.0.1:{port}\n }}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            path.join("kdc.conf"),
            format!(
                "[kdcdefaults]\n kdc_ports = {port}\n kdc_tcp_ports = {port}\n\
                 [realms]\n {REALM} = {{\n  database_name = {}\n  key_stash_file = {}\n  acl_file = {}\n }}\n\
                 [logging]\n kdc = FILE:{}\n",
                at("principal"),
                at("stash"),
                at("kadm5.acl"),
                at("kdc.log"),
            ),
        )
        .unwrap();
        set_mode(&path.join("krb5.conf"), 0o644);
        let realm_env = env_of(&path);
        let run = |args: &[&str]| {
            let out = Command::new(args[0])
                .args(&args[1..])
                .envs(realm_env.iter().map(|(k, v)| (k, v)))
                .output()
                .expect("MIT Kerberos (apt-get install krb5-kdc krb5-admin-server; scripts/test-deps.sh does)");
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let master = format!("master-{}", std::process::id());
        run(&["kdb5_util", "create", "-s", "-r", REALM, "-P", &master]);
        let service = format!("HTTP/{service_host}");
        for query in [
            format!("addprinc -randkey {service}"),
            format!("addprinc -randkey {GATEWAY}"),
            format!("ktadd -k {} {service}", at("http.keytab")),
            // Each ktadd gives the principal a new key: the first keytab
            // holds one the KDC no longer has.
            format!("ktadd -k {} {GATEWAY}", at("stale.keytab")),
            format!("ktadd -k {} {GATEWAY}", at("modgate.keytab")),
        ] {
            run(&["kadmin.local", "-q", &query]);
        }
        super::squid::chown_to_proxy(&path.join("http.keytab"));
        for keytab in ["http.keytab", "modgate.keytab", "stale.keytab"] {
            set_mode(&path.join(keytab), 0o600);
        }
        let kdc = Command::new("krb5kdc")
            .args(["-n", "-P", &at("kdc.pid")])
            .envs(realm_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let realm = Realm { dir, kdc, port };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the KDC did not listen within 20 s:\n{}",
                realm.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        realm
    }

    /// `KRB5_CONFIG` and `KRB5_KDC_PROFILE` for any Kerberos user of it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        env_of(self.dir.path())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The KDC's log: one line per ticket it issued or refused.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("kdc.log")).unwrap_or_default()
    }
}

fn env_of(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        ("KRB5_CONFIG", dir.join("krb5.conf").display().to_string()),
        (
            "KRB5_KDC_PROFILE",
            dir.join("kdc.conf").display().to_string(),
        ),
    ]
}

fn set_mode(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

impl Drop for Realm {
    fn drop(&mut self) {
        let _ = self.kdc.kill();
        let _ = self.kdc.wait();
    }
}
