//! [`Storage`] in a directory: the GOPROXY tree, every path resolved
//! without following a link ([`Tree`]). A create-only write is a complete,
//! fsynced temporary file under `.modgate/tmp` renamed into place with
//! `RENAME_NOREPLACE`; a compare-and-swap holds `.modgate/swap.lock`
//! (flock: other processes on the directory wait too) while it compares
//! and renames. A version is the file's inode, size and modification time.

use std::fs::File;
use std::io::{self, Seek, Write};
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;

use super::{
    BoxFuture, Listed, Object, Storage, StorageError, Swapped, Version, Written, checked,
    checked_prefix,
};
use crate::cache::nofollow::{Access, Tree};

const TMP: &str = ".modgate/tmp";
const SWAP_LOCK: &str = ".modgate/swap.lock";
/// Bytes per chunk read.
const CHUNK: usize = 64 * 1024;

static TEMPS: AtomicU64 = AtomicU64::new(0);

pub struct DirStorage {
    root: PathBuf,
    tree: Arc<Tree>,
}

impl DirStorage {
    /// Opens (creating) the directory `root`.
    pub fn open(root: &Path) -> io::Result<DirStorage> {
        std::fs::create_dir_all(root)?;
        let tree = Tree::open(root)?;
        tree.make_dirs(TMP)?;
        Ok(DirStorage {
            root: root.to_path_buf(),
            tree: Arc::new(tree),
        })
    }

    fn failed(&self, what: &'static str, name: &str, e: impl std::fmt::Display) -> StorageError {
        StorageError::Failed {
            place: self.describe(),
            what,
            name: name.to_string(),
            detail: e.to_string(),
        }
    }

    /// Runs blocking `work` on the tree, on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        name: &str,
        work: impl FnOnce(&Tree) -> io::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        let tree = self.tree.clone();
        match tokio::task::spawn_blocking(move || work(&tree)).await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(e)) => Err(self.failed(what, name, e)),
            Err(e) => Err(self.failed(what, name, e)),
        }
    }
}

/// The version of the open file `file`.
fn version_of(file: &File) -> io::Result<(Version, u64, std::time::SystemTime)> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a file"));
    }
    let stamp = format!(
        "{:x}-{}-{}.{}",
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    Ok((Version(stamp), meta.len(), meta.modified()?))
}

/// `file` opened, or `None` when there is none.
fn open_existing(tree: &Tree, name: &str) -> io::Result<Option<File>> {
    match tree.open_file(name, Access::Read) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A complete, fsynced temporary file holding `data`; its tree path.
fn write_temp(tree: &Tree, data: &[u8]) -> io::Result<String> {
    let temp = format!(
        "{TMP}/{}-{}.obj",
        std::process::id(),
        TEMPS.fetch_add(1, Ordering::Relaxed)
    );
    let _ = tree.remove(&temp);
    let written = tree.create_file(&temp, 0o644).and_then(|mut file| {
        file.write_all(data)?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = tree.remove(&temp);
        return Err(e);
    }
    Ok(temp)
}

fn put_new(tree: &Tree, name: &str, data: &[u8]) -> io::Result<Written> {
    let temp = write_temp(tree, data)?;
    publish(tree, &temp, name)
}

/// Copies the first `size` bytes of `file`, a piece at a time, then
/// publishes them as `name`.
fn put_file(tree: &Tree, name: &str, file: &File, size: u64) -> io::Result<Written> {
    let temp = write_temp(tree, &[])?;
    let copied = tree.open_file(&temp, Access::Write).and_then(|mut out| {
        let mut offset = 0;
        while offset < size {
            let length = usize::try_from((size - offset).min(super::PIECE as u64))
                .map_err(io::Error::other)?;
            out.write_all(&super::read_piece(file, offset, length)?)?;
            offset += length as u64;
        }
        out.sync_all()
    });
    if let Err(e) = copied {
        let _ = tree.remove(&temp);
        return Err(e);
    }
    publish(tree, &temp, name)
}

/// Renames the complete temporary file `temp` to `name` unless `name`
/// exists; `temp` is gone either way.
fn publish(tree: &Tree, temp: &str, name: &str) -> io::Result<Written> {
    let published = tree.rename_new(temp, name);
    let _ = tree.remove(temp);
    match published {
        Ok(()) => Ok(Written::Created),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Written::Existed),
        Err(e) => Err(e),
    }
}

fn swap(tree: &Tree, name: &str, expected: Option<&Version>, data: &[u8]) -> io::Result<Swapped> {
    let lock = match tree.create_file(SWAP_LOCK, 0o644) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            tree.open_file(SWAP_LOCK, Access::ReadWrite)?
        }
        other => other?,
    };
    lock.lock()?;
    let current = match open_existing(tree, name)? {
        Some(file) => Some(version_of(&file)?.0),
        None => None,
    };
    if current.as_ref() != expected {
        return Ok(Swapped::Conflict);
    }
    let temp = write_temp(tree, data)?;
    if let Err(e) = tree.rename(&temp, name) {
        let _ = tree.remove(&temp);
        return Err(e);
    }
    let file = tree.open_file(name, Access::Read)?;
    Ok(Swapped::Done(version_of(&file)?.0))
}

