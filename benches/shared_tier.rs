//! What the shared tier costs and saves: `go mod download all` of the test
//! module graph through modgate's GOPROXY endpoint, every module verified
//! against a real checksum database, the bucket on a real SeaweedFS server,
//! everything on loopback:
//!
//! - warm from the local tier (a gateway that fetched the graph before);
//! - warm from the bucket (a new gateway with an empty directory, on a
//!   bucket another gateway filled);
//! - cold without the shared tier, and cold with it (an empty bucket
//!   prefix, so every file is also uploaded).
//!
//! Rounds are interleaved, each with fresh gateways and fresh go caches;
//! each figure is the median wall time. Beside it, the CPU each side spent
//! in that run (modgate, the bucket's server, the go command): on two
//! shared cores the three compete, so the bucket server's own CPU bounds
//! what the ratios can be here. `scripts/bench-shared.sh` runs it
//! (`cargo bench --bench shared_tier`); MODGATE_BENCH_ROUNDS sets the
//! rounds (default 5); MODGATE_BENCH_VERIFY=off runs the gateways without
//! checksum verification (to see what the checks cost). Under `cargo test`
//! it does nothing.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use common::gateway::{Work, download_all, tree};
use common::gomod::{Behaviour, Mirror, SumDb};
use common::metrics::downloads_landed;
use common::s3::S3Server;
use modgate::cache::storage::Storage;
use modgate::cache::storage::s3::S3Storage;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds: usize = std::env::var("MODGATE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(rounds.clamp(1, 50)));
}

/// The lines putting a gateway on the bucket under `prefix`.
fn shared_lines(server: &S3Server, work: &Work, prefix: &str) -> String {
    let file = work.path("s3-credentials.toml");
    let text = format!(
        "access_key_id = {:?}\nsecret_access_key = {:?}\n",
        common::s3::ACCESS_KEY,
        common::s3::SECRET_KEY
    );
    std::fs::write(&file, text).unwrap();
    let mut permissions = std::fs::metadata(&file).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o600);
    std::fs::set_permissions(&file, permissions).unwrap();
    format!(
        "shared = \"s3://{}/{prefix}\"\n[cache.s3]\nendpoint = {:?}\npath_style = true\n\
         allow_http = true\ncredentials_file = {file:?}\n",
        server.bucket, server.endpoint
    )
}

/// The mirror, the checksum database and the bucket every run uses.
struct Upstreams {
    mirror: Mirror,
    sumdb: SumDb,
    server: S3Server,
    _tree: tempfile::TempDir,
}

impl Upstreams {
    /// A gateway in `work`, on the bucket under `prefix` when given.
    async fn gateway(&self, work: &Work, prefix: Option<&str>) -> common::netns::Modgate {
        let shared = prefix.map_or(String::new(), |p| shared_lines(&self.server, work, p));
        let verify = std::env::var("MODGATE_BENCH_VERIFY").map_or(true, |v| v != "off");
        let key = verify.then_some(self.sumdb.key.as_str());
        let config = work.config_keyed(&[self.mirror.url()], &[self.sumdb.url()], key, &shared);
        work.gateway(&config).await
    }
}

/// One timed run: wall time and the CPU each side spent, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    wall: f64,
    modgate: f64,
    bucket: f64,
    go: f64,
}

/// Milliseconds of CPU `pid`'s threads have run (0 when it is gone).
fn cpu_ms(pid: Option<u32>) -> f64 {
    let Some(Ok(tasks)) = pid.map(|p| std::fs::read_dir(format!("/proc/{p}/task"))) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e6
}

/// Milliseconds of CPU this process's waited-for children have used (the
/// go command and what it ran).
fn children_ms() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

/// One `go mod download all` through `gateway`, with a fresh go cache
/// named `name` in `work`.
async fn timed(
    work: &Work,
    gateway: &common::netns::Modgate,
    bucket: &S3Server,
    name: &str,
) -> Run {
    let endpoint = format!("http://{}", gateway.addr("explicit proxy"));
    let go = work.go(name, None, &endpoint, "off");
    let (pid, server) = (Some(gateway.pid()), bucket.pid());
    let before = (cpu_ms(pid), cpu_ms(server), children_ms());
    let started = Instant::now();
    download_all(&go).await;
    Run {
        wall: started.elapsed().as_secs_f64() * 1e3,
        modgate: cpu_ms(pid) - before.0,
        bucket: cpu_ms(server) - before.1,
        go: children_ms() - before.2,
    }
}

