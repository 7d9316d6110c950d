//! A flight's copy from the mirror: each batch of frames goes to the
//! clients' window at once and, through a short queue, to the disk.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::{mpsc, watch};

use super::flight::{Downloaded, Head, Takeoff, Tap};
use super::store::Store;
use super::stream::{Progress, SharedFile, Window};
use crate::message::Body;

/// The most bytes gathered from ready frames into one write.
const BATCH: usize = 1 << 20;

/// A download up to this size is held in memory and written once, whole,
/// when complete; a larger one goes to its file as it arrives.
const IN_MEMORY: usize = 1 << 20;

/// Batches (each at most `BATCH`) queued for the tap; with more, the
/// reader waits: the mirror is read no faster than the tap can take it,
/// and a download holds a few MiB for it at the most.
const TAP_QUEUE: usize = 4;

/// Up to this many bytes are shown to the tap on the async thread: less
/// work than a trip to the blocking pool (a go.mod, a small zip).
const TAP_HERE: usize = 64 << 10;

/// The slowest a mirror may send, measured over each `mirror_timeout`: a
/// mirror dribbling a byte a second never goes silent long enough for the
/// read timeout, and would hold every client of the file for days.
pub const MIN_RATE: u64 = 1024;

/// The newest bytes kept in memory for clients: more than can wait to be
/// written (the write queue's batches), so a client that keeps up never
/// waits for the disk.
const WINDOW: usize = 8 << 20;

/// Where a download's bytes go.
pub struct Writing<'a> {
    pub store: &'a Arc<Store>,
    /// Counts the temporary file's bytes toward `cache.max_size`.
    pub index: &'a Arc<super::index::Index>,
    pub file: &'a SharedFile,
    /// The flight's temporary file, when an earlier attempt made it (its
    /// bytes are overwritten).
    pub temp: Option<PathBuf>,
    pub progress: &'a watch::Sender<Progress>,
    pub release: Release,
    /// More bytes than this end the download as failed.
    pub limit: u64,
}

/// Tells the waiting clients that the download started, once.
pub struct Start<'a> {
    pub takeoff: &'a watch::Sender<Takeoff>,
    pub head: Option<Head>,
}

impl Start<'_> {
    /// Whether the clients were told the download started: then they may
    /// have bytes of it.
    pub fn told(&self) -> bool {
        self.head.is_none()
    }

    pub fn now(&mut self) {
        if let Some(head) = self.head.take() {
            let _ = self.takeoff.send(Takeoff::Started(head));
        }
    }
}

/// How much of a download clients may have before it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// All of it when this many bytes (the mirror's Content-Length) have arrived.
    AtLength(u64),
    /// All of it when the mirror's body ends cleanly (no Content-Length).
    AtEnd,
    /// The bytes must pass a check first: until then clients may have all
    /// but the last `hold` bytes (`None`: nothing, not even the answer's head).
    Checked { hold: Option<u64> },
}

impl Release {
    /// How many of the `arrived` bytes clients may have, and whether that
    /// is the whole file.
    pub fn open(self, arrived: u64, ended: bool) -> (u64, bool) {
        match self {
            Release::AtLength(length) => (arrived, arrived == length),
            Release::AtEnd => (arrived, ended),
            Release::Checked { hold: Some(hold) } => (arrived.saturating_sub(hold), false),
            Release::Checked { hold: None } => (0, false),
        }
    }

    /// Whether the waiting clients hear of the download with its first bytes
    /// (else only once it is checked).
    fn starts_early(self) -> bool {
        self != Release::Checked { hold: None }
    }
}

/// When the reading ends: released early, cut as too large, or timed out.
struct Ends {
    release: Release,
    limit: u64,
    read_timeout: Duration,
}

/// How a copy went: what arrived from the mirror, what was written, and
/// where the bytes are.
pub struct Copied {
    pub arrived: Result<u64, String>,
    pub written: Result<u64, String>,
    pub downloaded: Downloaded,
}

