//! `modgate doctor`, run on a client: is this machine set up to use the
//! gateway? Each check says ok, or what is wrong and the one command that
//! fixes it. Exit 1 when a check fails.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the proxy may take for any one exchange.
const WAIT: Duration = Duration::from_secs(10);
/// The most of an answer read.
const MAX_ANSWER: usize = 1 << 20;

/// One check's outcome: what was seen, or why it failed and the fix.
type Outcome = Result<String, (String, String)>;

pub fn doctor(proxy: Option<String>) -> anyhow::Result<std::process::ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(run(proxy)))
}

/// The checks' outcomes, printed as they come.
#[derive(Default)]
struct Report {
    failed: bool,
}

impl Report {
    /// Prints `outcome`; true when it passed.
    fn check(&mut self, name: &str, outcome: Outcome) -> bool {
        match outcome {
            Ok(seen) => {
                println!("ok    {name}: {seen}");
                true
            }
            Err((why, fix)) => {
                self.failed = true;
                println!("FAIL  {name}: {why}\n      fix: {fix}");
                false
            }
        }
    }
}

async fn run(asked: Option<String>) -> std::process::ExitCode {
    let mut report = Report::default();
    match asked
        .clone()
        .or_else(|| proxy_from_env().map(|(_, url)| url))
    {
        Some(proxy) => explicit(&mut report, asked.as_deref(), &proxy).await,
        None => transparent(&mut report).await,
    }
    if report.failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// A client pointed at the proxy by its variables (or `--proxy`).
async fn explicit(report: &mut Report, asked: Option<&str>, proxy: &str) {
    report.check("proxy variables", variables(asked));
    let Some(addr) = host_port(proxy) else {
        report.check(
            "proxy answers",
            Err((
                format!("{proxy:?} is not http://host:port"),
                "export HTTPS_PROXY=http://HOST:3128 (the gateway's address)".into(),
            )),
        );
        return;
    };
    let ca = fetch_ca(&addr).await;
    let ca_pem = ca.as_ref().ok().cloned();
    report.check("proxy answers", ca.map(|_| format!("modgate at {addr}")));
    let Some(ca_pem) = ca_pem else {
        return;
    };
    let roots = go_roots();
    let fix = bundle_fix(&format!("curl -fsS --noproxy '*' http://{addr}/ca.pem"));
    let fix = format!("{fix}   (or trust it system-wide: http://{addr}/ca)");
    report.check(
        "the go command trusts modgate's CA",
        trusted(&roots, &ca_pem, fix),
    );
    let stream = connect_through(&addr).await;
    report.check(
        "a module request through the proxy",
        module_request(stream, roots).await,
    );
    report.check("the gateway's mirrors", mirrors(&addr).await);
    tools(report, &ca_pem);
}

/// pip and npm, when this machine has them: do they trust modgate's CA?
fn tools(report: &mut Report, ca: &CertificateDer<'_>) {
    if on_path(&["pip3", "pip"]).is_some() {
        report.check("pip trusts modgate's CA", pip_trust(ca));
    }
    if let Some(npm) = on_path(&["npm"]) {
        report.check("npm trusts modgate's CA", npm_trust(&npm, ca));
    }
}

/// The first of `names` in a directory of PATH.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|candidate| candidate.is_file())
}

/// Whether the PEM file `file` (named by `source`) holds `ca`.
fn holds(source: &str, file: &str, ca: &CertificateDer<'_>, fix: &str) -> Outcome {
    let pem =
        std::fs::read(file).map_err(|e| (format!("{source} {file}: {e}"), fix.to_string()))?;
    if pem_certs(&pem).iter().any(|c| c.as_ref() == ca.as_ref()) {
        Ok(format!("{source} {file} holds it"))
    } else {
        Err((
            format!("{source} {file} does not hold modgate's CA"),
            fix.to_string(),
        ))
    }
}

/// pip verifies against the first of REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE
/// (Python requests lets them override pip's own setting), then PIP_CERT,
/// then its config's `cert`, else a bundle of its own without modgate's CA.
fn pip_trust(ca: &CertificateDer<'_>) -> Outcome {
    let fix = "eval \"$(modgate env)\" (it sets PIP_CERT and REQUESTS_CA_BUNDLE to a bundle with modgate's CA)";
    for name in ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT"] {
        if let Some(file) = std::env::var(name).ok().filter(|v| !v.is_empty()) {
            return holds(name, &file, ca, fix);
        }
    }
    let configured = std::process::Command::new(on_path(&["pip3", "pip"]).unwrap_or_default())
        .args(["config", "get", "global.cert"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|file| !file.is_empty());
    match configured {
        Some(file) => holds("pip's config cert", &file, ca, fix),
        None => Err((
            "pip uses its own bundle of roots, without modgate's CA".into(),
            fix.into(),
        )),
    }
}

