//! PyPI for a test: packages made by `tests/tools/pypi/packages.py`, a
//! real PyPI server (PyPI's pypiserver, installed by scripts/test-deps.sh)
//! serving them on loopback, and pip (Debian's, in a fresh venv) to install
//! them.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Debian's Python, whose venvs carry Debian's pip.
pub const PYTHON: &str = "/usr/bin/python3";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Writes the test packages (alpha needs beta; gamma is an sdist) into
/// `dir`, and into `tampered` the same names with other bytes for alpha.
pub fn packages(dir: &Path, tampered: Option<&Path>) {
    packages_with_big(dir, tampered, 0);
}

/// The same, with `big`, a wheel holding `big_bytes` random bytes.
pub fn packages_with_big(dir: &Path, tampered: Option<&Path>, big_bytes: usize) {
    let mut command = Command::new(PYTHON);
    command
        .arg(repo("tests/tools/pypi/packages.py"))
        .arg(dir)
        .env("MODGATE_BIG_WHEEL", big_bytes.to_string());
    if let Some(tampered) = tampered {
        command.arg(tampered);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct PypiServer {
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl PypiServer {
    /// pypiserver serving `packages` on a free loopback port, its request
    /// log in `log`.
    pub fn start(packages: &Path, log: &Path) -> PypiServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = repo("target/test-tools/venv/bin/pypi-server");
        let child = Command::new(&server)
            .args(["run", "-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["--log-file"])
            .arg(log)
            .arg("-v")
            .arg(packages)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pypiserver (scripts/test-deps.sh installs it)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "pypiserver did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        PypiServer {
            addr,
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its log: a line per request it served.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PypiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh venv at `dir`, with Debian's pip and setuptools.
pub fn venv(dir: &Path) -> PathBuf {
    let out = Command::new(PYTHON)
        .args(["-m", "venv"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.to_path_buf()
}

/// `pip install <packages>` in `venv` from `index` (no other index, no
/// pip cache), with `env` added; bounded to two minutes.
pub async fn pip_install(
    venv: &Path,
    index: &str,
    packages: &[&str],
    env: &[(&str, String)],
) -> Output {
    let mut command = tokio::process::Command::new(venv.join("bin/pip"));
    command
        .args([
            "install",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-build-isolation",
        ])
        .args(["--index-url", index, "--timeout", "20", "--retries", "0"])
        .args(packages)
        // Nothing of this machine's pip settings (indexes, find-links,
        // certificate bundles that override --cert): only what the test says.
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", venv)
        .env("PIP_CONFIG_FILE", "/dev/null")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("pip took over two minutes")
        .unwrap()
}

/// What `import <name>; print(<name>.VERSION)` prints in `venv`.
pub fn version_of(venv: &Path, name: &str) -> String {
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", &format!("import {name}; print({name}.VERSION)")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