impl Storage for DirStorage {
    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }

    fn get<'a>(
        &'a self,
        name: &'a str,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, Result<Option<Object>, StorageError>> {
        Box::pin(async move {
            let owned = checked(name)?.to_string();
            let opened = self
                .blocking("read", name, move |tree| {
                    let Some(mut file) = open_existing(tree, &owned)? else {
                        return Ok(None);
                    };
                    let (version, size, modified) = version_of(&file)?;
                    let range = range.unwrap_or(0..size);
                    let (start, end) = (range.start.min(size), range.end.min(size));
                    file.seek(io::SeekFrom::Start(start))?;
                    let length = end.saturating_sub(start);
                    Ok(Some((file, length, version, size, modified)))
                })
                .await?;
            let Some((file, length, version, size, modified)) = opened else {
                return Ok(None);
            };
            Ok(Some(Object {
                size,
                version,
                modified,
                body: read_stream(file, length, self.describe(), name.to_string()),
            }))
        })
    }

    fn put_new<'a>(
        &'a self,
        name: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<Written, StorageError>> {
        Box::pin(async move {
            let owned = checked(name)?.to_string();
            self.blocking("write", name, move |tree| put_new(tree, &owned, &data))
                .await
        })
    }

    fn put_file<'a>(
        &'a self,
        name: &'a str,
        file: Arc<File>,
        size: u64,
    ) -> BoxFuture<'a, Result<Written, StorageError>> {
        Box::pin(async move {
            let owned = checked(name)?.to_string();
            self.blocking("write", name, move |tree| {
                put_file(tree, &owned, &file, size)
            })
            .await
        })
    }

    fn swap<'a>(
        &'a self,
        name: &'a str,
        expected: Option<&'a Version>,
        data: Bytes,
    ) -> BoxFuture<'a, Result<Swapped, StorageError>> {
        Box::pin(async move {
            let owned = checked(name)?.to_string();
            let expected = expected.cloned();
            self.blocking("swap", name, move |tree| {
                swap(tree, &owned, expected.as_ref(), &data)
            })
            .await
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let owned = checked(name)?.to_string();
            self.blocking("delete", name, move |tree| match tree.remove(&owned) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            })
            .await
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Listed>, StorageError>> {
        Box::pin(async move {
            let start = self.root.join(checked_prefix(prefix)?);
            let root = self.root.clone();
            let listed = tokio::task::spawn_blocking(move || walk(&root, &start)).await;
            listed.map_err(|e| self.failed("list", prefix, e))
        })
    }
}

/// The regular files under `start` (never through a link, `.modgate/`
/// left out), named relative to `root`.
fn walk(root: &Path, start: &Path) -> Vec<Listed> {
    walkdir::WalkDir::new(start)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".modgate")
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let name = e.path().strip_prefix(root).ok()?.to_str()?.to_string();
            let meta = e.metadata().ok()?;
            Some(Listed {
                name,
                size: meta.len(),
                modified: meta.modified().ok()?,
            })
        })
        .collect()
}

/// `length` bytes of `file` from where it stands, as a stream.
fn read_stream(file: File, length: u64, place: String, name: String) -> super::ByteStream {
    let file = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), length);
    let stream = tokio_util::io::ReaderStream::with_capacity(file, CHUNK);
    Box::pin(stream.map(move |chunk| {
        chunk.map_err(|e| StorageError::Failed {
            place: place.clone(),
            what: "read",
            name: name.clone(),
            detail: e.to_string(),
        })
    }))
}
