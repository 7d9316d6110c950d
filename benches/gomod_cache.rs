//! Cold and warm `go mod download all` of the test module graph through
//! modgate, each path against the same client going straight to the same
//! local mirror over the protocol it would use without modgate:
//!
//! - intercepted (HTTPS_PROXY, proxy.golang.org) vs the mirror over HTTPS/HTTP2;
//! - the GOPROXY endpoint (`GOPROXY=http://modgate`) vs the mirror over HTTP;
//! - warm through modgate vs the mirror behind a 2.5 MB/s link (an office uplink).
//!
//! modgate runs as shipped: cache on, every module verified against a real
//! checksum database (golang.org/x/mod/sumdb's test server, on loopback;
//! the client has GOSUMDB=off). "Cache off" is a plain relay, verification off.
//!
//! Rounds are interleaved; each figure is the median. `scripts/bench-cache.sh`
//! runs it (`cargo bench --bench gomod_cache`); MODGATE_BENCH_ROUNDS sets the
//! rounds (default 5), MODGATE_BENCH_PATHS a comma-separated subset of
//! `intercepted,endpoint,uplink` (default all), MODGATE_BENCH_VERIFY=off the
//! cache without verification, MODGATE_BENCH_LOG=1 prints the endpoint's
//! modgate logs, MODGATE_BENCH_RAW=1 every run's figures, and
//! MODGATE_BENCH_SPLIT=1 gives modgate one core of its own and the go command
//! and the mirrors the other (a gateway on its own machine). Under `cargo test` it does nothing.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::gomod::*;
use common::netns::Modgate;

const SLOW_LINK: u64 = 2_500_000;

/// Files outside the graph, fetched at once through each new modgate
/// before it is measured.
const WARM_UP: [&str; 6] = [
    "example.com/warmup/@v/v1.0.0.mod",
    "example.com/warmup/@v/v1.0.0.info",
    "example.com/warmup/@v/v1.0.0.zip",
    "example.com/warmup/@v/v1.1.0.mod",
    "example.com/warmup/@v/v1.1.0.info",
    "example.com/warmup/@v/v1.1.0.zip",
];

/// Runs the futures at once; their outputs in order.
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds = std::env::var("MODGATE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    if split() {
        // The go command, the mirrors and the checksum database (this
        // process and its children) on CPU 0; each modgate on CPU 1.
        pin(0, 0);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(rounds));
}

struct Bench {
    dir: tempfile::TempDir,
    runs: usize,
    /// The checksum database's URL and key: modgate verifies through it.
    sumdb: (String, String),
}

impl Bench {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A modgate with its own fresh cache, fed by `mirror`.
    async fn modgate(&mut self, mirror: &str) -> Modgate {
        self.modgate_with(mirror, true).await
    }

    /// `cache`: whether the cache (and checksum verification) is on; off,
    /// modgate is a plain relay to the mirror.
    async fn modgate_with(&mut self, mirror: &str, cache: bool) -> Modgate {
        self.runs += 1;
        let config = self.path(&format!("modgate-{}.toml", self.runs));
        let (sumdb, key) = &self.sumdb;
        // MODGATE_BENCH_VERIFY=off measures the cache without verification.
        let verify = std::env::var("MODGATE_BENCH_VERIFY").map_or(true, |v| v != "off");
        let verification = if cache && verify {
            format!("sumdb_mirrors = [{sumdb:?}]\nsumdb_key = {key:?}\n")
        } else {
            "sumdb_mirrors = []\nverify = \"off\"\n".to_string()
        };
        let toml = format!(
            "[proxy]\nlisten = [\"127.0.0.1:0\"]\n[intercept]\nca_dir = {:?}\n\
             [gomod]\nmirrors = [{mirror:?}]\n{verification}mirror_ca_file = {:?}\n\
             [cache]\nenabled = {cache}\ndir = {:?}\n",
            self.path("certs"),
            self.path("mirror-ca.pem"),
            self.path(&format!("cache-{}", self.runs)),
        );
        std::fs::write(&config, toml).unwrap();
        let modgate = Modgate::spawn(
            None,
            &["run", "--config", config.to_str().unwrap()],
            None,
            1,
        )
        .await;
        modgate.log_when(|log| log.contains("cache ready")).await;
        if split() {
            pin_process(modgate.pid(), 1);
        }
        // A process serves for days: warm it up (connections to the mirror,
        // threads) with files outside the graph before it is measured.
        let base = format!("http://{}", modgate.addr("explicit proxy"));
        let fetches = WARM_UP.iter().map(|file| {
            let url = format!("{base}/{file}");
            async move { common::curl(&["-sf", "-o", "/dev/null", &url]).await }
        });
        for out in futures_join(fetches).await {
            assert!(out.status.success(), "warm-up");
        }
        // Let the warm-up's own storing and hashing finish.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        modgate
    }

