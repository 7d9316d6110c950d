//! Streams a file to one client while it may still be growing: a download
//! in flight (from its in-memory window of the newest bytes while the
//! client keeps up, from the file when it falls behind) or a complete
//! entry. Positional reads, so any number of clients share one open file.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use super::index::Pin;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

use crate::message::{Body, BoxError};

/// The most read for one chunk sent to a client.
const CHUNK: usize = 256 << 10;

/// A file that may not exist yet (a download's, made while its first
/// bytes already go out from memory).
pub type SharedFile = Arc<OnceLock<File>>;

/// A stored file, to stream.
pub fn ready(file: File) -> SharedFile {
    Arc::new(OnceLock::from(file))
}

/// Files up to this size are read whole when served.
const SMALL: u64 = 64 << 10;

/// The content of a small stored file, read at once on the async thread:
/// one pread from the page cache costs less than a trip to the blocking
/// pool (most module files, .mod and .info, are a few hundred bytes).
pub fn small(file: &File, size: u64) -> Option<Bytes> {
    if size > SMALL {
        return None;
    }
    let mut buffer = BytesMut::zeroed(size as usize);
    let n = file.read_at(&mut buffer, 0).ok()?;
    (n as u64 == size).then(|| buffer.freeze())
}

/// The newest bytes of a download, kept in memory for the clients that
/// keep up: batches with their offsets, the oldest dropped past a bound.
#[derive(Clone, Debug, Default)]
pub struct Window {
    batches: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

impl Window {
    /// Adds the pieces that start at `start`, keeping about `keep` bytes
    /// (always the newest piece).
    pub fn push(&mut self, start: u64, pieces: &[Bytes], keep: usize) {
        let mut at = start;
        for piece in pieces.iter().filter(|p| !p.is_empty()) {
            self.bytes += piece.len();
            self.batches.push_back((at, piece.clone()));
            at += piece.len() as u64;
        }
        while self.bytes > keep && self.batches.len() > 1 {
            if let Some((_, old)) = self.batches.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    /// All `size` bytes, when the window holds the whole file and it is
    /// small: what a client can be answered with at once.
    pub fn whole(&self, size: u64) -> Option<Bytes> {
        let starts_at_zero = self.batches.front().is_none_or(|(start, _)| *start == 0);
        if size > SMALL || self.bytes as u64 != size || !starts_at_zero {
            return None;
        }
        if let [(_, only)] = self.batches.as_slices().0 {
            return Some(only.clone());
        }
        let mut all = BytesMut::with_capacity(size as usize);
        for (_, piece) in &self.batches {
            all.extend_from_slice(piece);
        }
        Some(all.freeze())
    }

    /// The bytes from `offset` to the end of the batch that holds it, and
    /// before `open`.
    pub fn at(&self, offset: u64, open: u64) -> Option<Bytes> {
        if offset >= open {
            return None;
        }
        let at = self.batches.partition_point(|(start, _)| *start <= offset);
        let (start, data) = self.batches.get(at.checked_sub(1)?)?;
        let skip = (offset - start) as usize;
        let end = data.len().min((open - start) as usize);
        (skip < end).then(|| data.slice(skip..end))
    }
}

/// How far a download has come.
#[derive(Clone, Debug)]
pub enum Progress {
    /// `end` bytes have arrived, `written` of them are in the file; more
    /// are coming. `window` holds the newest ones (all of them, for a
    /// small file): a client whose next byte is there takes it from
    /// memory, before it is even on disk; one further behind reads the file.
    Growing {
        written: u64,
        window: Arc<Window>,
        end: u64,
        /// How many bytes clients may have: `end`, or less while the
        /// download awaits its check.
        open: u64,
        /// `end` is the whole size, checked against the mirror's
        /// Content-Length: a client that has it all is done.
        all: bool,
    },
    /// The file is complete at `size` bytes.
    Complete { size: u64 },
    /// The download failed after it started: the clients' responses end
    /// with this error, so nobody takes a short file for a whole one.
    Broken(Arc<str>),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Cut(String);

/// The body that streams `file` as `progress` allows; `pin` is held until
/// the client has it all or is gone. The client's connection polls it
/// directly: no task and no queue between the download and the client.
pub fn body(file: SharedFile, progress: watch::Receiver<Progress>, pin: Pin) -> Body {
    let reader = Reader {
        file,
        progress,
        _pin: pin,
        sent: 0,
        over: false,
    };
    let chunks = futures_util::stream::unfold(reader, |mut reader| async move {
        let chunk = reader.next().await?;
        Some((chunk.map(Frame::data), reader))
    });
    StreamBody::new(chunks).boxed()
}

/// Where one client is in a file that may still be growing.
struct Reader {
    file: SharedFile,
    progress: watch::Receiver<Progress>,
    _pin: Pin,
    sent: u64,
    /// Ended (all sent, or cut): nothing more comes.
    over: bool,
}

impl Reader {
    /// The next chunk: from the window while the client keeps up, else
    /// from the file; an error cuts the body, `None` ends it.
    async fn next(&mut self) -> Option<Result<Bytes, BoxError>> {
        if self.over {
            return None;
        }
        let chunk = self.chunk().await;
        if !matches!(chunk, Some(Ok(_))) {
            self.over = true;
        }
        chunk
    }

    async fn chunk(&mut self) -> Option<Result<Bytes, BoxError>> {
        loop {
            let now = self.progress.borrow_and_update().clone();
            if let Progress::Growing { window, open, .. } = &now
                && let Some(rest) = window.at(self.sent, *open)
            {
                self.sent += rest.len() as u64;
                return Some(Ok(rest));
            }
            let available = match &now {
                Progress::Growing { all: true, end, .. } if self.sent == *end => return None,
                Progress::Growing { written, open, .. } => *written.min(open),
                Progress::Complete { size } => *size,
                Progress::Broken(reason) => return Some(Err(cut(reason))),
            };
            if self.sent < available {
                return Some(
                    match read(&self.file, self.sent, available - self.sent).await {
                        Ok(chunk) if !chunk.is_empty() => {
                            self.sent += chunk.len() as u64;
                            Ok(chunk)
                        }
                        Ok(_) => Err(cut("cache file shorter than recorded")),
                        Err(e) => Err(e),
                    },
                );
            }
            if matches!(now, Progress::Complete { .. }) {
                return None;
            }
            if self.progress.changed().await.is_err() {
                return Some(Err(cut("download ended without an outcome")));
            }
        }
    }
}

/// The error that ends a client's body early.
fn cut(reason: &str) -> BoxError {
    Box::new(Cut(reason.to_string()))
}

/// Reads up to `CHUNK` (and at most `left`) bytes at `offset`.
async fn read(file: &SharedFile, offset: u64, left: u64) -> Result<Bytes, BoxError> {
    let file = file.clone();
    let len = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
    tokio::task::spawn_blocking(move || {
        let file = file
            .get()
            .ok_or_else(|| std::io::Error::other("no download file"))?;
        let mut buffer = BytesMut::zeroed(len);
        let n = file.read_at(&mut buffer, offset)?;
        buffer.truncate(n);
        Ok::<_, std::io::Error>(buffer.freeze())
    })
    .await
    .map_err(|e| Box::new(e) as BoxError)?
    .map_err(|e| Box::new(e) as BoxError)
}
