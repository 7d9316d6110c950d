//! The cache directory on disk: a GOPROXY tree plus `.modgate/`: temporary
//! downloads, and `records`, an append-only log with one JSON line per
//! stored file (fetch time, mirror, size, sha256; the last line for a file
//! wins; compacted at start). An entry becomes visible only when complete:
//! written to `.modgate/tmp`, fsynced, then renamed into the tree; its
//! record follows (see `hasher`). That one fsync is what makes a crash safe: after it, the
//! rename either happened (a whole file) or not (a leftover, removed at
//! start). The log and the directories are not fsynced: a crash may lose a
//! record or an entry, never serve a bad one; each fsync and each extra
//! file costs a cold request time. A file's mtime is when it was fetched
//! (its age, for mutable files); its atime is set when it is served (least
//! recently used eviction), whatever the mount's atime options.
//! Blocking calls: run them on the blocking pool.

use std::collections::HashMap;
use std::fs::{self, File, FileTimes};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::key::{Ecosystems, Kind};
use super::nofollow::{Access, Tree};

const STATE_DIR: &str = ".modgate";
const RECORDS: &str = "records";

/// What modgate recorded about a stored file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub file: String,
    /// Seconds since the Unix epoch.
    pub fetched: u64,
    pub mirror: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// A stored file opened for serving.
pub struct Found {
    pub file: File,
    pub size: u64,
    /// Since it was fetched.
    pub age: Duration,
}

/// One file of the tree, as a scan finds it.
#[derive(Clone, Debug)]
pub struct Scanned {
    pub file: String,
    pub kind: Kind,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub last_used: u64,
}

