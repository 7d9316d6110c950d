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
    /// Its `https_port`, when started with one.
    pub tls_addr: Option<SocketAddr>,
    child: Child,
    dir: tempfile::TempDir,
}

/// The common name of the CA that signs an https_port's certificate.
pub const PARENT_CA: &str = "Example Corp Parent CA";

impl Squid {
    /// Squid on loopback requiring a login by `auth` (its `auth_param`
    /// lines); `extra` lines go at the end of its config. Three tries at a
    /// free port; panics with its log when it does not start in 30 s.
    pub fn start(auth: &str, extra: &str) -> Squid {
        Self::start_with(auth, extra, false, &[])
    }

    /// The same with `env` added to Squid's environment (and its helpers').
    pub fn start_env(auth: &str, env: &[(&str, String)]) -> Squid {
        Self::start_with(auth, "", false, env)
    }

    /// The same with an `https_port` too, its certificate (for 127.0.0.1)
    /// signed by a CA named [`PARENT_CA`], written to `ca.pem` beside it.
    pub fn start_tls(auth: &str) -> Squid {
        Self::start_with(auth, "", true, &[])
    }

    fn start_with(auth: &str, extra: &str, tls: bool, env: &[(&str, String)]) -> Squid {
        for _ in 0..3 {
            if let Some(squid) = Self::try_start(auth, extra, tls, env) {
                return squid;
            }
        }
        panic!("squid did not start");
    }

    fn try_start(auth: &str, extra: &str, tls: bool, env: &[(&str, String)]) -> Option<Squid> {
        let dir = tempfile::tempdir().unwrap();
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let port = free();
        let tls_port = tls.then(free);
        let https = match tls_port {
            Some(tls_port) => {
                let (cert, key) = tls_files(dir.path());
                format!("https_port 127.0.0.1:{tls_port} tls-cert={cert} tls-key={key}\n")
            }
            None => String::new(),
        };
        let extra = format!("{https}{extra}");
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
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("squid (apt-get install squid-openssl; scripts/test-deps.sh does)");
        let mut squid = Squid {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            tls_addr: tls_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
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

/// A CA (`ca.pem`) and a certificate for 127.0.0.1 it signed, with its
/// key, in `dir`: the paths of the certificate and the key.
fn tls_files(dir: &std::path::Path) -> (String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, PARENT_CA);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(ca.der(), ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_file, key_file) = (dir.join("parent.pem"), dir.join("parent.key"));
    std::fs::write(&cert_file, leaf.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (
        cert_file.display().to_string(),
        key_file.display().to_string(),
    )
}

/// Gives `dir` to Debian's `proxy` user (Squid's effective user).
pub fn chown_to_proxy(dir: &std::path::Path) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, "proxy"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    std::os::unix::fs::chown(dir, Some(id("-u")), Some(id("-g"))).unwrap();
}