/// Writes the body into the file, telling readers how far it is. Reading
/// from the mirror and writing overlap: batches pass between them through
/// a short queue. `tap`, if any, sees the bytes in order beside the writer.
pub async fn copy(
    body: Body,
    writing: Writing<'_>,
    tap: Option<Tap>,
    start: &mut Start<'_>,
    read_timeout: Duration,
) -> Copied {
    // One batch queued while one is written; the rest waits as one backlog.
    let (tx, rx) = mpsc::channel(1);
    let ends = Ends {
        release: writing.release,
        limit: writing.limit,
        read_timeout,
    };
    let (tap, tapped) = match tap {
        Some(tap) => {
            let (tx, rx) = mpsc::channel(TAP_QUEUE);
            (Some(tx), Some((rx, tap)))
        }
        None => (None, None),
    };
    let outlets = Outlets {
        writer: Some(tx),
        tap,
    };
    let (arrived, (written, downloaded), ()) = tokio::join!(
        read_batches(body, outlets, writing.progress, ends, start),
        write_batches(rx, writing),
        run_tap(tapped)
    );
    Copied {
        arrived,
        written,
        downloaded,
    }
}

/// Where the reader hands each batch besides the clients' window.
struct Outlets {
    writer: Option<mpsc::Sender<Vec<Bytes>>>,
    tap: Option<mpsc::Sender<Vec<Bytes>>>,
}

/// Hands the body to the clients (the window), the writer and the tap, in
/// batches of the frames that are ready together (never copied: a frame
/// is the buffer the mirror's bytes were read into).
async fn read_batches(
    mut body: Body,
    outlets: Outlets,
    progress: &watch::Sender<Progress>,
    ends: Ends,
    start: &mut Start<'_>,
) -> Result<u64, String> {
    let Ends {
        release,
        limit,
        read_timeout,
    } = ends;
    let Outlets {
        mut writer,
        mut tap,
    } = outlets;
    // Bytes the writer has not taken yet (it was busy).
    let mut behind: Vec<Bytes> = Vec::new();
    let mut end = 0u64;
    let mut pace = Pace::new(read_timeout);
    loop {
        let frame = tokio::time::timeout(read_timeout, body.frame())
            .await
            .map_err(|_| format!("no bytes for {read_timeout:?}"))?;
        let Some(frame) = frame else {
            hand_to_writer(&mut writer, &mut behind, true).await;
            let (open, all) = release.open(end, true);
            progress.send_if_modified(|now| match now {
                Progress::Growing {
                    open: o, all: a, ..
                } if (*o, *a) != (open, all) => {
                    (*o, *a) = (open, all);
                    true
                }
                _ => false,
            });
            if release.starts_early() {
                start.now();
            }
            return Ok(end);
        };
        let mut batch: Vec<Bytes> = frame
            .map_err(|e| e.to_string())?
            .into_data()
            .into_iter()
            .collect();
        let ended = gather_ready(&mut body, &mut batch).await?;
        let first = end;
        end += batch.iter().map(|d| d.len() as u64).sum::<u64>();
        pace.arrived(end - first)?;
        if end > limit {
            return Err(format!(
                "more than {limit} bytes, more than a file of its kind may have"
            ));
        }
        publish(progress, first, &batch, release.open(end, ended));
        if release.starts_early() {
            start.now();
        }
        if let Some(sender) = &tap
            && sender.send(batch.clone()).await.is_err()
        {
            tap = None;
        }
        behind.extend(batch);
        hand_to_writer(&mut writer, &mut behind, ended).await;
        if ended {
            return Ok(end);
        }
    }
}

/// The mirror's rate over each window of `mirror_timeout`.
struct Pace {
    window: Duration,
    since: tokio::time::Instant,
    bytes: u64,
}

impl Pace {
    fn new(window: Duration) -> Pace {
        Pace {
            window,
            since: tokio::time::Instant::now(),
            bytes: 0,
        }
    }