pub struct Store {
    root: PathBuf,
    /// The directory, held open: every entry is reached through it and no
    /// symbolic link below it is ever followed.
    tree: Tree,
    /// The records log, opened for appending (`None`: opened read-only).
    records: Mutex<Option<File>>,
    /// `.modgate/lock`, locked while this process may write the directory:
    /// a second writer would corrupt the records log.
    _lock: Option<File>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating) the cache directory.
    /// Refused while another process has it open for writing (its pid is
    /// named).
    pub fn open(root: &Path) -> io::Result<Store> {
        fs::create_dir_all(root)?;
        let tree = Tree::open(root)?;
        let state = |what: &str, e: io::Error| {
            let fix = match e.kind() {
                io::ErrorKind::PermissionDenied => {
                    " (files here belong to another user: run modgate as the directory's owner, or chown -R it to the service's user)"
                }
                _ => "",
            };
            io::Error::new(e.kind(), format!("{STATE_DIR}/{what}: {e}{fix}"))
        };
        tree.make_dirs(&format!("{STATE_DIR}/tmp"))
            .map_err(|e| state("tmp", e))?;
        let lock = lock(&tree, root)?;
        let records = open_records(&tree).map_err(|e| state(RECORDS, e))?;
        Ok(Store {
            root: root.to_path_buf(),
            tree,
            records: Mutex::new(Some(records)),
            _lock: Some(lock),
        })
    }

    /// Opens the cache directory to read it (`cache stats`, `cache
    /// verify`), beside a running modgate: nothing is created or written.
    pub fn open_read_only(root: &Path) -> io::Result<Store> {
        Ok(Store {
            root: root.to_path_buf(),
            tree: Tree::open(root)?,
            records: Mutex::new(None),
            _lock: None,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn state(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.state().join("tmp")
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.root.join(file)
    }

    /// Opens a stored file; `None` when there is none.
    /// A symbolic link (there, or on the way) is an error, never followed.
    pub fn lookup(&self, file: &str) -> io::Result<Option<Found>> {
        let handle = match self.tree.open_file(file, Access::Read) {
            Ok(handle) => handle,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(linked(file, e)),
        };
        let metadata = handle.metadata()?;
        if !metadata.is_file() {
            return Ok(None);
        }
        let age = metadata
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        Ok(Some(Found {
            size: metadata.len(),
            file: handle,
            age,
        }))
    }

    /// Records that `file` was just served (its atime), for eviction.
    pub fn touch(&self, file: &str) {
        if let Ok(handle) = self.tree.open_file(file, Access::Write) {
            let _ = handle.set_times(FileTimes::new().set_accessed(SystemTime::now()));
        }
    }

    /// A new temporary file for a download, and its path.
    pub fn temp(&self) -> io::Result<(File, PathBuf)> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let name = format!(
            "{}-{}-{nanos}.part",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.tmp_dir().join(&name);
        let file = self
            .tree
            .create_file(&format!("{STATE_DIR}/tmp/{name}"), 0o644)?;
        Ok((file, path))
    }

    /// Makes the complete, fsynced download at `temp` the entry `file`,
    /// with its empty `companion` (a checksum database's `supported`,
    /// which `GOPROXY=file://<dir>` asks for first) beside it. (Its record
    /// is appended separately, by [`Store::record`].) Directories are
    /// made, and the file moved, without following a link.
    pub fn commit(&self, temp: &Path, file: &str, companion: Option<&str>) -> io::Result<()> {
        let name = temp
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::other("not a temporary file of this cache"))?;
        let from = format!("{STATE_DIR}/tmp/{name}");
        self.tree.rename(&from, file).map_err(|e| linked(file, e))?;
        if let Some(companion) = companion {
            match self.tree.create_file(companion, 0o644) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Appends `meta` to the records log.
    pub fn record(&self, meta: &Meta) -> io::Result<()> {
        let mut line = serde_json::to_vec(meta).map_err(io::Error::other)?;
        line.push(b'\n');
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_mut()
            .ok_or_else(|| io::Error::other("the cache was opened read-only"))?
            .write_all(&line)
    }

    /// Removes an entry (its record goes at the next compaction).
    pub fn remove(&self, file: &str) -> io::Result<()> {
        match self.tree.remove(file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The newest record of every file (lines a crash cut short are skipped).
    pub fn records(&self) -> HashMap<String, Meta> {
        let text = fs::read(self.state().join(RECORDS)).unwrap_or_default();
        let mut records = HashMap::new();
        for line in text.split(|b| *b == b'\n') {
            if let Ok(meta) = serde_json::from_slice::<Meta>(line) {
                records.insert(meta.file.clone(), meta);
            }
        }
        records
    }

    /// Rewrites the records log with the newest record of each file still
    /// in the tree. Appends wait meanwhile.
    pub fn compact(&self) -> io::Result<()> {
        let mut handle = self
            .records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut kept: Vec<Meta> = self
            .records()
            .into_values()
            .filter(|m| {
                self.path(&m.file)
                    .symlink_metadata()
                    .is_ok_and(|m| m.is_file())
            })
            .collect();
        kept.sort_by(|a, b| a.file.cmp(&b.file));
        let mut text = Vec::new();
        for meta in &kept {
            text.extend(serde_json::to_vec(meta).map_err(io::Error::other)?);
            text.push(b'\n');
        }
        let temp = format!("{STATE_DIR}/{RECORDS}.{}.new", std::process::id());
        let _ = self.tree.remove(&temp);
        self.tree.create_file(&temp, 0o644)?.write_all(&text)?;
        self.tree.rename(&temp, &format!("{STATE_DIR}/{RECORDS}"))?;
        *handle = Some(open_records(&self.tree)?);
        Ok(())
    }

    /// Every entry in the tree (files none of `ecosystems` owns are left
    /// alone and not listed).
    pub fn scan(&self, ecosystems: &Ecosystems) -> Vec<Scanned> {
        let walk = walkdir::WalkDir::new(&self.root)
            .into_iter()
            .filter_entry(|e| e.depth() != 1 || e.file_name() != STATE_DIR);
        walk.filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| {
                let relative = e.path().strip_prefix(&self.root).ok()?;
                let file = relative.to_str()?.replace(std::path::MAIN_SEPARATOR, "/");
                let key = ecosystems.key_of_file(&file)?;
                let metadata = e.metadata().ok()?;
                Some(Scanned {
                    file,
                    kind: key.kind,
                    size: metadata.len(),
                    last_used: unix_secs(metadata.accessed().ok()),
                })
            })
            .collect()
    }

    /// Every symbolic link in the tree (`.modgate/` included), as a path
    /// relative to the root: never served or followed, but damage to report.
    pub fn links(&self) -> Vec<String> {
        walkdir::WalkDir::new(&self.root)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.path_is_symlink() && e.depth() > 0)
            .filter_map(|e| {
                let relative = e.path().strip_prefix(&self.root).ok()?;
                Some(relative.to_str()?.replace(std::path::MAIN_SEPARATOR, "/"))
            })
            .collect()
    }

    /// Removes the downloads a killed process left. Returns how many.
    pub fn remove_leftovers(&self) -> usize {
        let mut removed = 0;
        for entry in fs::read_dir(self.tmp_dir()).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let owner = name.to_str().and_then(|n| n.split('-').next());
            if owner.is_none_or(|pid| !process_alive(pid)) && fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }
}

/// Takes `.modgate/lock` for this process and writes its pid there; when
/// another process holds it, an error naming that pid.
fn lock(tree: &Tree, root: &Path) -> io::Result<File> {
    let path = format!("{STATE_DIR}/lock");
    match tree.create_file(&path, 0o644) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        other => drop(other?),
    }
    let mut file = tree.open_file(&path, Access::ReadWrite)?;
    if let Err(fs::TryLockError::WouldBlock) = file.try_lock() {
        let mut pid = String::new();
        let _ = io::Read::read_to_string(&mut file, &mut pid);
        let pid = pid.trim();
        return Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!(
                "{} is in use by another modgate (pid {pid}): one process writes a cache directory at a time (cache stats and cache verify may run beside it)",
                root.display()
            ),
        ));
    }
    file.set_len(0)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
    Ok(file)
}

