//! npm for a test: a real npm registry (npm's verdaccio, installed by
//! scripts/test-deps.sh) on loopback with packages the test publishes to
//! it with the real npm, and npm to install them.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub struct Verdaccio {
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl Verdaccio {
    /// verdaccio on a free loopback port, its storage and log in `dir`,
    /// with `@corp-test/lib` 1.0.0 (needing `plain-dep` ^2) and
    /// `plain-dep` 2.0.0 published to it by npm.
    pub fn start(dir: &Path) -> Verdaccio {
        std::fs::create_dir_all(dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "storage: {storage}\nauth:\n  htpasswd:\n    file: {htpasswd}\n    max_users: 10\n\
             uplinks: {{}}\npackages:\n  '**':\n    access: $all\n    publish: $authenticated\n\
             listen: 127.0.0.1:{port}\nlog: {{ type: file, path: {log}, level: http }}\n",
            storage = dir.join("storage").display(),
            htpasswd = dir.join("htpasswd").display(),
            log = dir.join("verdaccio.log").display(),
        );
        std::fs::write(dir.join("config.yaml"), config).unwrap();
        let child = Command::new(repo(
            "target/test-tools/verdaccio/node_modules/.bin/verdaccio",
        ))
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("verdaccio (scripts/test-deps.sh installs it)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "verdaccio did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let registry = Verdaccio {
            addr,
            child,
            dir: dir.to_path_buf(),
        };
        registry.publish_test_packages();
        registry.settled();
        registry
    }

    /// Waits (at most 10 s) until its log has not grown for half a second:
    /// it is written after the answers.
    fn settled(&self) {
        let started = Instant::now();
        let mut seen = self.log().len();
        while started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(500));
            let now = self.log().len();
            if now == seen {
                return;
            }
            seen = now;
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its log: a line per request.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("verdaccio.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn publish_test_packages(&self) {
        let user = Command::new("curl")
            .args(["-sf", "-X", "PUT", "-H", "content-type: application/json"])
            .args(["-d", r#"{"name":"tester","password":"tester-pw-1"}"#])
            .arg(format!("{}/-/user/org.couchdb.user:tester", self.url()))
            .output()
            .unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&user.stdout).unwrap();
        let token = answer["token"].as_str().expect("a token for the test user");
        let packages = [
            ("plain-dep", "2.0.0", "{}"),
            ("@corp-test/lib", "1.0.0", r#"{"plain-dep":"^2.0.0"}"#),
        ];
        for (name, version, dependencies) in packages {
            let dir = self.dir.join("src").join(name.replace('/', "-"));
            std::fs::create_dir_all(&dir).unwrap();
            let manifest = format!(
                r#"{{"name":"{name}","version":"{version}","main":"index.js","dependencies":{dependencies}}}"#
            );
            std::fs::write(dir.join("package.json"), manifest).unwrap();
            let code = format!("module.exports = '{name} {version}';\n");
            std::fs::write(dir.join("index.js"), code).unwrap();
            let auth = format!("--//{}/:_authToken={token}", self.addr);
            let out = npm(
                &dir,
                &["publish", "--registry", &format!("{}/", self.url()), &auth],
                &[],
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for Verdaccio {
    fn drop(&mut self) {
        self.stop();
    }
}

/// npm `args` in `dir`, with a clean environment (its own cache and
/// config beside `dir`) and `env` added.
pub fn npm(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let home = dir.join(".npm-home");
    std::fs::create_dir_all(&home).unwrap();
    Command::new("npm")
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &home)
        .env("npm_config_cache", home.join("cache"))
        .env("npm_config_userconfig", home.join("npmrc"))
        .env("npm_config_update_notifier", "false")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

/// `npm install <packages>` from `registry` into a fresh project at `dir`.
pub async fn npm_install(
    dir: &Path,
    registry: &str,
    packages: &[&str],
    env: &[(&str, String)],
) -> Output {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("package.json"),
        r#"{"name":"app","version":"1.0.0"}"#,
    )
    .unwrap();
    let (dir, registry) = (dir.to_path_buf(), registry.to_string());
    let packages: Vec<String> = packages.iter().map(|p| p.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut args = vec![
            "install",
            "--no-audit",
            "--no-fund",
            "--registry",
            &registry,
        ];
        args.extend(packages.iter().map(String::as_str));
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        npm(&dir, &args, &env)
    })
    .await
    .unwrap()
}

/// What `require(<name>)` gives in the project at `dir`.
pub fn required(dir: &Path, name: &str) -> String {
    let out = Command::new("node")
        .args(["-e", &format!("console.log(require('{name}'))")])
        .current_dir(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
