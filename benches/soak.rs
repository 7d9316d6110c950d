//! The soak: modgate (the release binary) under every kind of traffic at
//! once for a number of minutes, looking for leaks and for errors that no
//! injected fault explains. `scripts/soak.sh [minutes]` runs it (default
//! 10); `MODGATE_SOAK_MINUTES` is the same setting. Under `cargo test` it
//! does nothing.
//!
//! All at once, against servers on loopback: forwarded http:// requests
//! on kept-alive connections, CONNECT tunnels to an echo server,
//! intercepted module downloads (CONNECT proxy.golang.org:443, TLS with
//! modgate's CA), cold (a version never fetched) and warm (one fetched
//! before), through two mirrors: the first fails (500) or stalls (1.5 s)
//! on some requests, the second serves. A client asks for a module no
//! mirror has (the injected failure: 404 or 502 is the right answer). The
//! cache is small, so eviction runs throughout. SIGHUP every 30 s.
//!
//! Every minute: requests, errors, injected failures, p99 latency, RSS and
//! open descriptors of modgate. Exit 1 on any error, on a reload that did
//! not take, or on growth from the second minute to the end (RSS by more
//! than a quarter and 16 MiB, descriptors by more than 32).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::gomod::{Behaviour, Mirror};
use common::handshake::{HOST, connector, handshaken};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Module versions made for cold downloads, per minute of soak.
const COLD_PER_MINUTE: usize = 300;
/// The longest any one operation may take before it counts as an error.
const OP_LIMIT: Duration = Duration::from_secs(30);
const RELOAD_EVERY: Duration = Duration::from_secs(30);
const KINDS: [&str; 3] = ["forward", "tunnel", "module"];

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let minutes: u64 = std::env::var("MODGATE_SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    assert!(
        (1..=240).contains(&minutes),
        "MODGATE_SOAK_MINUTES: 1 to 240"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let passed = runtime.block_on(soak(minutes));
    std::process::exit(if passed { 0 } else { 1 });
}

/// What every operation reports into.
#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    /// This minute's operations by kind: forward, tunnel, module.
    kinds: [AtomicU64; 3],
    errors: AtomicU64,
    injected: AtomicU64,
    /// Latencies of this minute's operations, in µs.
    latencies: Mutex<Vec<u64>>,
    /// The first few errors, to print.
    said: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, kind: &str, started: Instant, outcome: Result<(), String>) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        let index = KINDS.iter().position(|k| *k == kind).unwrap_or(2);
        self.kinds[index].fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.latencies.lock().unwrap().push(micros);
            }
            Err(why) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let mut said = self.said.lock().unwrap();
                if said.len() < 20 {
                    said.push(format!("{kind}: {why}"));
                }
            }
        }
    }
}

/// Everything the clients need to reach.
struct Setup {
    proxy: SocketAddr,
    origin: String,
    echo: SocketAddr,
    ca: PathBuf,
    /// Cold downloads taken so far (module index).
    cold: AtomicUsize,
    versions: usize,
    tally: Tally,
    stop: AtomicBool,
}

async fn soak(minutes: u64) -> bool {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("mirror");
    let versions = COLD_PER_MINUTE * minutes as usize;
    make_modules(&tree, versions);
    let good = Mirror::start(tree, Behaviour::Serve).await;
    let flaky = flaky_mirror().await;
    let origin = common::Origin::start("127.0.0.1").await;
    let echo = common::echo_server().await;
    let config = write_config(work.path(), &flaky, &good.url(), echo.port());
    let mut modgate = Started::run(&config, work.path()).await;
    let setup = Arc::new(Setup {
        proxy: modgate.proxy,
        origin: origin.url("/bytes/16384"),
        echo,
        ca: work.path().join("certs/modgate-ca.pem"),
        cold: AtomicUsize::new(0),
        versions,
        tally: Tally::default(),
        stop: AtomicBool::new(false),
    });
    let deadline = Instant::now() + Duration::from_secs(minutes * 60);
    let clients = spawn_clients(&setup, deadline);
    let reloads = tokio::spawn(reload_every(
        modgate.pid,
        work.path().join("modgate.log"),
        deadline,
    ));
    let rows = report_minutes(&setup, modgate.pid, minutes).await;
    setup.stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = tokio::time::timeout(OP_LIMIT * 2, client).await;
    }
    let (asked, took) = reloads.await.unwrap_or((0, 0));
    modgate.stop().await;
    verdict(&setup, &rows, asked, took)
}

