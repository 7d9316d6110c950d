//! A modgate binary as a gateway for module tests: its directory (config,
//! CA, cache), go clients with their own GOPATH, and plain GOPROXY requests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use super::gomod::*;
use super::netns::Modgate;

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A test's directory: the gateway's config, CA and cache, and the clients' homes.
pub struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    pub fn new() -> Work {
        Work {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cache(&self) -> PathBuf {
        self.path("cache")
    }

    /// Writes a config: these mirrors, the cache in this directory, `extra`
    /// appended to `[cache]`.
    pub fn config(&self, mirrors: &[String], sumdb: &[String], extra: &str) -> PathBuf {
        self.config_keyed(mirrors, sumdb, None, extra)
    }

    /// As `config`; `key`: the test checksum database's key, which modgate
    /// then verifies every module against (`None`: no verification).
    pub fn config_keyed(
        &self,
        mirrors: &[String],
        sumdb: &[String],
        key: Option<&str>,
        extra: &str,
    ) -> PathBuf {
        let verification = match key {
            Some(key) => format!("sumdb_key = {key:?}\n"),
            None => "verify = \"off\"\n".to_string(),
        };
        let list = |urls: &[String]| {
            let quoted: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
            quoted.join(", ")
        };
        let toml = format!(
            "[proxy]\nlisten = [\"127.0.0.1:0\"]\nallow_clients = [\"127.0.0.0/8\"]\n\
             [intercept]\nca_dir = {:?}\n\
             [gomod]\nmirrors = [{}]\nsumdb_mirrors = [{}]\nmirror_timeout = \"10s\"\n{verification}\
             [cache]\ndir = {:?}\n{extra}\n",
            self.path("certs"),
            list(mirrors),
            list(sumdb),
            self.cache(),
        );
        let file = self.path("modgate.toml");
        std::fs::write(&file, toml).unwrap();
        file
    }

    /// A config with the `section` ecosystem (`pypi`, `npm`) on, from
    /// `mirrors` (`extra` in its section), and no Go mirrors (none of the
    /// public defaults a start-up probe would dial).
    pub fn packages_config(&self, section: &str, mirrors: &[String], extra: &str) -> PathBuf {
        let toml = format!(
            "[proxy]\nlisten = [\"127.0.0.1:0\"]\ndeny_destinations = []\n\
             [intercept]\nca_dir = {:?}\n\
             [gomod]\nmirrors = []\nsumdb_mirrors = []\nverify = \"off\"\n\
             [{section}]\nenabled = true\nmirrors = {mirrors:?}\n{extra}\n\
             [cache]\ndir = {:?}\n",
            self.path("certs"),
            self.cache(),
        );
        let config = self.path("modgate.toml");
        std::fs::write(&config, toml).unwrap();
        config
    }

    pub async fn gateway(&self, config: &Path) -> Modgate {
        self.gateway_env(config, &[]).await
    }

    /// The same with `env` added to modgate's environment.
    pub async fn gateway_env(&self, config: &Path, env: &[(&str, String)]) -> Modgate {
        let args = ["run", "--config", config.to_str().unwrap()];
        Modgate::spawn_env(None, &args, None, 1, env).await
    }

    /// A go client with its own GOPATH under `name`.
    pub fn go(&self, name: &str, proxy: Option<SocketAddr>, goproxy: &str, gosumdb: &str) -> GoEnv {
        let work = self.path(name);
        std::fs::create_dir_all(&work).unwrap();
        let ca = self.path("certs/modgate-ca.pem");
        let bundle = if ca.exists() {
            cert_bundle(&ca, &work.join("bundle.pem"))
        } else {
            PathBuf::from("/etc/ssl/certs/ca-certificates.crt")
        };
        GoEnv {
            proxy,
            netns: None,
            work,
            cert_bundle: bundle,
            goproxy: goproxy.to_string(),
            gosumdb: gosumdb.to_string(),
        }
    }
}

/// `go mod download all` of the test graph, in a fresh copy of the app.
pub async fn download_all(go: &GoEnv) {
    let app = go.work.join("app");
    build_app(&app);
    let out = go.run(&app, &["mod", "download", "all"]).await;
    assert!(out.status.success(), "go mod download all:\n{}", text(&out));
}

pub fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    build_goproxy_dir(dir.path(), "");
    dir
}

/// GET `path` from modgate's GOPROXY endpoint: the status, the body, and
/// when its first bytes arrived.
pub async fn get(gateway: SocketAddr, path: &str) -> (u16, Vec<u8>, Option<Instant>) {
    get_counting(gateway, path, &AtomicU64::new(0)).await
}

/// The same, adding each chunk's length to `received` as it arrives.
pub async fn get_counting(
    gateway: SocketAddr,
    path: &str,
    received: &AtomicU64,
) -> (u16, Vec<u8>, Option<Instant>) {
    let stream = tokio::net::TcpStream::connect(gateway).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header("host", gateway.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            first.get_or_insert_with(Instant::now);
            received.fetch_add(data.len() as u64, Ordering::Relaxed);
            bytes.extend_from_slice(&data);
        }
    }
    (status, bytes, first)
}

/// A tmpfs of `size` (mount's `-o size=`) mounted on `dir` (made if
/// missing) until the guard drops. Root, as CI runs.
pub fn tmpfs(dir: &Path, size: &str) -> Mounted {
    std::fs::create_dir_all(dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount needs root (CI runs as root)");
    Mounted(dir.to_path_buf())
}

/// Unmounts a test's tmpfs when it ends.
pub struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

pub const HUGE: &str = "/example.com/huge/@v/v1.0.0.zip";

/// A 20 MiB file at `HUGE` in the mirror tree.
pub fn huge(root: &Path) -> Vec<u8> {
    let data: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let file = root.join(HUGE.trim_start_matches('/'));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, &data).unwrap();
    data
}