    /// One `go mod download all` in a fresh GOPATH and app, through `gate`
    /// when it is given: its time and the CPU each party spent on it.
    async fn download(
        &mut self,
        gate: Option<&Modgate>,
        proxy: Option<SocketAddr>,
        goproxy: &str,
        roots: &Path,
    ) -> Run {
        self.runs += 1;
        let work = self.path(&format!("client-{}", self.runs));
        let go = GoEnv {
            proxy,
            netns: None,
            work: work.clone(),
            cert_bundle: roots.to_path_buf(),
            goproxy: goproxy.to_string(),
            gosumdb: "off".to_string(),
        };
        let app = work.join("app");
        build_app(&app);
        // Earlier runs' files go to disk now, not during this run.
        // SAFETY: sync(2) takes no arguments and touches no memory.
        unsafe { libc::sync() };
        let before = Cpu::now(gate);
        let started = Instant::now();
        let out = go.run(&app, &["mod", "download", "all"]).await;
        let took = started.elapsed().as_secs_f64();
        let cpu = Cpu::now(gate).since(&before);
        assert!(
            out.status.success(),
            "go mod download all ({goproxy}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Gone before the next run, so no run creates its files among
        // all the earlier runs' (a directory's inode search grows with them).
        let _ = std::fs::remove_dir_all(&work);
        Run { wall: took, cpu }
    }
}

/// CPU seconds spent so far: by the go commands (reaped children), by
/// this process (the mirrors and the checksum database's client side run
/// here), and by one modgate (every thread's time on a CPU).
#[derive(Clone, Copy, Default)]
struct Cpu {
    client: f64,
    mirror: f64,
    modgate: f64,
}

impl Cpu {
    fn now(gate: Option<&Modgate>) -> Cpu {
        Cpu {
            client: rusage(libc::RUSAGE_CHILDREN),
            mirror: rusage(libc::RUSAGE_SELF),
            modgate: gate.map_or(0.0, |gate| threads_cpu(gate.pid())),
        }
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            client: self.client - before.client,
            mirror: self.mirror - before.mirror,
            modgate: self.modgate - before.modgate,
        }
    }
}

fn rusage(who: libc::c_int) -> f64 {
    // SAFETY: getrusage fills the struct it is given; nothing else is touched.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(who, &mut usage) }, 0);
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// A process's CPU time to the nanosecond: the sum over its threads of
/// their time on a CPU (`/proc/<pid>/task/*/schedstat`).
fn threads_cpu(pid: u32) -> f64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1e9
}

/// One measured download.
#[derive(Clone, Copy)]
struct Run {
    wall: f64,
    cpu: Cpu,
}

#[derive(Default)]
struct Samples {
    direct: Vec<Run>,
    /// Through modgate with the cache off.
    relay: Vec<Run>,
    cold: Vec<Run>,
    warm: Vec<Run>,
}