/// `count` modules `soak.example/m<i>@v1.0.0`, each with an 8 KiB blob.
fn make_modules(root: &Path, count: usize) {
    for i in 0..count {
        let path = format!("soak.example/m{i}");
        let dir = root.join(&path).join("@v");
        std::fs::create_dir_all(&dir).unwrap();
        let go_mod = format!("module {path}\n\ngo 1.21\n");
        std::fs::write(dir.join("list"), "v1.0.0\n").unwrap();
        std::fs::write(
            dir.join("v1.0.0.info"),
            "{\"Version\":\"v1.0.0\",\"Time\":\"2026-01-02T03:04:05Z\"}",
        )
        .unwrap();
        std::fs::write(dir.join("v1.0.0.mod"), &go_mod).unwrap();
        let file = std::fs::File::create(dir.join("v1.0.0.zip")).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let prefix = format!("{path}@v1.0.0");
        zip.start_file(format!("{prefix}/go.mod"), options).unwrap();
        zip.write_all(go_mod.as_bytes()).unwrap();
        zip.start_file(format!("{prefix}/blob.bin"), options)
            .unwrap();
        let blob: Vec<u8> = (0..8192u32)
            .map(|n| (n.wrapping_mul(2654435761).wrapping_add(i as u32) >> 13) as u8)
            .collect();
        zip.write_all(&blob).unwrap();
        zip.finish().unwrap();
    }
}

