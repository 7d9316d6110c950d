//! The cache directory on disk: a GOPROXY tree plus `.modgate/` (temporary
//! downloads and one metadata file per entry). An entry becomes visible only
//! when complete: written to `.modgate/tmp`, fsynced, its metadata put in
//! place, then renamed into the tree. A file's mtime is when it was fetched
//! (its age, for mutable files); its atime is set when it is served (least
//! recently used eviction), whatever the mount's atime options.
//! Blocking calls: run them on the blocking pool.

use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::key::{Kind, key_of_file};

const STATE_DIR: &str = ".modgate";

/// What modgate recorded about a stored file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
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
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating) the cache directory.
    pub fn open(root: &Path) -> io::Result<Store> {
        let store = Store {
            root: root.to_path_buf(),
        };
        fs::create_dir_all(store.tmp_dir())?;
        fs::create_dir_all(store.state().join("meta"))?;
        Ok(store)
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

    fn meta_path(&self, file: &str) -> PathBuf {
        self.state().join("meta").join(format!("{file}.json"))
    }

    /// Opens a stored file; `None` when there is none.
    pub fn lookup(&self, file: &str) -> io::Result<Option<Found>> {
        let handle = match File::open(self.path(file)) {
            Ok(handle) => handle,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
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
        if let Ok(handle) = File::options().write(true).open(self.path(file)) {
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
        let path = self.tmp_dir().join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((file, path))
    }

    /// Makes the complete, fsynced download at `temp` the entry `file`.
    pub fn commit(&self, temp: &Path, file: &str, meta: &Meta) -> io::Result<()> {
        let meta_path = self.meta_path(file);
        write_atomically(&meta_path, &serde_json::to_vec(meta).unwrap_or_default())?;
        let target = self.path(file);
        let parent = target.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent)?;
        fs::rename(temp, &target)?;
        sync_dir(parent);
        if let Some(db_dir) = sumdb_dir(file) {
            // `GOPROXY=file://<dir>` asks for this before using the database.
            let supported = self.root.join(db_dir).join("supported");
            if !supported.exists() {
                write_atomically(&supported, b"")?;
            }
        }
        Ok(())
    }

    /// Removes an entry and its metadata.
    pub fn remove(&self, file: &str) -> io::Result<()> {
        match fs::remove_file(self.path(file)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let _ = fs::remove_file(self.meta_path(file));
        Ok(())
    }

    pub fn meta(&self, file: &str) -> Option<Meta> {
        let bytes = fs::read(self.meta_path(file)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every entry in the tree (files that are not module or checksum
    /// database requests are left alone and not listed).
    pub fn scan(&self) -> Vec<Scanned> {
        let walk = walkdir::WalkDir::new(&self.root)
            .into_iter()
            .filter_entry(|e| e.depth() != 1 || e.file_name() != STATE_DIR);
        walk.filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| {
                let relative = e.path().strip_prefix(&self.root).ok()?;
                let file = relative.to_str()?.replace(std::path::MAIN_SEPARATOR, "/");
                let key = key_of_file(&file)?;
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

    /// Removes what a killed process left: downloads of processes that are
    /// gone, and metadata whose file is not there. Returns how many.
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
        let meta_root = self.state().join("meta");
        for entry in walkdir::WalkDir::new(&meta_root).into_iter().flatten() {
            let Some(file) = entry
                .path()
                .strip_prefix(&meta_root)
                .ok()
                .and_then(|p| p.to_str())
                .and_then(|p| p.strip_suffix(".json"))
            else {
                continue;
            };
            if entry.file_type().is_file()
                && !self.path(file).exists()
                && fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }
}

/// `sumdb/<name>` for a checksum database file.
fn sumdb_dir(file: &str) -> Option<String> {
    let rest = file.strip_prefix("sumdb/")?;
    let (db, _) = rest.split_once('/')?;
    Some(format!("sumdb/{db}"))
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

/// Writes `path` through a temporary file beside it, fsynced and renamed.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    let temp = parent.join(format!(
        ".{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temp, path)?;
    sync_dir(parent);
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64) -> Meta {
        Meta {
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
        assert_eq!(store.scan().len(), 0);
        store.commit(&temp_path, file, &meta(3)).unwrap();
        assert_eq!(store.lookup(file).unwrap().unwrap().size, 3);
        assert_eq!(store.meta(file), Some(meta(3)));
        let scanned = store.scan();
        assert_eq!(scanned.len(), 1);
        assert_eq!(scanned[0].kind, Kind::Zip);
        store.remove(file).unwrap();
        assert!(store.lookup(file).unwrap().is_none());
        assert_eq!(store.meta(file), None);
    }

    #[test]
    fn leftovers_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let dead = store.tmp_dir().join("999999999-0-0.part");
        fs::write(&dead, b"partial").unwrap();
        let orphan = store.meta_path("example.com/m/@v/v1.0.0.mod");
        fs::create_dir_all(orphan.parent().unwrap()).unwrap();
        fs::write(&orphan, b"{}").unwrap();
        assert_eq!(store.remove_leftovers(), 2);
        assert!(!dead.exists() && !orphan.exists());
    }

    #[test]
    fn sumdb_entries_mark_the_database_supported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (_, temp_path) = store.temp().unwrap();
        store
            .commit(&temp_path, "sumdb/sum.example/latest", &meta(0))
            .unwrap();
        assert!(dir.path().join("sumdb/sum.example/supported").exists());
    }
}
