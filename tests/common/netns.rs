//! Network namespaces for the transparent-mode tests (root only). Each test
//! creates its own, with names unique to the test process, and removes them
//! (with their veth links, rules and /etc/netns files) on drop. In-process
//! servers open their sockets inside a namespace from a short-lived thread
//! that joined it: a socket stays in the namespace it was created in.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

/// Fails the test with a clear message when it cannot build namespaces.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "transparent-mode tests build network namespaces and need root (CI runs as root)"
    );
}

pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `tag` must be unique among the tests of one test binary.
    pub fn new(tag: &str) -> Netns {
        let name = format!("mg{}{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace; panics with its output on failure.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_env(args, &[])
    }

    pub fn exec_env(&self, args: &[&str], env: &[(&str, String)]) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        for (key, value) in env {
            cmd.env(key, value);
        }
        run(&mut cmd)
    }

    /// `/etc/hosts` as seen by commands run with `ip netns exec`.
    pub fn hosts(&self, text: &str) {
        let dir = self.etc_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), text).unwrap();
    }

    fn etc_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.name)
    }

    /// Runs `f` on a thread that joined this namespace.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            // SAFETY: a valid namespace fd; setns affects only this thread,
            // which ends when `f` returns.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    }

    /// A listener inside the namespace, served by this process's runtime.
    pub fn listener(&self, addr: &str) -> tokio::net::TcpListener {
        let addr = addr.to_string();
        let listener = self.enter(move || std::net::TcpListener::bind(&addr).unwrap());
        listener.set_nonblocking(true).unwrap();
        tokio::net::TcpListener::from_std(listener).unwrap()
    }

    /// A connection made from inside the namespace.
    pub fn connect(&self, addr: SocketAddr) -> tokio::net::TcpStream {
        let stream = self.enter(move || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap()
        });
        stream.set_nonblocking(true).unwrap();
        tokio::net::TcpStream::from_std(stream).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}

