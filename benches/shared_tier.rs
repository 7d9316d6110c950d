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
//! each figure is the median wall time. `scripts/bench-shared.sh` runs it
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

/// Seconds for one `go mod download all` through `gateway`, with a fresh
/// go cache named `name` in `work`.
async fn timed(work: &Work, gateway: &common::netns::Modgate, name: &str) -> f64 {
    let endpoint = format!("http://{}", gateway.addr("explicit proxy"));
    let go = work.go(name, None, &endpoint, "off");
    let started = Instant::now();
    download_all(&go).await;
    started.elapsed().as_secs_f64()
}

/// Waits until the bucket holds `want` objects under the gateway's prefix
/// (its uploads run after files are stored); bounded: 60 s.
async fn filled(bucket: &S3Storage, want: usize) {
    for _ in 0..240 {
        if bucket.list("").await.map(|l| l.len()).unwrap_or(0) >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the bucket never held {want} objects");
}

/// One round: the four figures, in seconds.
async fn round(up: &Upstreams, n: usize) -> [f64; 4] {
    // Cold without the shared tier.
    let work = Work::new();
    let gateway = up.gateway(&work, None).await;
    let cold = timed(&work, &gateway, "cold").await;
    downloads_landed(gateway.admin_addr().await, None).await;
    // Warm from the local tier, the same gateway.
    let warm_local = timed(&work, &gateway, "warm").await;
    drop(gateway);

    // Cold with the shared tier: an empty prefix, so every file is uploaded too.
    let prefix = format!("round{n}");
    let work = Work::new();
    let gateway = up.gateway(&work, Some(&prefix)).await;
    let cold_shared = timed(&work, &gateway, "cold").await;
    downloads_landed(gateway.admin_addr().await, None).await;
    let bucket = S3Storage::new(&up.server.settings(&prefix)).unwrap();
    let local = walkdir::WalkDir::new(work.cache())
        .into_iter()
        .filter_entry(|e| e.file_name() != ".modgate")
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            let path = e.path().to_string_lossy();
            path.contains("/@v/v") || path.contains("/lookup/") || path.contains("/tile/")
        })
        .count();
    filled(&bucket, local).await;
    drop(gateway);

    // Warm from the bucket: a new gateway, its directory empty.
    let work = Work::new();
    let gateway = up.gateway(&work, Some(&prefix)).await;
    let warm_bucket = timed(&work, &gateway, "warm").await;
    [warm_local, warm_bucket, cold, cold_shared]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn bench(rounds: usize) {
    let tree = tree();
    let up = Upstreams {
        mirror: Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await,
        sumdb: SumDb::start(tree.path(), "sum.golang.org").await,
        server: S3Server::start("bench").await,
        _tree: tree,
    };
    let mut figures: [Vec<f64>; 4] = Default::default();
    for n in 0..rounds {
        let got = round(&up, n).await;
        for (all, value) in figures.iter_mut().zip(got) {
            all.push(value);
        }
        eprintln!("round {}: {got:.3?}", n + 1);
    }
    let [warm_local, warm_bucket, cold, cold_shared] = figures.map(|mut f| median(&mut f));
    println!("go mod download all of the test graph, median of {rounds} rounds (seconds):");
    println!("  warm, local tier            {warm_local:.3}");
    println!(
        "  warm, from the bucket       {warm_bucket:.3}  ({:.2}x the local tier; target at most 1.3x)",
        warm_bucket / warm_local
    );
    println!("  cold, no shared tier        {cold:.3}");
    println!(
        "  cold, with the shared tier  {cold_shared:.3}  ({:.2}x without; target at most 1.1x)",
        cold_shared / cold
    );
}
