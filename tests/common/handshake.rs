//! One new intercepted connection, as a TLS client that may keep sessions
//! makes it: CONNECT through the proxy, a TLS handshake trusting the
//! gateway's CA, one request modgate answers itself, then close.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::HandshakeKind;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub const HOST: &str = "proxy.golang.org";

/// A client trusting the PEM at `ca`, offering HTTP/1.1; with `resume`, it
/// keeps sessions (tickets) the way browsers and curl do.
pub fn connector(ca: &Path, resume: bool) -> TlsConnector {
    connector_offering(ca, resume, &[b"http/1.1"])
}

/// A client trusting the PEM at `ca`, offering `alpn` (none: no ALPN).
pub fn connector_offering(ca: &Path, resume: bool, alpn: &[&[u8]]) -> TlsConnector {
    let pem = std::fs::read(ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem_certs(&pem) {
        roots.add(cert).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    TlsConnector::from(Arc::new(config))
}

fn pem_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.unwrap())
        .collect()
}

/// A CONNECT through `proxy` and a TLS handshake, nothing sent after it.
pub async fn handshaken(
    proxy: SocketAddr,
    tls: &TlsConnector,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let mut tcp = TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let connect = format!("CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n");
    tcp.write_all(connect.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let head = read_head(&mut tcp).await?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("CONNECT: {head}"));
    }
    let name = ServerName::try_from(HOST).map_err(|e| e.to_string())?;
    tls.connect(name, tcp).await.map_err(|e| e.to_string())
}

/// One connection through `proxy`: how its handshake went, or why it failed.
pub async fn once(proxy: SocketAddr, tls: &TlsConnector) -> Result<HandshakeKind, String> {
    let mut stream = handshaken(proxy, tls).await?;
    let kind = stream.get_ref().1.handshake_kind();
    // A request modgate answers itself: no mirror is involved. Reading the
    // answer also takes in the session tickets sent after the handshake.
    let request = format!(
        "GET /sumdb/sum.golang.org/supported HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    if !answer.starts_with(b"HTTP/1.1 200") {
        return Err(format!("answer: {}", String::from_utf8_lossy(&answer)));
    }
    kind.ok_or_else(|| "no handshake".to_string())
}

/// The CONNECT answer. Read in chunks: the proxy sends nothing after it
/// until the client's TLS hello, so no byte of TLS can be taken here.
async fn read_head(tcp: &mut TcpStream) -> Result<String, String> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        match tcp.read(&mut chunk).await {
            Ok(0) => return Err("closed during the CONNECT answer".into()),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}