/// The records log, opened for appending (created if missing; a link in
/// its place is refused).
fn open_records(tree: &Tree) -> io::Result<File> {
    let path = format!("{STATE_DIR}/{RECORDS}");
    match tree.create_file(&path, 0o644) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        other => drop(other?),
    }
    tree.open_append(&path)
}

/// Says which entry a refused link was met on.
fn linked(file: &str, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        io::Error::other(format!(
            "{file}: a symbolic link in the cache directory (never followed; remove it)"
        ))
    } else {
        e
    }
}

/// The SHA-256 of a file's content, in lower-case hex.
pub fn sha256_of(path: &Path) -> io::Result<String> {
    sha256_read(File::open(path)?)
}

/// The SHA-256 of everything `reader` gives, in lower-case hex.
pub fn sha256_read(reader: impl io::Read) -> io::Result<String> {
    Ok(crate::sha256::hex(&crate::sha256::stream(reader)?))
}

pub fn unix_secs(time: Option<SystemTime>) -> u64 {
    time.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Whether the process that named a temporary file still runs. Where that
/// cannot be known, it is assumed to run (the file stays).
fn process_alive(pid: &str) -> bool {
    if pid.parse::<u32>().is_err() {
        return false;
    }
    if pid == std::process::id().to_string() {
        return false;
    }
    let proc_root = Path::new("/proc");
    !proc_root.join("self").exists() || proc_root.join(pid).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(file: &str, size: u64) -> Meta {
        Meta {
            file: file.into(),
            fetched: 1,
            mirror: "m".into(),
            size,
            sha256: "00".into(),
        }
    }

    #[test]
    fn an_entry_is_visible_only_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let file = "example.com/m/@v/v1.0.0.zip";
        let (mut temp, temp_path) = store.temp().unwrap();
        temp.write_all(b"zip").unwrap();
        assert!(store.lookup(file).unwrap().is_none());
        let ecosystems = super::super::key::testing::ecosystems();
        assert_eq!(store.scan(&ecosystems).len(), 0);
        store.commit(&temp_path, file, None).unwrap();
        store.record(&meta(file, 3)).unwrap();
        assert_eq!(store.lookup(file).unwrap().unwrap().size, 3);
        assert_eq!(store.records().get(file), Some(&meta(file, 3)));
        let scanned = store.scan(&ecosystems);
        assert_eq!(scanned.len(), 1);
        assert_eq!(scanned[0].kind, super::super::key::testing::ARCHIVE);
        store.remove(file).unwrap();
        assert!(store.lookup(file).unwrap().is_none());
        store.compact().unwrap();
        assert_eq!(store.records().get(file), None);
    }

    #[test]
    fn leftovers_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let dead = store.tmp_dir().join("999999999-0-0.part");
        fs::write(&dead, b"partial").unwrap();
        assert_eq!(store.remove_leftovers(), 1);
        assert!(!dead.exists());
    }

    #[test]
    fn a_companion_is_made_beside_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (_, temp_path) = store.temp().unwrap();
        let companion = Some("sumdb/sum.example/supported");
        store
            .commit(&temp_path, "sumdb/sum.example/latest", companion)
            .unwrap();
        assert!(dir.path().join("sumdb/sum.example/supported").exists());
    }
}