/// Node adds NODE_EXTRA_CA_CERTS to its roots; npm's `cafile` replaces them.
fn npm_trust(npm: &std::path::Path, ca: &CertificateDer<'_>) -> Outcome {
    let fix = "eval \"$(modgate env)\" (it sets NODE_EXTRA_CA_CERTS to modgate's CA)";
    let cafile = std::process::Command::new(npm)
        .args(["config", "get", "cafile"])
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|file| !file.is_empty() && file != "null" && file != "undefined");
    if let Some(file) = cafile {
        return holds("npm's cafile", &file, ca, fix);
    }
    match std::env::var("NODE_EXTRA_CA_CERTS")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(file) => holds("NODE_EXTRA_CA_CERTS", &file, ca, fix),
        None => Err((
            "Node trusts only its own roots (NODE_EXTRA_CA_CERTS is not set)".into(),
            fix.into(),
        )),
    }
}

/// A client with no proxy variables: fine when its connections to the
/// module proxy are redirected to a modgate gateway (transparent mode).
async fn transparent(report: &mut Report) {
    let fix = variables_fix("http://HOST:3128");
    let chain = tokio::time::timeout(WAIT, presented_chain(MODULE_HOST)).await;
    let chain = match chain {
        Ok(Ok(chain)) => chain,
        Ok(Err(why)) => {
            let why = format!("none set, and {MODULE_HOST}:443 cannot be reached directly: {why}");
            report.check("proxy variables", Err((why, fix)));
            return;
        }
        Err(_) => {
            let why = format!("none set, and {MODULE_HOST}:443 did not answer within {WAIT:?}");
            report.check("proxy variables", Err((why, fix)));
            return;
        }
    };
    let Some(ca) = chain
        .iter()
        .skip(1)
        .find(|c| modgate::tls::inspect::is_modgate_ca(c))
    else {
        let why = format!(
            "none set, and {MODULE_HOST}:443 is not redirected to a modgate gateway (its certificate is not from a modgate CA)"
        );
        report.check("proxy variables", Err((why, fix)));
        return;
    };
    let seen = format!(
        "none set: {MODULE_HOST}:443 reaches a modgate gateway (transparent mode), CA sha256 {}",
        modgate::tls::inspect::fingerprint(ca)
    );
    report.check("transparent gateway", Ok(seen));
    let roots = go_roots();
    let fix = bundle_fix("curl -fsS http://GATEWAY:3128/ca.pem");
    let fix = format!(
        "{fix}   (GATEWAY: the gateway's address, from your admin; or trust it system-wide from its /ca page)"
    );
    report.check(
        "the go command trusts modgate's CA",
        trusted(&roots, ca, fix),
    );
    let stream = tokio::time::timeout(WAIT, TcpStream::connect((MODULE_HOST, 443)))
        .await
        .map_err(|_| format!("no answer within {WAIT:?}"))
        .and_then(|r| r.map_err(|e| e.to_string()));
    report.check(
        "a module request through the gateway",
        module_request(stream, roots).await,
    );
}

/// The fix for a CA the go command does not trust: a bundle of the
/// system roots and the CA `fetch` prints, named by SSL_CERT_FILE.
fn bundle_fix(fetch: &str) -> String {
    format!(
        "mkdir -p ~/.config && {fetch} | cat /etc/ssl/certs/ca-certificates.crt - > ~/.config/modgate-bundle.pem && export SSL_CERT_FILE=~/.config/modgate-bundle.pem"
    )
}

/// The proxy the environment names, the way the go command reads it
/// (upper case first).
fn proxy_from_env() -> Option<(&'static str, String)> {
    ["HTTPS_PROXY", "https_proxy"].into_iter().find_map(|name| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| (name, v))
    })
}

fn variables_fix(want: &str) -> String {
    format!(
        "export HTTPS_PROXY={want} https_proxy={want} HTTP_PROXY={want} http_proxy={want}   (on the modgate host: eval \"$(modgate env)\")"
    )
}

