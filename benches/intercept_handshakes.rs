//! New intercepted connections per second: CONNECT to proxy.golang.org:443,
//! a TLS handshake with modgate's leaf, one request modgate answers itself,
//! close. Measured with clients that keep TLS sessions (they resume with a
//! ticket, as browsers and curl do) and with clients that do not (a full
//! handshake each time, as the go command does), in alternating rounds.
//!
//! With `MODGATE_BENCH_MITMDUMP=/path/to/mitmdump`, mitmproxy runs the same
//! load beside it (an addon answers the request itself, so neither proxy
//! dials anything). `cargo bench --bench intercept_handshakes`;
//! MODGATE_BENCH_ROUNDS (default 3), MODGATE_BENCH_SECONDS per phase
//! (default 5), 16 clients at once. Under `cargo test` it does nothing.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::handshake::{connector, once};
use common::netns::Modgate;
use rustls::HandshakeKind;

const CLIENTS: usize = 16;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let setting = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rounds = setting("MODGATE_BENCH_ROUNDS", 3);
    let phase = Duration::from_secs(setting("MODGATE_BENCH_SECONDS", 5));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(rounds, phase));
}

/// A proxy under test: where it listens and the CA its leaves chain to.
struct Subject {
    name: &'static str,
    addr: SocketAddr,
    ca: PathBuf,
}

async fn run(rounds: u64, phase: Duration) {
    let work = tempfile::tempdir().unwrap();
    let modgate = start_modgate(work.path()).await;
    let mut subjects = vec![Subject {
        name: "modgate",
        addr: modgate.addr("explicit proxy"),
        ca: work.path().join("certs/modgate-ca.pem"),
    }];
    let mitm = match std::env::var("MODGATE_BENCH_MITMDUMP") {
        Ok(mitmdump) => {
            let (child, subject) = start_mitmdump(&mitmdump, work.path()).await;
            subjects.push(subject);
            Some(child)
        }
        Err(_) => None,
    };
    println!(
        "new intercepted connections/s, {CLIENTS} clients, {phase:?} per phase, {rounds} rounds"
    );
    let mut figures: Vec<(String, Vec<f64>, Vec<f64>)> = Vec::new();
    for round in 0..rounds {
        for subject in &subjects {
            for resume in [false, true] {
                let (rate, resumed) = measure(subject, resume, phase).await;
                let label = format!("{} resumption {}", subject.name, on_off(resume));
                println!("round {round}: {label:<28} {rate:>8.0}/s  resumed {resumed:>5.1}%");
                match figures.iter_mut().find(|(l, _, _)| *l == label) {
                    Some((_, rates, shares)) => {
                        rates.push(rate);
                        shares.push(resumed);
                    }
                    None => figures.push((label, vec![rate], vec![resumed])),
                }
            }
        }
    }
    println!("\n| proxy, TLS resumption | connections/s (median) | resumed |");
    println!("|---|---|---|");
    for (label, mut rates, mut shares) in figures {
        println!(
            "| {label} | {:.0} | {:.0}% |",
            median(&mut rates),
            median(&mut shares)
        );
    }
    drop(mitm);
    drop(modgate);
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Connections per second over `phase` and the share that resumed.
async fn measure(subject: &Subject, resume: bool, phase: Duration) -> (f64, f64) {
    let tls = connector(&subject.ca, resume);
    // One connection first, so resuming clients hold a ticket.
    once(subject.addr, &tls).await.expect("a first connection");
    let started = Instant::now();
    let deadline = started + phase;
    let clients = (0..CLIENTS).map(|_| {
        let tls = tls.clone();
        let addr = subject.addr;
        tokio::spawn(async move {
            let (mut done, mut resumed) = (0u64, 0u64);
            while Instant::now() < deadline {
                match once(addr, &tls).await {
                    Ok(kind) => {
                        done += 1;
                        resumed += u64::from(kind == HandshakeKind::Resumed);
                    }
                    Err(err) => panic!("connection failed: {err}"),
                }
            }
            (done, resumed)
        })
    });
    let (mut done, mut resumed) = (0u64, 0u64);
    for client in clients.collect::<Vec<_>>() {
        let (d, r) = client.await.unwrap();
        done += d;
        resumed += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    (
        done as f64 / elapsed,
        100.0 * resumed as f64 / done.max(1) as f64,
    )
}

async fn start_modgate(work: &Path) -> Modgate {
    let config = work.join("modgate.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = [\"127.0.0.1:0\"]\nallow_clients = [\"127.0.0.0/8\"]\n\
             max_connections_per_client = 50000\n\
             [intercept]\nca_dir = {:?}\n\
             [gomod]\nmirrors = [\"http://127.0.0.1:9\"]\nsumdb_mirrors = [\"http://127.0.0.1:9\"]\n\
             verify = \"off\"\n[cache]\ndir = {:?}\n[log]\naccess_log = {:?}\n",
            work.join("certs"),
            work.join("cache"),
            work.join("access.log"),
        ),
    )
    .unwrap();
    let args = ["run", "--config", config.to_str().unwrap()];
    Modgate::spawn(None, &args, None, 1).await
}

/// mitmdump on a free port, answering every request itself; its CA is made
/// in `work` on first start.
async fn start_mitmdump(mitmdump: &str, work: &Path) -> (tokio::process::Child, Subject) {
    let addon = work.join("answer.py");
    std::fs::write(
        &addon,
        "from mitmproxy import http\n\n\
         def request(flow):\n    flow.response = http.Response.make(200, b\"\")\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let confdir = work.join("mitmproxy");
    let child = tokio::process::Command::new(mitmdump)
        .args([
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            &port.to_string(),
        ])
        .args(["--set", &format!("confdir={}", confdir.display())])
        .args(["--set", "connection_strategy=lazy", "--quiet", "-s"])
        .arg(&addon)
        .kill_on_drop(true)
        .spawn()
        .expect("mitmdump starts");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let ca = confdir.join("mitmproxy-ca-cert.pem");
    for _ in 0..200 {
        if ca.exists() && tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let subject = Subject {
        name: "mitmproxy",
        addr,
        ca,
    };
    (child, subject)
}
