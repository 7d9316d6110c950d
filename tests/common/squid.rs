//! Debian's Squid as a corporate parent proxy for a test: its own
//! directory and config, a free loopback port, logins as the test asks
//! (`auth_param` lines), every request logged with the user it logged in
//! as. Run in the foreground; killed on drop.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SQUID: &str = "/usr/sbin/squid";
pub const HELPERS: &str = "/usr/lib/squid";

pub struct Squid {
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Squid {
    /// Squid on loopback requiring a login by `auth` (its `auth_param`
    /// lines); `extra` lines go at the end of its config. Three tries at a
    /// free port; panics with its log when it does not start in 30 s.
    pub fn start(auth: &str, extra: &str) -> Squid {
        for _ in 0..3 {
            if let Some(squid) = Self::try_start(auth, extra) {
                return squid;
            }
        }
        panic!("squid did not start");
    }

    fn try_start(auth: &str, extra: &str) -> Option<Squid> {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let at = |name: &str| dir.path().join(name).display().to_string();
        let config = format!(
            "http_port 127.0.0.1:{port}\n\
             pid_filename {pid}\ncache_log {cache_log}\n\
             access_log stdio:{access} squid\n\
             coredump_dir {dir}\ncache deny all\ncache_mem 4 MB\n\
             netdb_filename none\nshutdown_lifetime 0 seconds\n\
             dns_nameservers 127.0.0.1\n{auth}\n\
             acl logged_in proxy_auth REQUIRED\n\
             http_access allow logged_in\nhttp_access deny all\n{extra}\n",
            pid = at("squid.pid"),
            cache_log = at("cache.log"),
            access = at("access.log"),
            dir = dir.path().display(),
        );
        std::fs::write(dir.path().join("squid.conf"), config).unwrap();
        // Squid drops to the proxy user: its directory must be its own.
        chown_to_proxy(dir.path());
        let child = Command::new(SQUID)
            .args(["-N", "-f"])
            .arg(dir.path().join("squid.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("squid (apt-get install squid-openssl; scripts/test-deps.sh does)");
        let mut squid = Squid {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            dir,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = squid.child.try_wait() {
                eprintln!("squid exited:\n{}", squid.cache_log());
                return None;
            }
            if std::net::TcpStream::connect(squid.addr).is_ok() {
                return Some(squid);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("squid did not listen within 30 s:\n{}", squid.cache_log());
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its access log: one line per request, the user in the 8th field.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    pub fn cache_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cache.log")).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Gives `dir` to Debian's `proxy` user (Squid's effective user).
fn chown_to_proxy(dir: &std::path::Path) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, "proxy"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    std::os::unix::fs::chown(dir, Some(id("-u")), Some(id("-g"))).unwrap();
}