impl Samples {
    fn all(&self) -> [(&'static str, &[Run]); 4] {
        [
            ("straight", &self.direct),
            ("cache off", &self.relay),
            ("cold", &self.cold),
            ("warm", &self.warm),
        ]
    }
}

async fn run(rounds: usize) {
    let tree = tempfile::tempdir().unwrap();
    build_goproxy_dir(tree.path(), "");
    for version in ["v1.0.0", "v1.1.0"] {
        let module = Module {
            path: "example.com/warmup",
            version,
            package: "warmup",
            func: "Warm",
            blob: 3 << 20,
        };
        write_module(tree.path(), &module, "");
    }
    // The checksum database modgate verifies every module against.
    let sumdb = SumDb::start(tree.path(), "sum.golang.org").await;
    let mut b = Bench {
        dir: tempfile::tempdir().unwrap(),
        runs: 0,
        sumdb: (sumdb.url(), sumdb.key.clone()),
    };
    let root = tree.path().to_path_buf();
    let https = Mirror::start_tls(root.clone(), Behaviour::Serve, &b.path("mirror-ca.pem")).await;
    let http = Mirror::start(root.clone(), Behaviour::Serve).await;
    let slow = Mirror::start(root, Behaviour::Throttled(SLOW_LINK)).await;
    // Roots for clients: the mirror's CA (direct HTTPS), modgate's (intercepted).
    let mirror_roots = cert_bundle(&b.path("mirror-ca.pem"), &b.path("mirror-roots.pem"));
    let first = b.modgate(&https.https_url()).await;
    first.kill().await;
    let modgate_roots = cert_bundle(
        &b.path("certs/modgate-ca.pem"),
        &b.path("modgate-roots.pem"),
    );
    let (mut tls, mut plain) = (Samples::default(), Samples::default());
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        if wants("intercepted") {
            intercepted_round(&mut b, &https, &mirror_roots, &modgate_roots, &mut tls).await;
        }
        if wants("endpoint") {
            endpoint_round(&mut b, &http, &mirror_roots, &mut plain).await;
        }
    }
    let mut uplink = Samples::default();
    if wants("uplink") {
        uplink_rounds(&mut b, &slow, &mirror_roots, rounds, &mut uplink).await;
    }
    report(rounds, &tls, &plain, &uplink);
}

/// MODGATE_BENCH_SPLIT=1: modgate on a core of its own, as a gateway on its
/// own machine, the clients and mirrors on the other.
fn split() -> bool {
    std::env::var_os("MODGATE_BENCH_SPLIT").is_some()
}

/// Binds thread `tid` (0: this one) to `cpu`; threads it makes inherit it.
fn pin(tid: libc::pid_t, cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and
    // sched_setaffinity read and write only the set they are given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity"
        );
    }
}

/// Binds every thread of process `pid` to `cpu`.
fn pin_process(pid: u32, cpu: usize) {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        if let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) {
            pin(tid, cpu);
        }
    }
}

/// Whether MODGATE_BENCH_PATHS (default: all) names `path`.
fn wants(path: &str) -> bool {
    std::env::var("MODGATE_BENCH_PATHS")
        .map_or(true, |paths| paths.split(',').any(|p| p.trim() == path))
}

async fn intercepted_round(
    b: &mut Bench,
    https: &Mirror,
    mirror_roots: &Path,
    modgate_roots: &Path,
    tls: &mut Samples,
) {
    let intercepted = "https://proxy.golang.org";
    tls.direct.push(
        b.download(None, None, &https.https_url(), mirror_roots)
            .await,
    );
    let gate = b.modgate(&https.https_url()).await;
    let addr = Some(gate.addr("explicit proxy"));
    tls.cold.push(
        b.download(Some(&gate), addr, intercepted, modgate_roots)
            .await,
    );
    tls.warm.push(
        b.download(Some(&gate), addr, intercepted, modgate_roots)
            .await,
    );
    // Killed and reaped now, so its exit is no run's cost.
    gate.kill().await;
    let gate = b.modgate_with(&https.https_url(), false).await;
    let addr = Some(gate.addr("explicit proxy"));
    tls.relay.push(
        b.download(Some(&gate), addr, intercepted, modgate_roots)
            .await,
    );
    // Killed and reaped now, so its exit is no run's cost.
    gate.kill().await;
}

async fn endpoint_round(b: &mut Bench, http: &Mirror, mirror_roots: &Path, plain: &mut Samples) {
    plain
        .direct
        .push(b.download(None, None, &http.url(), mirror_roots).await);
    let gate = b.modgate(&http.url()).await;
    let endpoint = format!("http://{}", gate.addr("explicit proxy"));
    plain
        .cold
        .push(b.download(Some(&gate), None, &endpoint, mirror_roots).await);
    if std::env::var_os("MODGATE_BENCH_LOG").is_some() {
        eprintln!("{}", gate.log());
    }
    plain
        .warm
        .push(b.download(Some(&gate), None, &endpoint, mirror_roots).await);
    // Killed and reaped now, so its exit is no run's cost.
    gate.kill().await;
    let gate = b.modgate_with(&http.url(), false).await;
    let endpoint = format!("http://{}", gate.addr("explicit proxy"));
    plain
        .relay
        .push(b.download(Some(&gate), None, &endpoint, mirror_roots).await);
    if std::env::var_os("MODGATE_BENCH_LOG").is_some() {
        eprintln!("RELAY LOG\n{}", gate.log());
    }
    // Killed and reaped now, so its exit is no run's cost.
    gate.kill().await;
}

