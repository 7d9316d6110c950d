//! Shared test harness: modgate started in-process on `127.0.0.1:0`, real
//! origin servers on loopback, and the real `curl` binary.
#![allow(dead_code)]

pub mod gateway;
pub mod gomod;
pub mod handshake;
pub mod kerberos;
pub mod metrics;
pub mod netns;
pub mod npm;
pub mod pypi;
pub mod s3;
pub mod squid;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use modgate::config::Config;
use modgate::server::{self, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Body = BoxBody<Bytes, hyper::Error>;

/// A modgate instance serving on a loopback port.
pub struct Proxy {
    pub addr: SocketAddr,
    pub running: Running,
    /// Where the cache and the CA are, when the test's config names none.
    pub cache_dir: Option<tempfile::TempDir>,
}

impl Proxy {
    /// Starts modgate with `toml` (listen address forced to 127.0.0.1:0).
    pub async fn start(toml: &str) -> Proxy {
        Self::start_on("127.0.0.1:0", toml).await
    }

    pub async fn start_on(listen: &str, toml: &str) -> Proxy {
        let mut config = Config::parse("test.toml", toml).expect("test config is valid");
        config.proxy.listen = vec![listen.parse().unwrap()];
        if !toml.contains("[admin]") {
            config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
        }
        // The cache and the CA default to the user's directories: keep
        // them in the test's own unless the test chose.
        let dir = tempfile::tempdir().unwrap();
        if !toml.contains("[cache]") {
            config.cache.dir = dir.path().join("cache");
        }
        if !toml.contains("ca_dir") {
            config.intercept.ca_dir = dir.path().join("certs");
        }
        let cache_dir = Some(dir);
        let listeners = server::bind_all(&config).unwrap();
        let running = server::start(&config, listeners).unwrap();
        Proxy {
            addr: running.addrs[0],
            running,
            cache_dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// `program`, run inside network namespace `netns` (`ip netns exec`) when given.
pub fn command_in(
    netns: Option<&str>,
    program: impl AsRef<std::ffi::OsStr>,
) -> tokio::process::Command {
    match netns {
        Some(ns) => {
            let mut cmd = tokio::process::Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(program);
            cmd
        }
        None => tokio::process::Command::new(program),
    }
}

/// Gathers the rest of a child's output lines, after `seen`, as they come.
pub fn collect_lines<R>(
    mut lines: tokio::io::Lines<tokio::io::BufReader<R>>,
    seen: Vec<String>,
) -> Arc<std::sync::Mutex<Vec<String>>>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let log = Arc::new(std::sync::Mutex::new(seen));
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    log
}

/// Runs curl with a time limit; `--noproxy ''` so the environment cannot interfere.
pub async fn curl(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--noproxy", ""]);
    cmd.args(args);
    cmd.env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY");
    cmd.kill_on_drop(true);
    cmd.output().await.expect("curl runs")
}

/// `curl -i -x <proxy> <url>`: asserts that the answer has `status` and
/// returns it (head and body).
pub async fn forward_status(proxy: &str, url: &str, status: u16) -> String {
    let out = curl(&["-i", "-x", proxy, url]).await;
    let answer = stdout(&out);
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status}")),
        "{url} via {proxy}: expected {status}:\n{answer}{}",
        stderr(&out)
    );
    answer
}

/// `curl -p -x <proxy> <url>`: asserts that the CONNECT got `status`;
/// returns curl's error output.
pub async fn tunnel_status(proxy: &str, url: &str, status: u16) -> String {
    let out = curl(&["-p", "-x", proxy, url]).await;
    let said = stderr(&out);
    assert!(
        said.contains(&format!("response {status}")),
        "CONNECT for {url} via {proxy}: expected {status}:\n{said}"
    );
    said
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A plain HTTP origin with a few routes, counting the requests it served.
pub struct Origin {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

impl Origin {
    pub async fn start(ip: &str) -> Origin {
        Self::serve(TcpListener::bind((ip, 0)).await.unwrap())
    }

    pub fn serve(listener: TcpListener) -> Origin {
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        route(req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Origin { addr, hits }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Deterministic payload of `n` bytes.
pub fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

async fn route(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let response = match path.as_str() {
        "/echo" => Response::new(req.into_body().boxed()),
        // Reads the whole body before answering, as most servers do.
        "/upload" => match req.into_body().collect().await {
            Ok(body) => Response::new(full(body.to_bytes().len().to_string())),
            Err(_) => Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(full("broken body"))
                .unwrap(),
        },
        "/headers" => {
            let mut text = format!("{} {}\n", req.method(), req.uri());
            for (name, value) in req.headers() {
                text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
            }
            Response::new(full(text))
        }
        "/ws" => upgrade(req),
        "/hop" => Response::builder()
            .header("connection", "x-private")
            .header("x-private", "secret")
            .header("keep-alive", "timeout=5")
            .body(full("hop"))
            .unwrap(),
        p if p.starts_with("/bytes/") => {
            let n: usize = p["/bytes/".len()..].parse().unwrap_or(0);
            Response::new(full(payload(n)))
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(full("not found"))
            .unwrap(),
    };
    Ok(response)
}

/// Answers a WebSocket-style upgrade: greets, then echoes until EOF.
fn upgrade(mut req: Request<Incoming>) -> Response<Body> {
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let mut io = TokioIo::new(upgraded);
            let _ = io.write_all(b"hello-from-origin\n").await;
            let mut buf = [0u8; 1024];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(full(""))
        .unwrap()
}

/// A TLS origin with a self-signed certificate, counting TLS connections.
pub struct TlsOrigin {
    pub addr: SocketAddr,
    pub cert_pem: PathBuf,
    pub accepted: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

impl TlsOrigin {
    /// On 127.0.0.1, with a certificate for `localhost` and `127.0.0.1`.
    pub async fn start() -> TlsOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, &["localhost", "127.0.0.1"])
    }

    pub fn serve(listener: TcpListener, names: &[&str]) -> TlsOrigin {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert_pem = dir.path().join("origin.pem");
        std::fs::write(&cert_pem, cert.pem()).unwrap();
        let der_key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], der_key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    let service = service_fn(|_req: Request<Incoming>| async {
                        Ok::<_, Infallible>(Response::new(full("tls-origin-ok")))
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsOrigin {
            addr,
            cert_pem,
            accepted,
            _dir: dir,
        }
    }
}

/// Sends raw bytes to `addr` and returns everything read until EOF or `limit`.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A config for tests: every loopback client allowed, short timeouts.
pub fn base_config(extra_proxy: &str, upstream: &str) -> String {
    format!(
        "[proxy]\nallow_clients = [\"127.0.0.0/8\"]\ndeny_destinations = []\nheader_read_timeout = \"2s\"\n{extra_proxy}\n[upstream]\nconnect_timeout = \"2s\"\n{upstream}\n[intercept]\nenabled = false\n"
    )
}

/// A TCP server on loopback that echoes every connection until it closes.
pub async fn echo_server() -> SocketAddr {
    echo_server_on("127.0.0.1").await
}

/// The same on another loopback address (`127.0.0.2`, …).
pub async fn echo_server_on(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

/// A CONNECT tunnel to `origin` through `proxy`, answered 200.
pub async fn open_tunnel(proxy: SocketAddr, origin: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "answer head");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Sends `data` through the tunnel and reads it back.
pub async fn round_trip(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(back, data);
}

/// Runs the modgate binary with `args` to its end (60 s at most).
pub async fn run_modgate(args: &[&str]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_modgate"))
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("modgate ends in time")
        .unwrap()
}
