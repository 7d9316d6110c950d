//! Go module fixtures: a GOPROXY-layout directory built by the test, a real
//! HTTP mirror serving it (with failure modes and a request log), and a
//! runner for the real go command through modgate.
#![allow(dead_code)]

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A test module: path, version, and its Go source.
pub struct Module {
    pub path: &'static str,
    pub version: &'static str,
    pub package: &'static str,
    pub func: &'static str,
    /// Extra bytes shipped in the zip (to make it large).
    pub blob: usize,
}

/// The go command's own GOPROXY: with HTTPS_PROXY, modgate intercepts it.
pub const DEFAULT_GOPROXY: &str = "https://proxy.golang.org,direct";

/// The common name of the CA that signs [`Mirror::start_tls`]'s certificate.
pub const CORP_CA: &str = "Example Corp Inspection CA";

pub const MODULES: &[Module] = &[
    Module {
        path: "example.com/Acme/Lib",
        version: "v1.0.0",
        package: "lib",
        func: "Acme",
        blob: 0,
    },
    Module {
        path: "example.com/shapes/v2",
        version: "v2.1.0",
        package: "shapes",
        func: "Sides",
        blob: 0,
    },
    Module {
        path: "example.com/big",
        version: "v1.0.0",
        package: "big",
        func: "Size",
        blob: 11 << 20,
    },
    Module {
        path: "example.com/util",
        version: "v1.2.0",
        package: "util",
        func: "Twice",
        blob: 0,
    },
];