/// Waits until the bucket holds every file in `want` (its uploads run
/// after files are stored); bounded: 60 s.
async fn filled(bucket: &S3Storage, want: &[String]) {
    for _ in 0..240 {
        let names: std::collections::HashSet<String> = match bucket.list("").await {
            Ok(listed) => listed.into_iter().map(|l| l.name).collect(),
            Err(_) => Default::default(),
        };
        if want.iter().all(|name| names.contains(name)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the bucket never held all of {want:?}");
}

/// The module and checksum database files in a gateway's directory, by
/// their names in the tree (which the bucket shares).
fn stored_files(cache: &std::path::Path) -> Vec<String> {
    walkdir::WalkDir::new(cache)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".modgate")
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let name = e
                .path()
                .strip_prefix(cache)
                .ok()?
                .to_string_lossy()
                .into_owned();
            let kept =
                name.contains("/@v/v") || name.contains("/lookup/") || name.contains("/tile/");
            kept.then_some(name)
        })
        .collect()
}

/// One round: the four runs.
async fn round(up: &Upstreams, n: usize) -> [Run; 4] {
    // Cold without the shared tier.
    let work = Work::new();
    let gateway = up.gateway(&work, None).await;
    let cold = timed(&work, &gateway, &up.server, "cold").await;
    downloads_landed(gateway.admin_addr().await, None).await;
    // Warm from the local tier, the same gateway.
    let warm_local = timed(&work, &gateway, &up.server, "warm").await;
    drop(gateway);

    // Cold with the shared tier: an empty prefix, so every file is uploaded too.
    let prefix = format!("round{n}");
    let work = Work::new();
    let gateway = up.gateway(&work, Some(&prefix)).await;
    let cold_shared = timed(&work, &gateway, &up.server, "cold").await;
    downloads_landed(gateway.admin_addr().await, None).await;
    let bucket = S3Storage::new(&up.server.settings(&prefix)).unwrap();
    let local = stored_files(&work.cache());
    assert!(local.len() >= 16, "the gateway stored {local:?}");
    filled(&bucket, &local).await;
    drop(gateway);

    // Warm from the bucket: a new gateway, its directory empty.
    let work = Work::new();
    let gateway = up.gateway(&work, Some(&prefix)).await;
    let warm_bucket = timed(&work, &gateway, &up.server, "warm").await;
    [warm_local, warm_bucket, cold, cold_shared]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The median of each figure over `runs`.
fn medians(runs: &[Run]) -> Run {
    let of = |f: fn(&Run) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
    Run {
        wall: of(|r| r.wall),
        modgate: of(|r| r.modgate),
        bucket: of(|r| r.bucket),
        go: of(|r| r.go),
    }
}

async fn bench(rounds: usize) {
    let tree = tree();
    let up = Upstreams {
        mirror: Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await,
        sumdb: SumDb::start(tree.path(), "sum.golang.org").await,
        server: S3Server::start("bench").await,
        _tree: tree,
    };
    let mut runs: [Vec<Run>; 4] = Default::default();
    for n in 0..rounds {
        let got = round(&up, n).await;
        for (all, run) in runs.iter_mut().zip(got) {
            all.push(run);
        }
        eprintln!("round {}: {:.1?}", n + 1, got.map(|r| r.wall));
    }
    let [warm_local, warm_bucket, cold, cold_shared] = runs.map(|r| medians(&r));
    println!("go mod download all of the test graph, median of {rounds} rounds:");
    println!("                              wall ms   CPU ms: modgate  bucket server  go command");
    let row = |name: &str, r: &Run, note: String| {
        println!(
            "  {name:<27} {:>7.1}   {:>15.1} {:>14.1} {:>11.1}  {note}",
            r.wall, r.modgate, r.bucket, r.go
        );
    };
    row("warm, local tier", &warm_local, String::new());
    let ratio = warm_bucket.wall / warm_local.wall;
    row(
        "warm, from the bucket",
        &warm_bucket,
        format!("{ratio:.2}x the local tier (target at most 1.3x)"),
    );
    row("cold, no shared tier", &cold, String::new());
    let ratio = cold_shared.wall / cold.wall;
    row(
        "cold, with the shared tier",
        &cold_shared,
        format!("{ratio:.2}x without (target at most 1.1x)"),
    );
    // What two cores allow at best: every side's CPU spread over both.
    let floor = |r: &Run, modgate: f64| (r.go + r.bucket + modgate) / 2.0;
    println!(
        "  floor on 2 cores, warm from the bucket: {:.1} ms ({:.2}x); with modgate at its local-tier CPU: {:.1} ms ({:.2}x)",
        floor(&warm_bucket, warm_bucket.modgate),
        floor(&warm_bucket, warm_bucket.modgate) / warm_local.wall,
        floor(&warm_bucket, warm_local.modgate),
        floor(&warm_bucket, warm_local.modgate) / warm_local.wall,
    );
    println!(
        "  floor on 2 cores, cold with the shared tier: {:.1} ms ({:.2}x)",
        floor(&cold_shared, cold_shared.modgate),
        floor(&cold_shared, cold_shared.modgate) / cold.wall,
    );
}