/// Joins `a` and `b` with a veth pair and gives each end its address
/// (`10.0.0.1/24`); returns the interface names (a's, b's).
pub fn veth(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) -> (String, String) {
    let a_if = format!("{}a", a.name.replacen("mg", "v", 1));
    let b_if = format!("{}b", b.name.replacen("mg", "v", 1));
    run(Command::new("ip").args([
        "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns",
        &b.name,
    ]));
    for (ns, name, addr) in [(a, &a_if, a_addr), (b, &b_if, b_addr)] {
        ns.exec(&["ip", "addr", "add", addr, "dev", name]);
        ns.exec(&["ip", "link", "set", name, "up"]);
    }
    (a_if, b_if)
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The modgate binary running inside a namespace, its log collected.
pub struct Modgate {
    /// Listening addresses by what they serve: "explicit proxy",
    /// "transparent http", "transparent https".
    pub listening: Vec<(String, SocketAddr)>,
    log: Arc<Mutex<Vec<String>>>,
    _child: tokio::process::Child,
    _cache_home: tempfile::TempDir,
}

impl Modgate {
    /// Starts `modgate run --config <config>` in `ns` and waits until its
    /// `expected` listeners are up.
    pub async fn start(ns: &Netns, config: &Path, expected: usize) -> Modgate {
        let config = config.to_str().unwrap();
        Self::spawn(Some(ns), &["run", "--config", config], None, expected).await
    }

    /// Starts `modgate <args>` (in `ns` when given, in `cwd` when given) and
    /// waits until its `expected` listeners are up.
    pub async fn spawn(
        ns: Option<&Netns>,
        args: &[&str],
        cwd: Option<&Path>,
        expected: usize,
    ) -> Modgate {
        Self::spawn_env(ns, args, cwd, expected, &[]).await
    }

    /// The same with `env` added to its environment.
    pub async fn spawn_env(
        ns: Option<&Netns>,
        args: &[&str],
        cwd: Option<&Path>,
        expected: usize,
        env: &[(&str, String)],
    ) -> Modgate {
        let mut cmd = super::command_in(ns.map(|n| n.name.as_str()), env!("CARGO_BIN_EXE_modgate"));
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        // The default cache.dir and intercept.ca_dir are in the user's
        // cache and data directories: keep them in the test's own.
        let cache_home = tempfile::tempdir().unwrap();
        // The admin listener on a free port, unless the test chose one.
        let admin: &[&str] = if args.first() == Some(&"run") && !args.contains(&"--admin-listen") {
            &["--admin-listen", "127.0.0.1:0"]
        } else {
            &[]
        };
        let mut child = cmd
            .args(args)
            .args(admin)
            .env("RUST_LOG", "info")
            .env("XDG_CACHE_HOME", cache_home.path().join("cache"))
            .env("XDG_DATA_HOME", cache_home.path().join("data"))
            .env("XDG_CONFIG_HOME", cache_home.path().join("config"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut listening = Vec::new();
        let mut seen = Vec::new();
        while listening.len() < expected {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("modgate did not start in time:\n{}", seen.join("\n")))
                .unwrap()
                .unwrap_or_else(|| panic!("modgate exited:\n{}", seen.join("\n")));
            if let Some(found) = listening_line(&line) {
                listening.push(found);
            }
            seen.push(line);
        }
        let log = super::collect_lines(lines, seen);
        Modgate {
            listening,
            log,
            _child: child,
            _cache_home: cache_home,
        }
    }

    pub fn port(&self, serves: &str) -> u16 {
        self.listening
            .iter()
            .find(|(s, _)| s == serves)
            .map(|(_, addr)| addr.port())
            .unwrap_or_else(|| panic!("no {serves} listener in {:?}", self.listening))
    }

    /// SIGKILL, as a crash would, and reaped.
    pub async fn kill(mut self) {
        self._child.kill().await.unwrap();
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.pid()).unwrap();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill");
    }

    /// The exit status, if the process ends within `within`.
    pub async fn exited(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(within, self._child.wait())
            .await
            .ok()
            .map(|status| status.unwrap())
    }

    /// The modgate process (with `ip netns exec`, which execs, the same one).
    pub fn pid(&self) -> u32 {
        self._child.id().expect("modgate runs")
    }

    pub fn addr(&self, serves: &str) -> SocketAddr {
        self.listening
            .iter()
            .find(|(s, _)| s == serves)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| panic!("no {serves} listener in {:?}", self.listening))
    }

    /// The admin listener's address, from its start-up line.
    pub async fn admin_addr(&self) -> SocketAddr {
        let log = self.log_when(|l| l.contains("admin listening")).await;
        let line = log
            .lines()
            .find(|l| l.contains("admin listening"))
            .expect("an admin listener");
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
            return json["fields"]["addr"].as_str().unwrap().parse().unwrap();
        }
        let addr = line
            .split("addr=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        addr.trim_matches('"').parse().unwrap()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The log once `ready` holds for it (lines are written when a
    /// connection ends, a little after the client saw its answer), or after 30 s.
    pub async fn log_when(&self, ready: impl Fn(&str) -> bool) -> String {
        for _ in 0..600 {
            let log = self.log();
            if ready(&log) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.log()
    }
}

/// `… modgate listening (transparent https) addr=0.0.0.0:41234`
/// (or the same as a JSON log line).
fn listening_line(line: &str) -> Option<(String, SocketAddr)> {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
        let fields = &json["fields"];
        let message = fields["message"].as_str()?;
        let serves = message
            .strip_prefix("modgate listening (")?
            .strip_suffix(')')?;
        return Some((serves.to_string(), fields["addr"].as_str()?.parse().ok()?));
    }
    let rest = line.split("modgate listening (").nth(1)?;
    let (serves, rest) = rest.split_once(')')?;
    let addr = rest.split("addr=").nth(1)?.split_whitespace().next()?;
    Some((serves.to_string(), addr.parse().ok()?))
}