/// The go command reads HTTPS_PROXY, else https_proxy: one of them must
/// name the proxy, and where both are set they must agree. Variables
/// other tools read (curl reads only lower-case http_proxy) are noted
/// when missing, not failed.
fn variables(asked: Option<&str>) -> Outcome {
    let names = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"];
    let values: Vec<(&str, Option<String>)> = names
        .iter()
        .map(|n| (*n, std::env::var(n).ok().filter(|v| !v.is_empty())))
        .collect();
    let Some(want) = asked
        .map(str::to_string)
        .or_else(|| proxy_from_env().map(|(_, url)| url))
    else {
        return Err(("not set".into(), variables_fix("http://HOST:3128")));
    };
    let differ: Vec<&str> = values
        .iter()
        .filter(|(_, v)| v.as_deref().is_some_and(|v| v != want))
        .map(|(n, _)| *n)
        .collect();
    if !differ.is_empty() && asked.is_none() {
        let why = format!("{} name(s) another proxy than {want}", differ.join(", "));
        return Err((why, variables_fix(&want)));
    }
    let missing: Vec<&str> = values
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| *n)
        .collect();
    if missing.is_empty() {
        return Ok(format!("all four name {want}"));
    }
    Ok(format!(
        "the go command uses {want}; not set: {} (tools that read only those go direct: {})",
        missing.join(", "),
        variables_fix(&want)
    ))
}

/// `host:port` of an `http://host:port[/]` proxy URL.
fn host_port(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?.trim_end_matches('/');
    let rest = rest.rsplit_once('@').map_or(rest, |(_, hp)| hp);
    (!rest.is_empty() && !rest.contains('/')).then(|| {
        if rest
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            rest.to_string()
        } else {
            format!("{rest}:80")
        }
    })
}

/// One origin-form GET to the proxy itself: status and body.
async fn get(addr: &str, path: &str) -> Result<(u16, Vec<u8>), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(MAX_ANSWER as u64)
            .read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(answer)
    };
    let answer = tokio::time::timeout(WAIT, exchange)
        .await
        .map_err(|_| format!("no answer within {WAIT:?}"))??;
    split(&answer).ok_or_else(|| "not an HTTP answer".into())
}

/// Status and body of a whole `Connection: close` HTTP/1.1 answer.
fn split(answer: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, answer[end + 4..].to_vec()))
}

/// modgate's CA, from the proxy (`/ca.pem`).
async fn fetch_ca(addr: &str) -> Result<CertificateDer<'static>, (String, String)> {
    let fix = "check the proxy address (modgate listens on 127.0.0.1:3128 by default), or start it: modgate run".to_string();
    match get(addr, "/ca.pem").await {
        Err(e) => Err((format!("nothing answers at {addr}: {e}"), fix)),
        Ok((200, body)) => CertificateDer::from_pem_slice(&body)
            .map_err(|_| (format!("{addr} answers, but not as modgate"), fix)),
        Ok((status, body)) => Err((
            format!(
                "{addr} answered /ca.pem with {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ),
            fix,
        )),
    }
}

/// The roots the go command loads on Linux: `SSL_CERT_FILE` (else the
/// first system bundle that exists) plus every file in `SSL_CERT_DIR`'s
/// directories (else the system ones).
fn go_roots() -> Vec<CertificateDer<'static>> {
    const FILES: [&str; 6] = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/pki/tls/cacert.pem",
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ];
    let files: Vec<PathBuf> = match std::env::var_os("SSL_CERT_FILE") {
        Some(file) => vec![file.into()],
        None => FILES.iter().map(PathBuf::from).collect(),
    };
    let mut roots: Vec<CertificateDer<'static>> = files
        .iter()
        .find_map(|f| std::fs::read(f).ok())
        .map(|pem| pem_certs(&pem))
        .unwrap_or_default();
    let dirs = std::env::var("SSL_CERT_DIR")
        .unwrap_or_else(|_| "/etc/ssl/certs:/etc/pki/tls/certs".into());
    for dir in dirs.split(':').filter(|d| !d.is_empty()) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(pem) = std::fs::read(entry.path()) {
                roots.extend(pem_certs(&pem));
            }
        }
    }
    roots
}

fn pem_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

fn trusted(roots: &[CertificateDer<'static>], ca: &CertificateDer<'_>, fix: String) -> Outcome {
    if roots.iter().any(|root| root.as_ref() == ca.as_ref()) {
        return Ok(
            "among the roots it loads (SSL_CERT_FILE, SSL_CERT_DIR, the system store)".into(),
        );
    }
    Err((
        "modgate's CA is not among the roots the go command loads".into(),
        fix,
    ))
}

/// The module proxy's host, which modgate intercepts.
const MODULE_HOST: &str = "proxy.golang.org";

/// A TCP stream to the module host through the proxy at `addr` (CONNECT).
async fn connect_through(addr: &str) -> Result<TcpStream, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let host = MODULE_HOST;
        let connect = format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n");
        stream
            .write_all(connect.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            let mut byte = [0u8; 1];
            if stream.read(&mut byte).await.map_err(|e| e.to_string())? == 0 {
                break;
            }
            head.push(byte[0]);
        }
        if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
            let head = String::from_utf8_lossy(&head);
            let line = head.lines().next().unwrap_or("");
            return Err(format!("CONNECT {host}:443 refused: {line}"));
        }
        Ok(stream)
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .map_err(|_| format!("no answer within {WAIT:?}"))?
}