/// The go command's case-encoding (`A` -> `!a`).
pub fn escape(path: &str) -> String {
    path.chars()
        .map(|c| {
            if c.is_ascii_uppercase() {
                format!("!{}", c.to_ascii_lowercase())
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Writes a GOPROXY-layout tree for `MODULES` under `root`; `variant`
/// changes the sources (a mirror lying about a module's content).
pub fn build_goproxy_dir(root: &Path, variant: &str) {
    for m in MODULES {
        write_module(root, m, variant);
    }
}

/// Writes `m`'s `list`, `.info`, `.mod` and `.zip` into the GOPROXY tree at
/// `root`; `variant` goes into its source (a tampered copy differs there).
pub fn write_module(root: &Path, m: &Module, variant: &str) {
    let dir = root.join(escape(m.path)).join("@v");
    std::fs::create_dir_all(&dir).unwrap();
    let go_mod = format!("module {}\n\ngo 1.21\n", m.path);
    std::fs::write(dir.join("list"), format!("{}\n", m.version)).unwrap();
    std::fs::write(
        dir.join(format!("{}.info", m.version)),
        format!(
            "{{\"Version\":\"{}\",\"Time\":\"2026-01-02T03:04:05Z\"}}",
            m.version
        ),
    )
    .unwrap();
    std::fs::write(dir.join(format!("{}.mod", m.version)), &go_mod).unwrap();
    let source = format!(
        "package {}\n\n// {} is part of the test module {}.{variant}\nfunc {}(n int) int {{ return n * 2 }}\n",
        m.package, m.func, m.path, m.func
    );
    let file = std::fs::File::create(dir.join(format!("{}.zip", m.version))).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let prefix = format!("{}@{}", m.path, m.version);
    zip.start_file(format!("{prefix}/go.mod"), options).unwrap();
    zip.write_all(go_mod.as_bytes()).unwrap();
    zip.start_file(format!("{prefix}/{}.go", m.package), options)
        .unwrap();
    zip.write_all(source.as_bytes()).unwrap();
    if m.blob > 0 {
        zip.start_file(format!("{prefix}/blob.bin"), options)
            .unwrap();
        let blob: Vec<u8> = (0..m.blob)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        zip.write_all(&blob).unwrap();
    }
    zip.finish().unwrap();
}

/// Writes a main module that imports every test module.
pub fn build_app(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut go_mod = String::from("module example.com/app\n\ngo 1.21\n\nrequire (\n");
    let mut imports = String::new();
    let mut calls = String::new();
    for m in MODULES {
        go_mod.push_str(&format!("\t{} {}\n", m.path, m.version));
        imports.push_str(&format!("\t\"{}\"\n", m.path));
        calls.push_str(&format!("\tfmt.Println({}.{}(21))\n", m.package, m.func));
    }
    go_mod.push_str(")\n");
    std::fs::write(dir.join("go.mod"), go_mod).unwrap();
    std::fs::write(
        dir.join("main.go"),
        format!("package main\n\nimport (\n\t\"fmt\"\n{imports})\n\nfunc main() {{\n{calls}}}\n"),
    )
    .unwrap();
}

/// How a mirror behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Serve,
    Status500,
    Hang,
    /// Serve, sending bodies at this many bytes per second.
    Throttled(u64),
    /// Serve, in chunks with no Content-Length.
    Chunked,
}

/// A real HTTP mirror over a GOPROXY-layout directory, logging every request
/// path. Its behaviour can change while it runs, and it can be stopped
/// (listener closed, open connections cut).
pub struct Mirror {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    /// When each answer's last byte was sent.
    finished: Arc<Mutex<Vec<(String, Instant)>>>,
    stop: CancellationToken,
}

impl Mirror {
    pub async fn start(root: PathBuf, behaviour: Behaviour) -> Mirror {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, root, behaviour)
    }

    pub fn serve(listener: TcpListener, root: PathBuf, behaviour: Behaviour) -> Mirror {
        Self::serve_with(listener, root, behaviour, None)
    }

    /// Over HTTPS with HTTP/2 (and HTTP/1.1), as public mirrors serve;
    /// `ca_pem` is written with the CA that signed its certificate (for
    /// 127.0.0.1), named [`CORP_CA`] as a firewall's re-signing CA would
    /// be. `https_url()` is its address.
    pub async fn start_tls(root: PathBuf, behaviour: Behaviour, ca_pem: &Path) -> Mirror {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, CORP_CA);
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        std::fs::write(ca_pem, ca.pem()).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_der(ca.der(), ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve_with(listener, root, behaviour, Some(acceptor))
    }

    fn serve_with(
        listener: TcpListener,
        root: PathBuf,
        behaviour: Behaviour,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Mirror {
        let mirror = Mirror {
            addr: listener.local_addr().unwrap(),
            log: Arc::new(Mutex::new(Vec::new())),
            behaviour: Arc::new(Mutex::new(behaviour)),
            finished: Arc::new(Mutex::new(Vec::new())),
            stop: CancellationToken::new(),
        };
        let shared = (
            mirror.log.clone(),
            mirror.behaviour.clone(),
            mirror.finished.clone(),
        );
        let stop = mirror.stop.clone();
        let root = Arc::new(root);
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => return,
                    },
                };
                let (log, behaviour, finished) = shared.clone();
                let root = root.clone();
                let stop = stop.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let path = req.uri().path().to_string();
                        log.lock().unwrap().push(path.clone());
                        let root = root.clone();
                        let behaviour = *behaviour.lock().unwrap();
                        let finished = finished.clone();
                        async move {
                            Ok::<_, Infallible>(answer(&root, &path, behaviour, finished).await)
                        }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let serve = async {
                        match tls {
                            None => {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    let _ = builder
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                                }
                            }
                        }
                    };
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = serve => {}
                    }
                });
            }
        });
        mirror
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// How many requests asked for `path`.
    pub fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|p| *p == path).count()
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    /// Closes the listener and every open connection: the mirror is gone.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// When the mirror finished sending `path`, waiting for it (it is
    /// recorded just after the last byte); bounded: 30 s.
    pub async fn finished_sending(&self, path: &str) -> Instant {
        for _ in 0..3000 {
            if let Some(done) = self.finished(path) {
                return done;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the mirror did not finish {path}")
    }

    /// When the last byte of the latest answer for `path` was sent.
    pub fn finished(&self, path: &str) -> Option<Instant> {
        let finished = self.finished.lock().unwrap();
        finished
            .iter()
            .rev()
            .find(|(p, _)| p == path)
            .map(|(_, t)| *t)
    }
}

type Finished = Arc<Mutex<Vec<(String, Instant)>>>;

async fn answer(
    root: &Path,
    path: &str,
    behaviour: Behaviour,
    finished: Finished,
) -> Response<modgate::message::Body> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .body(modgate::message::text(body))
            .unwrap()
    };
    match behaviour {
        Behaviour::Status500 => {
            return reply(StatusCode::INTERNAL_SERVER_ERROR, b"broken".to_vec());
        }
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return reply(StatusCode::INTERNAL_SERVER_ERROR, Vec::new());
        }
        _ => {}
    }
    let decoded = path.replace("%21", "!");
    let relative = decoded.trim_start_matches('/');
    // A directory's page (a PEP 503 index page), as a static site serves it.
    let relative = if relative.is_empty() || relative.ends_with('/') {
        format!("{relative}index.html")
    } else {
        relative.to_string()
    };
    if relative.contains("..") {
        return reply(StatusCode::BAD_REQUEST, Vec::new());
    }
    let data = match tokio::fs::read(root.join(relative)).await {
        Ok(data) => data,
        Err(_) => return reply(StatusCode::NOT_FOUND, b"not found".to_vec()),
    };
    let Behaviour::Throttled(rate) = behaviour else {
        finished
            .lock()
            .unwrap()
            .push((path.to_string(), Instant::now()));
        return reply(StatusCode::OK, data);
    };
    let length = data.len();
    let (tx, body) = modgate::message::channel(1);
    let path = path.to_string();
    tokio::spawn(async move {
        let chunk = (rate / 20).max(1) as usize;
        for piece in data.chunks(chunk) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if tx.send(Ok(Bytes::copy_from_slice(piece))).await.is_err() {
                return;
            }
        }
        finished.lock().unwrap().push((path, Instant::now()));
    });
    Response::builder()
        .header(http::header::CONTENT_LENGTH, length)
        .body(body)
        .unwrap()
}

