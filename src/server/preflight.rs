//! What `run` would refuse beyond the file itself, found by `modgate
//! check` before `run` meets it: files it must read (auth file, mirror CA
//! file, the CA), files and directories it must write (the CA's, the
//! cache, the access log, the pid file), the capability `outbound_mark`
//! needs, listeners already taken. Each problem at the place of its key
//! (or the file, for a default).

use std::path::Path;

use crate::config::{Config, ConfigError};
use crate::listener::Entry;
use crate::proxy::Auth;
use crate::tls::Ca;

/// Every problem `run` would meet with `config`. Needs a tokio runtime
/// (listeners are bound to see whether they are free, then closed).
pub fn preflight(config: &Config) -> Vec<ConfigError> {
    let origin = &config.origin;
    let mut problems = Vec::new();
    let mut fail = |key: &str, message: String| problems.push(origin.error(key, message));
    if let Some(path) = &config.proxy.auth_file
        && let Err(e) = Auth::load(path)
    {
        fail("proxy.auth_file", format!("proxy.auth_file: {e}"));
    }
    for (key, file) in [
        ("gomod.mirror_ca_file", &config.gomod.mirror_ca_file),
        ("upstream.ca_file", &config.upstream.ca_file),
    ] {
        if let Some(path) = file
            && let Err(e) = crate::tls::roots::pem_certificates(path)
        {
            fail(key, format!("{key}: {e}"));
        }
    }
    if let Some(pac) = config
        .upstream
        .pac
        .as_deref()
        .filter(|p| !p.starts_with("http://"))
        && let Err(why) = std::fs::read_to_string(pac)
            .map_err(|e| e.to_string())
            .and_then(|script| crate::upstream::pac::engine::check(&script))
    {
        fail("upstream.pac", format!("upstream.pac {pac}: {why}"));
    }
    if config.intercept.enabled
        && let Err(why) = ca_usable(&config.intercept.ca_dir)
    {
        fail("intercept.ca_dir", format!("intercept.ca_dir: {why}"));
    }
    if config.cache.enabled
        && let Err(why) = writable(&config.cache.dir)
    {
        fail(
            "cache.dir",
            format!("cache.dir {}: {why}", config.cache.dir.display()),
        );
    }
    for (key, file) in [
        ("log.access_log", &config.log.access_log),
        ("proxy.pid_file", &config.proxy.pid_file),
    ] {
        if let Some(file) = file
            && let Err(why) = file_writable(file)
        {
            fail(key, format!("{key} {}: {why}", file.display()));
        }
    }
    if let Some(mark) = config.transparent.outbound_mark
        && let Err(e) = mark_allowed(mark)
    {
        fail("transparent.outbound_mark", e.to_string());
    }
    for (key, addr, v6_only) in listeners(config) {
        if addr.port() != 0
            && let Err(e) = crate::listener::bind(addr, v6_only)
            && let Some(why) = taken(addr, &e)
        {
            fail(key, format!("{key}: cannot listen on {addr}: {why}"));
        }
    }
    problems
}

/// Why `addr` cannot be listened on, unless it is held by a running
/// modgate (this config's own instance: `check` runs beside it, as the
/// unit's ExecStartPre and `reload` do).
fn taken(addr: std::net::SocketAddr, error: &std::io::Error) -> Option<String> {
    if error.kind() != std::io::ErrorKind::AddrInUse {
        return Some(error.to_string());
    }
    match crate::sys::listener_owner(addr) {
        Some((_, name)) if name == "modgate" => None,
        Some((pid, name)) => Some(format!("{error} (by {name}, pid {pid})")),
        None => Some(error.to_string()),
    }
}

/// Each listener `config` asks for, with its key.
fn listeners(config: &Config) -> Vec<(&'static str, std::net::SocketAddr, bool)> {
    let key = |entry| match entry {
        Entry::Explicit => "proxy.listen",
        Entry::TransparentHttp => "transparent.http",
        Entry::TransparentTls => "transparent.https",
    };
    let mut all: Vec<_> = super::wanted(config)
        .into_iter()
        .map(|(entry, addr, v6_only)| (key(entry), addr, v6_only))
        .collect();
    all.extend(
        config
            .admin
            .listen
            .map(|addr| ("admin.listen", addr, false)),
    );
    all
}

/// The CA in `dir` loads, or (none yet) `run` can create it there.
fn ca_usable(dir: &Path) -> Result<(), String> {
    let cert = dir.join(crate::tls::ca::CERT_FILE);
    let key = dir.join(crate::tls::ca::KEY_FILE);
    if cert.exists() || key.exists() {
        return Ca::load(dir).map(|_| ()).map_err(|e| e.to_string());
    }
    writable(dir).map_err(|why| {
        format!(
            "no CA in {} and none can be created there: {why}",
            dir.display()
        )
    })
}

/// `dir`, or the nearest ancestor that exists (run creates the rest), takes
/// a new file. Leaves nothing behind.
fn writable(dir: &Path) -> Result<(), String> {
    let existing = dir
        .ancestors()
        .find(|a| a.exists())
        .ok_or_else(|| "no part of it exists".to_string())?;
    if !existing.is_dir() {
        return Err(format!("{} is not a directory", existing.display()));
    }
    let probe = existing.join(format!(".modgate-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| format!("{} is not writable: {e}", existing.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// `file` can be appended to, or (absent) created in its directory.
fn file_writable(file: &Path) -> Result<(), String> {
    if file.exists() {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(file)
            .map(|_| ())
            .map_err(|e| format!("cannot be written: {e}"));
    }
    match file.parent() {
        Some(dir) if dir.is_dir() => writable(dir),
        Some(dir) => Err(format!("{} is not a directory that exists", dir.display())),
        None => Err("has no directory".into()),
    }
}

/// Whether this process may set `mark` on its sockets (CAP_NET_ADMIN).
fn mark_allowed(mark: u32) -> Result<(), crate::sys::SysError> {
    let probe = tokio::net::TcpSocket::new_v4()
        .map_err(|source| crate::sys::SysError::Mark { mark, source })?;
    crate::sys::set_mark(&probe, mark)
}