/// TLS to the module host over `stream` with the go command's roots, and
/// `/sumdb/sum.golang.org/supported`, which modgate answers itself.
async fn module_request(
    stream: Result<TcpStream, String>,
    roots: Vec<CertificateDer<'static>>,
) -> Outcome {
    let fix = format!(
        "on the gateway: intercept.enabled = true, and {MODULE_HOST} not in intercept.bypass"
    );
    let stream = stream.map_err(|why| (why, fix.clone()))?;
    match tokio::time::timeout(WAIT, supported(stream, roots)).await {
        Err(_) => Err((format!("no answer within {WAIT:?}"), fix)),
        Ok(Err(why)) if why.contains("certificate") => Err((why, "see the CA check above".into())),
        Ok(Err(why)) => Err((why, fix)),
        Ok(Ok(200)) => Ok(format!("https://{MODULE_HOST} answered through modgate")),
        Ok(Ok(status)) => Err((format!("https://{MODULE_HOST} answered {status}"), fix)),
    }
}

async fn supported(stream: TcpStream, roots: Vec<CertificateDer<'static>>) -> Result<u16, String> {
    let mut store = rustls::RootCertStore::empty();
    store.add_parsable_certificates(roots);
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(store)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let name = ServerName::try_from(MODULE_HOST).map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS with modgate: {e}"))?;
    let request = format!(
        "GET /sumdb/sum.golang.org/supported HTTP/1.1\r\nHost: {MODULE_HOST}\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let _ = (&mut tls)
        .take(MAX_ANSWER as u64)
        .read_to_end(&mut answer)
        .await;
    split(&answer)
        .map(|(status, _)| status)
        .ok_or_else(|| "not an HTTP answer".into())
}

/// The certificate chain `host`:443 presents to a direct connection
/// (whatever signed it: it is only read, never trusted).
async fn presented_chain(host: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let recorder = Arc::new(Recorder::default());
    let tls = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let stream = TcpStream::connect((host, 443))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let chain = recorder.chain.lock().map(|c| c.clone()).unwrap_or_default();
    Ok(chain)
}

/// Accepts any server certificate and keeps the chain presented, for
/// [`presented_chain`]; signatures are still checked.
#[derive(Debug, Default)]
struct Recorder {
    chain: std::sync::Mutex<Vec<CertificateDer<'static>>>,
}

impl rustls::client::danger::ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if let Ok(mut chain) = self.chain.lock() {
            *chain = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| c.clone().into_owned())
                .collect();
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        algorithms().supported_schemes()
    }
}

fn algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
    rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms
}

/// The gateway's own view of its module mirrors.
async fn mirrors(addr: &str) -> Outcome {
    let path = "/.well-known/modgate/mirrors";
    let body = match get(addr, path).await {
        Ok((200, body)) => String::from_utf8_lossy(&body).into_owned(),
        Ok((status, _)) => {
            return Err((
                format!("{path} answered {status}"),
                "upgrade modgate on the gateway".into(),
            ));
        }
        Err(e) => return Err((e, "check the proxy address".into())),
    };
    let module: Vec<&str> = body.lines().filter(|l| l.starts_with("module ")).collect();
    let up = module
        .iter()
        .filter(|l| l.split_whitespace().nth(2) == Some("up"))
        .count();
    if !module.is_empty() && up == 0 {
        let fix = "nothing to fix on this machine: tell the gateway's admin every module mirror is failing (its status page says why); cached modules are still served";
        return Err((
            format!("every module mirror of the gateway is down:\n{body}"),
            fix.into(),
        ));
    }
    Ok(format!("{up} of {} module mirrors up", module.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        assert_eq!(
            host_port("http://127.0.0.1:3128").as_deref(),
            Some("127.0.0.1:3128")
        );
        assert_eq!(
            host_port("http://gw.example/").as_deref(),
            Some("gw.example:80")
        );
        assert_eq!(host_port("http://u:p@gw:8080").as_deref(), Some("gw:8080"));
        assert_eq!(host_port("https://gw:3128"), None);
        assert_eq!(host_port("http://gw:3128/x"), None);
    }

    #[test]
    fn answers_split() {
        assert_eq!(
            split(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody"),
            Some((200, b"body".to_vec()))
        );
        assert_eq!(split(b"garbage"), None);
    }
}
