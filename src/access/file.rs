//! The access log file (`log.access_log`): appended to, and reopened when
//! asked (SIGHUP), so logrotate can move it away without `copytruncate`.
//! Lines reach it through tracing-appender's non-blocking worker, never
//! from a request's task.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The file, reopened at the next write after [`Reopen::reopen`].
pub struct Reopening {
    path: PathBuf,
    file: File,
    asked: Arc<AtomicBool>,
}

/// Asks a [`Reopening`] file to reopen its path.
#[derive(Clone, Debug)]
pub struct Reopen(Arc<AtomicBool>);

impl Reopen {
    pub fn reopen(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Reopening {
    pub fn open(path: &Path) -> io::Result<(Reopening, Reopen)> {
        let asked = Arc::new(AtomicBool::new(false));
        let file = Reopening {
            path: path.to_path_buf(),
            file: append(path)?,
            asked: asked.clone(),
        };
        Ok((file, Reopen(asked)))
    }
}

/// Opens `path` for appending; a new file is made 0640 whatever the umask
/// (a unit's `UMask=0077` would leave it 0600, unreadable by the log
/// shippers in modgate's group).
fn append(path: &Path) -> io::Result<File> {
    let created = OpenOptions::new()
        .create_new(true)
        .append(true)
        .mode(0o640)
        .open(path);
    match created {
        Ok(file) => {
            file.set_permissions(std::fs::Permissions::from_mode(0o640))?;
            Ok(file)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            OpenOptions::new().append(true).open(path)
        }
        Err(e) => Err(e),
    }
}

impl Write for Reopening {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.asked.swap(false, Ordering::Relaxed) {
            match append(&self.path) {
                Ok(file) => self.file = file,
                // This runs on the log's own worker: stderr is all there is.
                Err(e) => eprintln!(
                    "modgate: cannot reopen {}: {e}; still writing to the old file",
                    self.path.display()
                ),
            }
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopens_after_the_file_was_moved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let (mut file, handle) = Reopening::open(&path).unwrap();
        file.write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        file.write_all(b"two\n").unwrap();
        handle.reopen();
        file.write_all(b"three\n").unwrap();
        let old = std::fs::read_to_string(dir.path().join("access.log.1")).unwrap();
        assert_eq!(old, "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
    }
}