    /// Counts `bytes` just arrived; an error once a whole window passed
    /// below [`MIN_RATE`].
    fn arrived(&mut self, bytes: u64) -> Result<(), String> {
        self.bytes += bytes;
        let elapsed = self.since.elapsed();
        if elapsed < self.window {
            return Ok(());
        }
        let floor = MIN_RATE.saturating_mul(elapsed.as_secs().max(1));
        if self.bytes < floor {
            let (bytes, window) = (self.bytes, self.window);
            return Err(format!(
                "slower than {MIN_RATE} bytes/s: {bytes} bytes in {elapsed:.1?} (mirror_timeout {window:?})"
            ));
        }
        (self.since, self.bytes) = (tokio::time::Instant::now(), 0);
        Ok(())
    }
}

/// Hands the bytes not yet queued for the disk to the writer. The
/// clients read from the window, so the mirror is read on while the disk
/// is busy; only a backlog as large as the window (or the end) waits for
/// the writer. A failed write (a full disk) stops storing, not serving.
async fn hand_to_writer(
    writer: &mut Option<mpsc::Sender<Vec<Bytes>>>,
    behind: &mut Vec<Bytes>,
    ended: bool,
) {
    let Some(sender) = writer else {
        behind.clear();
        return;
    };
    let backlog: usize = behind.iter().map(Bytes::len).sum();
    let sent = if ended || backlog >= WINDOW {
        sender.send(std::mem::take(behind)).await.is_ok()
    } else {
        match sender.try_send(std::mem::take(behind)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(back)) => {
                *behind = back;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    };
    if !sent {
        *writer = None;
        behind.clear();
    }
}

/// Shows each batch to the tap in order, off the async threads, beside
/// the writer (a zip is hashed while it is written, not after).
async fn run_tap(tapped: Option<(mpsc::Receiver<Vec<Bytes>>, Tap)>) {
    let Some((mut rx, mut tap)) = tapped else {
        return;
    };
    while let Some(batch) = rx.recv().await {
        // Whatever else is queued goes along in the same trip.
        let mut batches = vec![batch];
        while let Ok(more) = rx.try_recv() {
            batches.push(more);
        }
        let bytes: usize = batches.iter().flatten().map(Bytes::len).sum();
        if bytes <= TAP_HERE {
            batches.iter().flatten().for_each(|piece| tap(piece));
            continue;
        }
        let ran = tokio::task::spawn_blocking(move || {
            batches.iter().flatten().for_each(|piece| tap(piece));
            tap
        })
        .await;
        match ran {
            Ok(back) => tap = back,
            // The tap failed: what it was for is done another way.
            Err(_) => return,
        }
    }
}

/// Puts `batch` (starting at `start`) in the window clients read from.
fn publish(progress: &watch::Sender<Progress>, start: u64, batch: &[Bytes], open: (u64, bool)) {
    let end = start + batch.iter().map(|d| d.len() as u64).sum::<u64>();
    progress.send_modify(|now| {
        if let Progress::Growing {
            window,
            end: arrived,
            open: may,
            all,
            ..
        } = now
        {
            let mut newer = Window::clone(window);
            newer.push(start, batch, WINDOW);
            *window = Arc::new(newer);
            *arrived = end;
            (*may, *all) = open;
        }
    });
}

/// Adds the frames that are ready now to `batch` (never waiting to fill
/// it), up to `BATCH` bytes; `true` when the body ended.
async fn gather_ready(body: &mut Body, batch: &mut Vec<Bytes>) -> Result<bool, String> {
    while batch.iter().map(Bytes::len).sum::<usize>() < BATCH {
        let ready = std::future::poll_fn(|cx| {
            Poll::Ready(http_body::Body::poll_frame(Pin::new(&mut *body), cx))
        })
        .await;
        match ready {
            Poll::Ready(Some(frame)) => batch.extend(frame.map_err(|e| e.to_string())?.into_data()),
            Poll::Ready(None) => return Ok(true),
            Poll::Pending => return Ok(false),
        }
    }
    Ok(false)
}

/// Writes the batches off the async threads, telling readers how much is
/// on disk. A small download is held in memory and handed on as it is
/// (written once, whole, when stored). Returns the size and where it is.
async fn write_batches(
    mut rx: mpsc::Receiver<Vec<Bytes>>,
    writing: Writing<'_>,
) -> (Result<u64, String>, Downloaded) {
    let mut held: Vec<Bytes> = Vec::new();
    let mut temp = writing.temp.clone();
    let mut written = 0u64;
    // Set once the disk refused a write: the rest is held in memory.
    let mut refused: Option<String> = None;
    while let Some(batch) = rx.recv().await {
        held.extend(batch);
        let held_bytes = held_bytes_of(&held);
        if let Some(reason) = &refused {
            if held_bytes > WINDOW as u64 {
                let reason = format!("{reason}; too large to serve from memory");
                return (Err(reason), Downloaded::Nothing);
            }
            continue;
        }
        if temp.is_none() && held_bytes <= IN_MEMORY as u64 {
            continue;
        }
        let pending = std::mem::take(&mut held);
        match write(&writing, &mut temp, &pending, written).await {
            Ok(length) => {
                written += length;
                writing.index.temp_grew(length);
            }
            Err(reason) => match unwritten(&writing, temp.take(), written).await {
                Some(mut read_back) => {
                    read_back.extend(pending);
                    held = read_back;
                    refused = Some(reason);
                    continue;
                }
                None => return (Err(reason), Downloaded::Nothing),
            },
        }
        writing.progress.send_modify(|now| {
            if let Progress::Growing { written: w, .. } = now {
                *w = written;
            }
        });
    }
    match (refused, temp) {
        (Some(reason), _) => (Ok(held_bytes_of(&held)), Downloaded::Unstored(held, reason)),
        (None, None) => (Ok(held_bytes_of(&held)), Downloaded::Memory(held)),
        (None, Some(temp)) => (Ok(written), Downloaded::File(temp)),
    }
}

/// The disk refused a write (full): takes back the `written` bytes of the
/// temporary file and removes it, so the download goes on in memory.
/// `None` when even that fails.
async fn unwritten(
    writing: &Writing<'_>,
    temp: Option<PathBuf>,
    written: u64,
) -> Option<Vec<Bytes>> {
    let (file, index) = (writing.file.clone(), writing.index.clone());
    tokio::task::spawn_blocking(move || {
        let read = || {
            let mut back = vec![0u8; usize::try_from(written).ok()?];
            if written > 0 {
                file.get()?.read_exact_at(&mut back, 0).ok()?;
            }
            Some(vec![Bytes::from(back)])
        };
        let back = read();
        if let Some(temp) = temp {
            let size = std::fs::metadata(&temp).map_or(0, |m| m.len());
            if std::fs::remove_file(&temp).is_ok() {
                index.temp_gone(size);
            }
        }
        back
    })
    .await
    .ok()
    .flatten()
}

fn held_bytes_of(pieces: &[Bytes]) -> u64 {
    pieces.iter().map(|p| p.len() as u64).sum()
}

/// Writes `pieces` from `offset` on, off the async threads, making the
/// temporary file first if there is none yet; returns how many bytes. A
/// file made before the write failed is kept in `temp` all the same.
async fn write(
    writing: &Writing<'_>,
    temp: &mut Option<PathBuf>,
    pieces: &[Bytes],
    offset: u64,
) -> Result<u64, String> {
    let (store, file, make) = (writing.store.clone(), writing.file.clone(), temp.is_none());
    let pieces = pieces.to_vec();
    let (made, written) = tokio::task::spawn_blocking(move || {
        let mut made = None;
        if make && file.get().is_some() {
            // An earlier attempt's file was given up when the disk refused
            // it: this download stays in memory.
            let gone = std::io::Error::other("the disk refused this download's file before");
            return (None, Err(gone));
        }
        if make {
            match store.temp() {
                Ok((handle, path)) => {
                    let _ = file.set(handle);
                    made = Some(path);
                }
                Err(e) => return (None, Err(e)),
            }
        }
        let written = file
            .get()
            .ok_or_else(|| std::io::Error::other("no download file"))
            .and_then(|handle| {
                let mut at = offset;
                for piece in &pieces {
                    handle.write_all_at(piece, at)?;
                    at += piece.len() as u64;
                }
                Ok(at - offset)
            });
        (made, written)
    })
    .await
    .map_err(|e| format!("cache write: {e}"))?;
    if made.is_some() {
        *temp = made;
    }
    written.map_err(|e| format!("cache write: {e}"))
}