/// Slow link: filled once, then warm rounds (at most 3) against the throttled mirror.
async fn uplink_rounds(
    b: &mut Bench,
    slow: &Mirror,
    mirror_roots: &Path,
    rounds: usize,
    uplink: &mut Samples,
) {
    let gate = b.modgate(&slow.url()).await;
    let endpoint = format!("http://{}", gate.addr("explicit proxy"));
    uplink
        .cold
        .push(b.download(Some(&gate), None, &endpoint, mirror_roots).await);
    for _ in 0..rounds.min(3) {
        uplink
            .direct
            .push(b.download(None, None, &slow.url(), mirror_roots).await);
        uplink
            .warm
            .push(b.download(Some(&gate), None, &endpoint, mirror_roots).await);
    }
    // Killed and reaped now, so its exit is no run's cost.
    gate.kill().await;
}

fn median(runs: &[Run], of: impl Fn(&Run) -> f64) -> f64 {
    let mut sorted: Vec<f64> = runs.iter().map(of).collect();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn wall(runs: &[Run]) -> f64 {
    median(runs, |r| r.wall)
}

fn report(rounds: usize, tls: &Samples, plain: &Samples, uplink: &Samples) {
    println!(
        "go mod download all, test graph (4 modules, 11 MiB), medians of {rounds} interleaved rounds"
    );
    println!(
        "| path | straight to the mirror | modgate, cache off | cold through modgate | warm through modgate |"
    );
    println!("|---|---|---|---|---|");
    let paths = [
        ("intercepted vs mirror over HTTPS (HTTP/2)", tls),
        ("GOPROXY endpoint vs mirror over HTTP", plain),
    ];
    for (name, s) in paths.iter().filter(|(_, s)| !s.direct.is_empty()) {
        let direct = wall(&s.direct);
        let ratio = |runs: &[Run]| format!("{:.3} s ({:.2}x)", wall(runs), wall(runs) / direct);
        println!(
            "| {name} | {direct:.3} s | {} | {} | {} |",
            ratio(&s.relay),
            ratio(&s.cold),
            ratio(&s.warm),
        );
    }
    report_cpu(&paths);
    if std::env::var_os("MODGATE_BENCH_RAW").is_some() {
        report_raw(&paths);
    }
    if uplink.direct.is_empty() {
        return;
    }
    let slow = wall(&uplink.direct);
    let warm = wall(&uplink.warm);
    println!(
        "| warm through modgate vs mirror behind a 2.5 MB/s link | {slow:.3} s | | {:.3} s (filled once) | {warm:.3} s ({:.1}x faster) |",
        wall(&uplink.cold),
        slow / warm
    );
}

/// Every run: wall ms / go command CPU ms / modgate CPU ms.
fn report_raw(paths: &[(&str, &Samples)]) {
    for (name, s) in paths {
        for (run, runs) in s.all() {
            let each: Vec<String> = runs
                .iter()
                .map(|r| {
                    let ms = |secs: f64| (secs * 1e3).round();
                    format!("{}/{}/{}", ms(r.wall), ms(r.cpu.client), ms(r.cpu.modgate))
                })
                .collect();
            println!("{name}, {run}: {}", each.join(" "));
        }
    }
}

/// Where the CPU went in each run (medians, milliseconds), against the
/// two cores' capacity over the run's time.
fn report_cpu(paths: &[(&str, &Samples)]) {
    println!();
    println!("CPU per run, ms (medians): go command + mirror + modgate = all, of 2 cores x wall");
    println!("| path | run | go command | mirror | modgate | all | 2 x wall |");
    println!("|---|---|---|---|---|---|---|");
    for (name, s) in paths.iter().filter(|(_, s)| !s.direct.is_empty()) {
        for (run, runs) in s.all() {
            let ms = |of: fn(&Cpu) -> f64| median(runs, |r| of(&r.cpu)) * 1e3;
            println!(
                "| {name} | {run} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                ms(|c| c.client),
                ms(|c| c.mirror),
                ms(|c| c.modgate),
                median(runs, |r| r.cpu.client + r.cpu.mirror + r.cpu.modgate) * 1e3,
                2.0 * wall(runs) * 1e3,
            );
        }
    }
}
