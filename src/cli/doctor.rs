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

async fn run(asked: Option<String>) -> std::process::ExitCode {
    let mut failed = false;
    let mut report = |name: &str, outcome: Outcome| match outcome {
        Ok(seen) => println!("ok    {name}: {seen}"),
        Err((why, fix)) => {
            failed = true;
            println!("FAIL  {name}: {why}\n      fix: {fix}");
        }
    };
    let variables = variables(asked.as_deref());
    let proxy = asked.or_else(|| proxy_from_env().map(|(_, url)| url));
    report("proxy variables", variables);
    let Some(proxy) = proxy else {
        return std::process::ExitCode::FAILURE;
    };
    let Some(addr) = host_port(&proxy) else {
        report(
            "proxy answers",
            Err((
                format!("{proxy:?} is not http://host:port"),
                "export HTTPS_PROXY=http://HOST:3128 (the gateway's address)".into(),
            )),
        );
        return std::process::ExitCode::FAILURE;
    };
    let ca = fetch_ca(&addr).await;
    let ca_pem = ca.as_ref().ok().cloned();
    report("proxy answers", ca.map(|_| format!("modgate at {addr}")));
    let Some(ca_pem) = ca_pem else {
        return std::process::ExitCode::FAILURE;
    };
    let roots = go_roots();
    report(
        "the go command trusts modgate's CA",
        trusted(&roots, &ca_pem, &addr),
    );
    report(
        "a module request through the proxy",
        module_request(&addr, roots).await,
    );
    report("the gateway's mirrors", mirrors(&addr).await);
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// The proxy the environment names, the way the go command reads it.
fn proxy_from_env() -> Option<(&'static str, String)> {
    ["HTTPS_PROXY", "https_proxy"].into_iter().find_map(|name| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| (name, v))
    })
}

/// Both cases of HTTP(S)_PROXY set, to the same proxy.
fn variables(asked: Option<&str>) -> Outcome {
    let names = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"];
    let values: Vec<(&str, Option<String>)> = names
        .iter()
        .map(|n| (*n, std::env::var(n).ok().filter(|v| !v.is_empty())))
        .collect();
    let want = asked
        .map(str::to_string)
        .or_else(|| proxy_from_env().map(|(_, url)| url))
        .unwrap_or_else(|| "http://HOST:3128".into());
    let fix = format!(
        "export HTTPS_PROXY={want} https_proxy={want} HTTP_PROXY={want} http_proxy={want}   (on the modgate host: eval \"$(modgate env)\")"
    );
    let missing: Vec<&str> = values
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        return Err((format!("not set: {}", missing.join(", ")), fix));
    }
    let differ = values
        .iter()
        .any(|(_, v)| v.as_deref() != Some(want.as_str()));
    if differ && asked.is_none() {
        return Err(("they name different proxies".into(), fix));
    }
    Ok(format!("all four name {want}"))
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

fn trusted(roots: &[CertificateDer<'static>], ca: &CertificateDer<'static>, addr: &str) -> Outcome {
    if roots.contains(ca) {
        return Ok(
            "among the roots it loads (SSL_CERT_FILE, SSL_CERT_DIR, the system store)".into(),
        );
    }
    let fix = format!(
        "curl -fsS --noproxy '*' http://{addr}/ca.pem | cat /etc/ssl/certs/ca-certificates.crt - > ~/.config/modgate-bundle.pem && export SSL_CERT_FILE=~/.config/modgate-bundle.pem   (or trust it system-wide: http://{addr}/ca)"
    );
    Err((
        "modgate's CA is not among the roots the go command loads".into(),
        fix,
    ))
}

/// CONNECT proxy.golang.org:443 through the proxy, TLS with the go
/// command's roots, and `/sumdb/sum.golang.org/supported`, which modgate
/// answers itself.
async fn module_request(addr: &str, roots: Vec<CertificateDer<'static>>) -> Outcome {
    let fix =
        "on the gateway: intercept.enabled = true, and proxy.golang.org not in intercept.bypass"
            .to_string();
    let exchange = tunnelled(addr, roots);
    match tokio::time::timeout(WAIT, exchange).await {
        Err(_) => Err((format!("no answer within {WAIT:?}"), fix)),
        Ok(Err(why)) if why.contains("certificate") => Err((why, "see the CA check above".into())),
        Ok(Err(why)) => Err((why, fix)),
        Ok(Ok(200)) => Ok("https://proxy.golang.org answered through modgate".into()),
        Ok(Ok(status)) => Err((format!("https://proxy.golang.org answered {status}"), fix)),
    }
}

async fn tunnelled(addr: &str, roots: Vec<CertificateDer<'static>>) -> Result<u16, String> {
    let host = "proxy.golang.org";
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
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
        let line = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        return Err(format!("CONNECT {host}:443 refused: {line}"));
    }
    let mut store = rustls::RootCertStore::empty();
    store.add_parsable_certificates(roots);
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(store)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let name = ServerName::try_from(host).map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS with modgate: {e}"))?;
    let request = format!(
        "GET /sumdb/sum.golang.org/supported HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
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
