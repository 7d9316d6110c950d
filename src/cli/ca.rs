//! `modgate ca init|show|bundle`: the CA in the config's `intercept.ca_dir`,
//! the same one `run` uses, whatever the working directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use modgate::config::Config;
use modgate::tls::ca::{CERT_FILE, KEY_FILE, LOCK_FILE};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Creates the CA, constrained to the config's gomod hosts.
pub fn init(config: Option<&Path>, force: bool) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let dir = &config.intercept.ca_dir;
    let cert = modgate::tls::ca::init(dir, &config.intercepted_hosts(), force)?;
    println!("created {}", cert.display());
    print!("{}", modgate::tls::trust_hint(&cert));
    Ok(())
}

/// For `reload --new-ca`: makes the CA in the config's `ca_dir` when it
/// has none, owned by the user the running modgate (`pid`) runs as, so
/// that the reload loads it rather than minting one itself.
pub fn make_for_reload(config: &Config, pid: i32) -> anyhow::Result<()> {
    let dir = &config.intercept.ca_dir;
    if modgate::tls::ca::exists(dir) {
        println!("{} already holds a CA; it is kept", dir.display());
        return Ok(());
    }
    let cert = modgate::tls::ca::init(dir, &config.intercepted_hosts(), false)?;
    let owner = std::fs::metadata(format!("/proc/{pid}"))
        .with_context(|| format!("cannot see pid {pid}"))?;
    use std::os::unix::fs::MetadataExt;
    let (uid, gid) = (owner.uid(), owner.gid());
    for path in [
        dir.clone(),
        dir.join(CERT_FILE),
        dir.join(KEY_FILE),
        dir.join(LOCK_FILE),
    ] {
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
            .with_context(|| format!("cannot give {} to uid {uid}", path.display()))?;
    }
    println!(
        "created {}: a new CA, which clients must trust before they can use the intercepted hosts",
        cert.display()
    );
    print!("{}", modgate::tls::trust_hint(&cert));
    Ok(())
}

/// The CA certificate: described with trust hints, or (`pem`) as it is.
pub fn show(config: Option<&Path>, pem: bool) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let (path, der) = certificate(&config.intercept.ca_dir)?;
    if pem {
        print!("{}", modgate::tls::inspect::to_pem(&der));
        return Ok(());
    }
    let text = modgate::tls::inspect::describe(&der).map_err(|e| anyhow::anyhow!(e))?;
    print!("{text}");
    print!("{}", modgate::tls::trust_hint(&path));
    Ok(())
}

/// Writes `out`: this system's trusted roots and modgate's CA, the file
/// SSL_CERT_FILE, REQUESTS_CA_BUNDLE and GIT_SSL_CAINFO can name.
pub fn bundle(config: Option<&Path>, out: &Path) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let count = write_bundle(&config.intercept.ca_dir, out)?;
    println!(
        "wrote {} ({count} system roots and modgate's CA)",
        out.display()
    );
    Ok(())
}

/// Writes the bundle (atomically, mode 0644); returns how many system roots it has.
pub fn write_bundle(ca_dir: &Path, out: &Path) -> anyhow::Result<usize> {
    let (_, ca) = certificate(ca_dir)?;
    let roots = rustls_native_certs::load_native_certs().certs;
    anyhow::ensure!(
        !roots.is_empty(),
        "no system roots found (SSL_CERT_FILE, SSL_CERT_DIR or the system store)"
    );
    let mut text: String = roots.iter().map(modgate::tls::inspect::to_pem).collect();
    text.push_str(&modgate::tls::inspect::to_pem(&ca));
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let temp = out.with_extension("tmp");
    std::fs::write(&temp, text)
        .and_then(|()| std::fs::rename(&temp, out))
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(roots.len())
}

/// The CA certificate in `ca_dir`: its path and DER.
fn certificate(ca_dir: &Path) -> anyhow::Result<(PathBuf, CertificateDer<'static>)> {
    let path = ca_dir.join(CERT_FILE);
    let pem = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read {} (no CA yet: `modgate ca init`, or `modgate run` creates one)",
            path.display()
        )
    })?;
    let der = CertificateDer::from_pem_slice(&pem)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((path, der))
}