/// Runs the go command through modgate at `proxy` with a fresh GOPATH under `work`.
pub struct GoEnv {
    /// modgate's explicit listener, for HTTPS_PROXY; `None`: no proxy variables.
    pub proxy: Option<SocketAddr>,
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    pub work: PathBuf,
    pub cert_bundle: PathBuf,
    pub goproxy: String,
    pub gosumdb: String,
}

pub fn go_binary() -> PathBuf {
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/go/bin/go");
    if local.exists() {
        local
    } else {
        PathBuf::from("go")
    }
}

/// System roots plus modgate's CA, for SSL_CERT_FILE.
pub fn cert_bundle(ca_pem: &Path, out: &Path) -> PathBuf {
    let mut bundle = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    bundle.extend_from_slice(&std::fs::read(ca_pem).unwrap());
    std::fs::write(out, bundle).unwrap();
    out.to_path_buf()
}

impl GoEnv {
    pub async fn run(&self, dir: &Path, args: &[&str]) -> Output {
        let gopath = self.work.join("gopath");
        let empty_dir = self.work.join("empty-cert-dir");
        std::fs::create_dir_all(&empty_dir).unwrap();
        let mut cmd = super::command_in(self.netns.as_deref(), go_binary());
        cmd.args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.work)
            .env("GOPATH", &gopath)
            .env("GOMODCACHE", gopath.join("pkg/mod"))
            .env("GOCACHE", self.work.join("gocache"))
            .env("GOPROXY", &self.goproxy)
            .env("GOSUMDB", &self.gosumdb)
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", "local")
            .env("GOTELEMETRY", "off")
            .env("CGO_ENABLED", "0")
            .env("SSL_CERT_FILE", &self.cert_bundle)
            .env("SSL_CERT_DIR", &empty_dir)
            .kill_on_drop(true);
        if let Some(proxy) = self.proxy {
            let proxy = format!("http://{proxy}");
            cmd.env("HTTPS_PROXY", &proxy).env("HTTP_PROXY", &proxy);
        }
        tokio::time::timeout(Duration::from_secs(240), cmd.output())
            .await
            .expect("go finished in time")
            .expect("go runs")
    }
}

/// A real signed checksum database over a GOPROXY-layout tree: the Go helper
/// in tests/tools/sumdb (golang.org/x/mod/sumdb's test server), built by
/// scripts/test-deps.sh. It logs every request path.
pub struct SumDb {
    /// The verifier key, for `GOSUMDB="<key>"`.
    pub key: String,
    pub addr: String,
    log: Arc<Mutex<Vec<String>>>,
    /// Killed (and its stdin closed, which also ends it) when the test ends.
    _child: tokio::process::Child,
}

impl SumDb {
    pub async fn start(tree: &Path, name: &str) -> SumDb {
        Self::start_in(None, tree, name).await
    }

    /// Starts the helper inside network namespace `netns` (on its loopback).
    pub async fn start_in(netns: Option<&str>, tree: &Path, name: &str) -> SumDb {
        Self::start_with(netns, tree, name, &[]).await
    }

    /// With the helper's test options (`SUMDB_SEED`, `SUMDB_PREFILL`, `SUMDB_LIE`).
    pub async fn start_with(
        netns: Option<&str>,
        tree: &Path,
        name: &str,
        options: &[(&str, &str)],
    ) -> SumDb {
        use tokio::io::AsyncBufReadExt;
        let helper = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/sumdb");
        let mut child = super::command_in(netns, &helper)
            .envs(options.iter().copied())
            .arg(tree)
            .arg(name)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{} (run scripts/test-deps.sh): {e}", helper.display()));
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("sumdb helper ready in time")
            .unwrap()
            .expect("sumdb helper printed its address");
        let mut words = ready.split_whitespace().skip(1);
        let key = words.next().unwrap().to_string();
        let addr = words.next().unwrap().to_string();
        let log = super::collect_lines(lines, Vec::new());
        SumDb {
            key,
            addr,
            log,
            _child: child,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}
