//! `proxy.pid_file`: written by `run` once it listens, removed when it
//! exits; read by `modgate reload` to find whom to send SIGHUP.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The pid file `run` wrote; removed on drop.
pub struct PidFile(Option<PathBuf>);

impl PidFile {
    /// Writes this process's id to `path` (atomically: a temp file renamed).
    pub fn write(path: Option<&Path>) -> anyhow::Result<PidFile> {
        let Some(path) = path else {
            return Ok(PidFile(None));
        };
        // A temporary file made anew (never through a link planted at its
        // name), then renamed over the pid file (replacing a link there,
        // not following it).
        let temp = path.with_extension("pid.tmp");
        let _ = std::fs::remove_file(&temp);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)
            .and_then(|mut file| {
                std::io::Write::write_all(&mut file, format!("{}\n", std::process::id()).as_bytes())
            })
            .and_then(|()| std::fs::rename(&temp, path));
        written.with_context(|| format!("proxy.pid_file: cannot write {}", path.display()))?;
        Ok(PidFile(Some(path.to_path_buf())))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The running modgate `pid_file` names: its process id, checked to be
/// a modgate (a stale pid file can name any process now).
pub fn running(pid_file: Option<&Path>) -> anyhow::Result<i32> {
    let Some(path) = pid_file else {
        bail!(
            "proxy.pid_file is not set in this config, so the running modgate cannot be found; set it, or send SIGHUP yourself (systemd: systemctl reload modgate)"
        );
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} (is modgate running?)", path.display()))?;
    let pid: i32 = match text.trim().parse() {
        Ok(pid) if pid > 1 => pid,
        _ => bail!("{} does not hold a process id: {text:?}", path.display()),
    };
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if !name.is_empty() && name.trim() != "modgate" {
        bail!(
            "{} names pid {pid}, which is {:?}, not modgate (a stale pid file?): nothing was signalled",
            path.display(),
            name.trim()
        );
    }
    Ok(pid)
}

/// Sends SIGHUP to `pid`.
pub fn signal_reload(pid: i32) -> anyhow::Result<()> {
    // SAFETY: kill(2) with a plain pid and signal number touches no memory.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        let err = std::io::Error::last_os_error();
        bail!("cannot signal pid {pid}: {err} (a stale pid file?)");
    }
    Ok(())
}
