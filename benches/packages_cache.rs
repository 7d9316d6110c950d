//! Cold and warm `pip install` and `npm install` through modgate's
//! endpoints against the same client going straight to the same mirror on
//! loopback (PyPI's pypiserver; npm's verdaccio). pip installs alpha and
//! beta (small wheels) and big (a 4 MiB wheel) into a fresh venv (made
//! before the clock starts) with no pip cache; npm installs a scoped
//! package and its dependency into a fresh project with an empty npm
//! cache. Cold: a modgate with an empty cache; warm: the same modgate
//! again. Rounds are interleaved; each figure is the median wall time of
//! the client process.
//!
//! `scripts/bench-packages.sh` runs it (`cargo bench --bench
//! packages_cache`); MODGATE_BENCH_ROUNDS sets the rounds (default 5).
//! Under `cargo test` it does nothing.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::netns::Modgate;
use common::npm::{Verdaccio, npm_install};
use common::pypi::{PypiServer, packages_with_big, pip_install, venv};

const PACKAGES: [&str; 3] = ["alpha", "beta", "big"];

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds = std::env::var("MODGATE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(rounds));
}

/// A modgate with PyPI and npm on and a fresh cache in `dir/cache-<n>`,
/// fed by `pypi` and `npm`.
async fn gateway(dir: &Path, n: usize, (pypi, npm): (&str, &str)) -> Modgate {
    let config = dir.join(format!("modgate-{n}.toml"));
    let toml = format!(
        "[proxy]\nlisten = [\"127.0.0.1:0\"]\ndeny_destinations = []\n[intercept]\nca_dir = {:?}\n\
         [gomod]\nmirrors = []\nsumdb_mirrors = []\nverify = \"off\"\n[pypi]\nenabled = true\nmirrors = [{pypi:?}]\n[npm]\nenabled = true\nmirrors = [{npm:?}]\n\
         [cache]\ndir = {:?}\n",
        dir.join("certs"),
        dir.join(format!("cache-{n}")),
    );
    std::fs::write(&config, toml).unwrap();
    let args = ["run", "--config", config.to_str().unwrap()];
    let modgate = Modgate::spawn(None, &args, None, 1).await;
    modgate.log_when(|log| log.contains("cache ready")).await;
    modgate
}

/// Wall time of one `pip install` of [`PACKAGES`] from `index` into a fresh venv.
async fn install(dir: &Path, name: &str, index: &str) -> Duration {
    let env = venv(&dir.join(name));
    let started = Instant::now();
    let out = pip_install(&env, index, &PACKAGES, &[]).await;
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// Wall time of one `npm install` of the scoped package from `registry`
/// into a fresh project.
async fn npm(dir: &Path, name: &str, registry: &str) -> Duration {
    let started = Instant::now();
    let out = npm_install(&dir.join(name), registry, &["@corp-test/lib"], &[]).await;
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

/// Straight, cold and warm runs of one client.
#[derive(Default)]
struct Runs {
    direct: Vec<Duration>,
    cold: Vec<Duration>,
    warm: Vec<Duration>,
}

impl Runs {
    fn print(self, what: &str, rounds: usize) {
        let (direct, cold, warm) = (median(self.direct), median(self.cold), median(self.warm));
        let ratio = |d: Duration| d.as_secs_f64() / direct.as_secs_f64();
        println!("{what} ({rounds} rounds, median wall time of the client)");
        println!("  straight from the mirror  {direct:>10.1?}");
        println!(
            "  cold through modgate      {cold:>10.1?}  {:.2}x",
            ratio(cold)
        );
        println!(
            "  warm through modgate      {warm:>10.1?}  {:.2}x",
            ratio(warm)
        );
    }
}

async fn run(rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let packages = dir.path().join("packages");
    packages_with_big(&packages, None, 4 << 20);
    let pypi = PypiServer::start(&packages, &dir.path().join("pypiserver.log"));
    let registry = Verdaccio::start(&dir.path().join("verdaccio"));
    let (mut pip, mut node) = (Runs::default(), Runs::default());
    for round in 0..rounds {
        let at = |what: &str| format!("{what}-{round}");
        pip.direct.push(
            install(
                dir.path(),
                &at("pip-direct"),
                &format!("{}/simple/", pypi.url()),
            )
            .await,
        );
        node.direct.push(
            npm(
                dir.path(),
                &at("npm-direct"),
                &format!("{}/", registry.url()),
            )
            .await,
        );
        let modgate = gateway(dir.path(), round, (&pypi.url(), &registry.url())).await;
        let base = format!("http://{}", modgate.addr("explicit proxy"));
        let (index, npm_registry) = (format!("{base}/pypi/simple/"), format!("{base}/npm/"));
        pip.cold
            .push(install(dir.path(), &at("pip-cold"), &index).await);
        node.cold
            .push(npm(dir.path(), &at("npm-cold"), &npm_registry).await);
        pip.warm
            .push(install(dir.path(), &at("pip-warm"), &index).await);
        node.warm
            .push(npm(dir.path(), &at("npm-warm"), &npm_registry).await);
        modgate.kill().await;
    }
    pip.print(&format!("pip install {}", PACKAGES.join(" ")), rounds);
    node.print("npm install @corp-test/lib (and plain-dep)", rounds);
}