/// A mirror that has nothing: of every four requests, one gets 500, one
/// waits 1.5 s before its 404, two get 404 at once.
async fn flaky_mirror() -> String {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let n = count.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let status = match n % 4 {
                            0 => 500,
                            1 => {
                                tokio::time::sleep(Duration::from_millis(1500)).await;
                                404
                            }
                            _ => 404,
                        };
                        let mut response = http::Response::new(modgate::message::text("flaky"));
                        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

fn write_config(work: &Path, flaky: &str, good: &str, echo_port: u16) -> PathBuf {
    let config = work.join("modgate.toml");
    let text = format!(
        "[proxy]\nlisten = [\"127.0.0.1:0\"]\nallow_clients = [\"127.0.0.0/8\"]\n\
         deny_destinations = []\nconnect_ports = [443, {echo_port}]\n\
         pid_file = {pid:?}\n\
         [upstream]\nconnect_timeout = \"5s\"\n\
         [intercept]\nca_dir = {ca:?}\n\
         [gomod]\nmirrors = [\"{flaky}\", \"{good}\"]\nverify = \"off\"\n\
         on_mirror_failure = \"bad_gateway\"\nmirror_timeout = \"5s\"\ndemote_for = \"10s\"\n\
         [cache]\ndir = {cache:?}\nmax_size = \"16MiB\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        pid = work.join("modgate.pid"),
        ca = work.join("certs"),
        cache = work.join("cache"),
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// The modgate under soak: its process, its explicit listener.
struct Started {
    child: tokio::process::Child,
    proxy: SocketAddr,
    pid: u32,
}

impl Started {
    /// Runs the release binary on `config`, its log in `work/modgate.log`
    /// (access lines off: they would be most of it).
    async fn run(config: &Path, work: &Path) -> Started {
        let log_path = work.join("modgate.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_modgate"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info,access=off")
            .env("XDG_CONFIG_HOME", work.join("xdg"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let marker = "modgate listening (explicit proxy) addr=";
        for _ in 0..600 {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let found = text.lines().find_map(|l| l.split(marker).nth(1));
            if let Some(addr) = found.and_then(|a| a.trim().parse().ok()) {
                return Started {
                    child,
                    proxy: addr,
                    pid,
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "modgate did not start:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    /// SIGTERM, then SIGKILL if it has not exited within 30 s.
    async fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn running(setup: &Setup, deadline: Instant) -> bool {
    !setup.stop.load(Ordering::Relaxed) && Instant::now() < deadline
}

fn spawn_clients(setup: &Arc<Setup>, deadline: Instant) -> Vec<tokio::task::JoinHandle<()>> {
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(tokio::spawn(forward_client(setup.clone(), deadline)));
    }
    for _ in 0..2 {
        clients.push(tokio::spawn(tunnel_client(setup.clone(), deadline)));
    }
    for n in 0..2 {
        clients.push(tokio::spawn(module_client(
            setup.clone(),
            deadline,
            Kind::Cold,
            n,
        )));
        clients.push(tokio::spawn(module_client(
            setup.clone(),
            deadline,
            Kind::Warm,
            n,
        )));
    }
    clients.push(tokio::spawn(module_client(
        setup.clone(),
        deadline,
        Kind::Injected,
        0,
    )));
    clients
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// An HTTP/1.1 client connection over `io`.
async fn http1_over<T>(io: T) -> Result<Sender, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// GET `uri` (with `host`) on `sender`: the status and the body's length.
async fn get(sender: &mut Sender, uri: &str, host: &str) -> Result<(u16, usize), String> {
    let req = http::Request::get(uri)
        .header("host", host)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok((status, body.to_bytes().len()))
}

/// Forwarded http:// requests on a kept-alive connection (a new one
/// every 50 requests, and after an error).
async fn forward_client(setup: Arc<Setup>, deadline: Instant) {
    let mut sender: Option<Sender> = None;
    let mut used = 0;
    while running(&setup, deadline) {
        let started = Instant::now();
        let exchange = async {
            if sender.is_none() || used >= 50 {
                let tcp = TcpStream::connect(setup.proxy)
                    .await
                    .map_err(|e| e.to_string())?;
                sender = Some(http1_over(tcp).await?);
                used = 0;
            }
            used += 1;
            let Some(open) = sender.as_mut() else {
                return Err("no connection".to_string());
            };
            match get(open, &setup.origin, "origin").await? {
                (200, 16384) => Ok(()),
                other => Err(format!("answered {other:?}")),
            }
        };
        let outcome = limited(exchange).await;
        if outcome.is_err() {
            sender = None;
        }
        setup.tally.record("forward", started, outcome);
    }
}

async fn limited(op: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::time::timeout(OP_LIMIT, op)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {OP_LIMIT:?}")))
}

/// CONNECT tunnels to the echo server: 4 KiB there and back, then close.
async fn tunnel_client(setup: Arc<Setup>, deadline: Instant) {
    while running(&setup, deadline) {
        let started = Instant::now();
        let outcome = limited(tunnel_once(setup.proxy, setup.echo)).await;
        setup.tally.record("tunnel", started, outcome);
    }
}

async fn tunnel_once(proxy: SocketAddr, echo: SocketAddr) -> Result<(), String> {
    let mut tcp = TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
    let connect = format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n");
    tcp.write_all(connect.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        let mut byte = [0u8; 1];
        if tcp.read(&mut byte).await.map_err(|e| e.to_string())? == 0 {
            return Err("closed before the CONNECT answer".into());
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(format!("CONNECT: {}", String::from_utf8_lossy(&head)));
    }
    let sent = common::payload(4096);
    tcp.write_all(&sent).await.map_err(|e| e.to_string())?;
    let mut back = vec![0u8; sent.len()];
    tcp.read_exact(&mut back).await.map_err(|e| e.to_string())?;
    if back != sent {
        return Err("the echo came back changed".into());
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A module version never fetched: .info, .mod, .zip.
    Cold,
    /// A .mod or .zip fetched before (or evicted since).
    Warm,
    /// A module no mirror has: 404 or 502 is the right answer.
    Injected,
}

/// Intercepted module requests of `kind`, on a connection kept for 20
/// requests (CONNECT proxy.golang.org:443, TLS trusting modgate's CA).
async fn module_client(setup: Arc<Setup>, deadline: Instant, kind: Kind, seed: u64) {
    let tls = connector(&setup.ca, true);
    let mut sender: Option<Sender> = None;
    let mut used = 0;
    let mut random = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut absent = 0u64;
    while running(&setup, deadline) {
        let Some(paths) = next_paths(&setup, kind, &mut random, &mut absent) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        for path in paths {
            let started = Instant::now();
            let exchange = async {
                if sender.is_none() || used >= 20 {
                    let stream = handshaken(setup.proxy, &tls).await?;
                    sender = Some(http1_over(stream).await?);
                    used = 0;
                }
                used += 1;
                let Some(open) = sender.as_mut() else {
                    return Err("no connection".to_string());
                };
                get(open, &path, HOST).await
            };
            let answer = tokio::time::timeout(OP_LIMIT, exchange)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {OP_LIMIT:?}")));
            if answer.is_err() {
                sender = None;
            }
            let outcome = judge(kind, &path, answer);
            if kind == Kind::Injected && outcome.is_ok() {
                setup.tally.injected.fetch_add(1, Ordering::Relaxed);
            }
            setup.tally.record("module", started, outcome);
        }
        let pause = match kind {
            Kind::Cold => 400,
            Kind::Warm => 20,
            Kind::Injected => 200,
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// The paths one round of a `kind` client asks for; `None` when there is
/// nothing to ask yet (no cold version left, or too few fetched to warm).
fn next_paths(
    setup: &Setup,
    kind: Kind,
    random: &mut u64,
    absent: &mut u64,
) -> Option<Vec<String>> {
    match kind {
        Kind::Cold => {
            let i = setup.cold.fetch_add(1, Ordering::Relaxed);
            if i >= setup.versions {
                return None;
            }
            let at = format!("/soak.example/m{i}/@v/v1.0.0");
            Some(vec![
                format!("{at}.info"),
                format!("{at}.mod"),
                format!("{at}.zip"),
            ])
        }
        Kind::Warm => {
            let taken = setup.cold.load(Ordering::Relaxed).min(setup.versions);
            if taken < 4 {
                return None;
            }
            *random = random.wrapping_mul(6364136223846793005).wrapping_add(1);
            let i = (*random >> 33) as usize % (taken - 2);
            let file = if *random & 1 == 0 { "mod" } else { "zip" };
            Some(vec![format!("/soak.example/m{i}/@v/v1.0.0.{file}")])
        }
        Kind::Injected => {
            *absent += 1;
            Some(vec![format!("/soak.example/absent{absent}/@v/v1.0.0.info")])
        }
    }
}

/// Whether an intercepted answer is the right one for `kind`.
fn judge(kind: Kind, path: &str, answer: Result<(u16, usize), String>) -> Result<(), String> {
    let (status, length) = answer.map_err(|e| format!("{path}: {e}"))?;
    let right = match kind {
        Kind::Injected => status == 404 || status == 502,
        _ if path.ends_with(".zip") => status == 200 && length > 8192,
        _ => status == 200 && length > 0,
    };
    if right {
        Ok(())
    } else {
        Err(format!("{path}: answered {status} with {length} bytes"))
    }
}

/// SIGHUP every 30 s until `deadline`: how many were sent, and how many
/// reloads the log says took.
async fn reload_every(pid: u32, log: PathBuf, deadline: Instant) -> (usize, usize) {
    let mut asked = 0;
    loop {
        let next = Instant::now() + RELOAD_EVERY;
        if next + Duration::from_secs(5) > deadline {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(pid as i32, libc::SIGHUP) };
        asked += 1;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = std::fs::read_to_string(log).unwrap_or_default();
    (asked, text.matches("config reloaded").count())
}

/// One minute's figures.
struct Row {
    requests: u64,
    errors: u64,
    rss_kib: u64,
    fds: usize,
}

/// Prints a row every minute until the soak ends; returns them.
async fn report_minutes(setup: &Setup, pid: u32, minutes: u64) -> Vec<Row> {
    println!(
        "minute  requests  forward  tunnel  module  errors  injected  p99_ms  rss_mib  open_fds"
    );
    let start = Instant::now();
    let mut rows = Vec::new();
    for minute in 1..=minutes {
        tokio::time::sleep_until((start + Duration::from_secs(minute * 60)).into()).await;
        let tally = &setup.tally;
        let requests = tally.ops.swap(0, Ordering::Relaxed);
        let errors = tally.errors.swap(0, Ordering::Relaxed);
        let injected = tally.injected.swap(0, Ordering::Relaxed);
        let [forward, tunnel, module] =
            [0, 1, 2].map(|i| tally.kinds[i].swap(0, Ordering::Relaxed));
        let mut latencies = std::mem::take(&mut *tally.latencies.lock().unwrap());
        latencies.sort_unstable();
        let p99 = latencies
            .get(latencies.len().saturating_sub(1) * 99 / 100)
            .copied()
            .unwrap_or(0);
        let (rss_kib, fds) = (rss_kib(pid), open_fds(pid));
        println!(
            "{minute:>6}  {requests:>8}  {forward:>7}  {tunnel:>6}  {module:>6}  {errors:>6}  {injected:>8}  {:>6.1}  {:>7.1}  {fds:>8}",
            p99 as f64 / 1000.0,
            rss_kib as f64 / 1024.0
        );
        let _ = std::io::stdout().flush();
        rows.push(Row {
            requests,
            errors,
            rss_kib,
            fds,
        });
    }
    rows
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Passed: no error, every reload took, no growth from minute 2 to the end.
fn verdict(setup: &Setup, rows: &[Row], asked: usize, took: usize) -> bool {
    let errors: u64 = rows.iter().map(|r| r.errors).sum();
    let requests: u64 = rows.iter().map(|r| r.requests).sum();
    let mut passed = errors == 0;
    println!("{requests} requests, {errors} errors; {took} of {asked} reloads took");
    for said in setup.tally.said.lock().unwrap().iter() {
        println!("  error: {said}");
    }
    passed &= took == asked;
    if let (Some(second), Some(last)) = (rows.get(1), rows.last()) {
        let rss_limit = second.rss_kib + (second.rss_kib / 4).max(16 * 1024);
        if last.rss_kib > rss_limit {
            println!(
                "RSS grew: {} KiB at minute 2, {} KiB at the end",
                second.rss_kib, last.rss_kib
            );
            passed = false;
        }
        if last.fds > second.fds + 32 {
            println!(
                "open descriptors grew: {} at minute 2, {} at the end",
                second.fds, last.fds
            );
            passed = false;
        }
    }
    println!("{}", if passed { "soak passed" } else { "soak FAILED" });
    passed
}
