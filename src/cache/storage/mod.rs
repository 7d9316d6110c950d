//! Where cached files live, behind one interface: [`Storage`] has the few
//! operations the cache needs of a place to keep objects (read with a
//! range, create-only write of a complete object, compare-and-swap of a
//! small one, delete, list). Two places implement it: a directory
//! ([`dir`], the GOPROXY tree modgate has always kept) and S3-compatible
//! object storage ([`s3`], through `object_store`). Names are GOPROXY
//! paths (`example.com/m/@v/v1.0.0.zip`, `sumdb/sum.golang.org/latest`),
//! checked here once for both.

pub mod dir;
pub mod s3;

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// An object's bytes, as they arrive.
pub type ByteStream = Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, StorageError>> + Send>>;

/// Which version of an object was read: what a compare-and-swap names
/// (an ETag in a bucket; inode, size and time in a directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version(pub String);

/// An object being read.
pub struct Object {
    /// The whole object's size (whatever range was asked).
    pub size: u64,
    pub version: Version,
    pub modified: SystemTime,
    pub body: ByteStream,
}

/// What a create-only write found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Created,
    /// Another writer got there first: the object is theirs, untouched.
    Existed,
}

/// What a compare-and-swap did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Swapped {
    /// The object is now the new bytes, at this version.
    Done(Version),
    /// The object was not at the expected version (or, creating, existed).
    Conflict,
}

/// One object, as a listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub size: u64,
    pub modified: SystemTime,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0:?} is not a storage name (a relative GOPROXY path)")]
    BadName(String),
    /// The storage failed (unreachable, refused, broken): says which.
    #[error("{place}: {what} {name}: {detail}")]
    Failed {
        place: String,
        what: &'static str,
        name: String,
        detail: String,
    },
}

/// A place to keep cached objects. Every method is safe to call from many
/// tasks and many processes (or gateways) at once.
pub trait Storage: Send + Sync {
    /// The place, for logs and the status page (no credentials).
    fn describe(&self) -> String;

    /// The object `name`, or `None`; with `range`, only those bytes.
    fn get<'a>(
        &'a self,
        name: &'a str,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, Result<Option<Object>, StorageError>>;

    /// Writes `name` only if it does not exist; it appears only complete.
    fn put_new<'a>(
        &'a self,
        name: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<Written, StorageError>>;

    /// Writes `name` from the first `size` bytes of the local `file`, read
    /// a piece at a time (a zip may be 500 MiB), only if it does not
    /// exist; it appears only complete. Two writers racing may both
    /// write when the place cannot make a large write conditional (a
    /// bucket's multipart upload): callers write only verified,
    /// content-addressed files, whose copies are the same bytes.
    fn put_file<'a>(
        &'a self,
        name: &'a str,
        file: std::sync::Arc<std::fs::File>,
        size: u64,
    ) -> BoxFuture<'a, Result<Written, StorageError>>;

    /// Replaces `name` with `data` only if it is at `expected` (`None`:
    /// only if it does not exist). For small objects.
    fn swap<'a>(
        &'a self,
        name: &'a str,
        expected: Option<&'a Version>,
        data: Bytes,
    ) -> BoxFuture<'a, Result<Swapped, StorageError>>;

    /// Removes `name` (nothing there is not an error).
    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StorageError>>;

    /// Every object whose name starts with `prefix` (a `/`-ended
    /// directory, or empty for all), in no particular order.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Listed>, StorageError>>;
}

/// Bytes read from a local file per piece of a large write.
pub const PIECE: usize = 8 << 20;

/// `length` bytes of `file` from `offset` (its shared position untouched).
pub fn read_piece(file: &std::fs::File, offset: u64, length: usize) -> std::io::Result<Bytes> {
    let mut piece = vec![0u8; length];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut piece, offset)?;
    Ok(Bytes::from(piece))
}

/// `name` when it is a relative `/`-separated path with no empty, `.` or
/// `..` element (and not under modgate's own `.modgate/`).
pub fn checked(name: &str) -> Result<&str, StorageError> {
    let bad = name.is_empty()
        || name.starts_with(".modgate/")
        || name
            .split('/')
            .any(|e| e.is_empty() || e == "." || e == ".." || e.contains('\\') || e.contains('\0'));
    if bad {
        return Err(StorageError::BadName(name.to_string()));
    }
    Ok(name)
}

/// `prefix` when it is empty or a checked name ending in `/`.
pub fn checked_prefix(prefix: &str) -> Result<&str, StorageError> {
    match prefix.strip_suffix('/') {
        None if prefix.is_empty() => Ok(prefix),
        Some(dir) if checked(dir).is_ok() => Ok(prefix),
        _ => Err(StorageError::BadName(prefix.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_relative_goproxy_paths() {
        for good in ["a/@v/v1.0.0.zip", "sumdb/sum.golang.org/latest", "x"] {
            assert!(checked(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a/../b",
            "./a",
            ".modgate/lock",
            "a\\b",
        ] {
            assert!(checked(bad).is_err(), "{bad:?}");
        }
        assert!(checked_prefix("").is_ok());
        assert!(checked_prefix("sumdb/").is_ok());
        assert!(checked_prefix("sumdb").is_err());
        assert!(checked_prefix("../").is_err());
    }
}
