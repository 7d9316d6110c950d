//! Cold and warm `pip install` through modgate's PyPI endpoint against the
//! same pip going straight to the same mirror (PyPI's pypiserver, on
//! loopback). Each install is into a fresh venv (made before the clock
//! starts) with no pip cache: alpha and beta (small wheels) and big (a
//! 4 MiB wheel). Cold: a modgate with an empty cache; warm: the same
//! modgate again. Rounds are interleaved; each figure is the median wall
//! time of the pip process.
//!
//! `scripts/bench-pypi.sh` runs it (`cargo bench --bench pypi_cache`);
//! MODGATE_BENCH_ROUNDS sets the rounds (default 5). Under `cargo test` it
//! does nothing.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::netns::Modgate;
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

/// A modgate with PyPI on and a fresh cache in `dir/cache-<n>`, fed by `mirror`.
async fn gateway(dir: &Path, n: usize, mirror: &str) -> Modgate {
    let config = dir.join(format!("modgate-{n}.toml"));
    let toml = format!(
        "[proxy]\nlisten = [\"127.0.0.1:0\"]\ndeny_destinations = []\n[intercept]\nca_dir = {:?}\n\
         [pypi]\nenabled = true\nmirrors = [{mirror:?}]\n[cache]\ndir = {:?}\n",
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

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

async fn run(rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let packages = dir.path().join("packages");
    packages_with_big(&packages, None, 4 << 20);
    let mirror = PypiServer::start(&packages, &dir.path().join("pypiserver.log"));
    let direct_index = format!("{}/simple/", mirror.url());
    let (mut direct, mut cold, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        direct.push(install(dir.path(), &format!("direct-{round}"), &direct_index).await);
        let modgate = gateway(dir.path(), round, &mirror.url()).await;
        let index = format!("http://{}/pypi/simple/", modgate.addr("explicit proxy"));
        cold.push(install(dir.path(), &format!("cold-{round}"), &index).await);
        warm.push(install(dir.path(), &format!("warm-{round}"), &index).await);
        modgate.kill().await;
    }
    let (direct, cold, warm) = (median(direct), median(cold), median(warm));
    let ratio = |d: Duration| d.as_secs_f64() / direct.as_secs_f64();
    println!(
        "pip install {} ({rounds} rounds, median wall time of pip)",
        PACKAGES.join(" ")
    );
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
