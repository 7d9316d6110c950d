//! One download from the mirrors into the cache, shared by every client
//! that asks for the same file meanwhile (coalescing). It runs as its own
//! task, so a client going away never stops it. Each batch of bytes goes to
//! the clients from memory at once, then into a temporary file that a
//! client who fell behind reads back; the entry is committed only when the
//! bytes are complete (and, where asked, checked).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, watch};

use super::key::Key;
use super::store::{Meta, Store, unix_secs};
use super::stream::{Progress, SharedFile, Window};
use super::{Fetched, Inner, Miss};
use crate::message::Body;

/// A check the complete bytes must pass before they are stored (a go.sum
/// hash); `Err` says what is wrong with them.
pub type Check = Box<dyn FnOnce(&Path) -> Result<(), String> + Send>;

/// Where a flight stands before its body.
#[derive(Clone, Debug)]
pub enum Takeoff {
    Fetching,
    /// A mirror answered: the body is coming.
    Started(Head),
    Missed(Miss),
}

/// What clients are told before the bytes.
#[derive(Clone, Debug)]
pub struct Head {
    pub content_type: Option<HeaderValue>,
    pub content_length: Option<u64>,
    pub mirror: Arc<str>,
}

pub struct Flight {
    pub takeoff: watch::Receiver<Takeoff>,
    pub progress: watch::Receiver<Progress>,
    /// The temporary file, once made.
    pub file: SharedFile,
}

/// The ends a flight reports through.
struct Report {
    takeoff: watch::Sender<Takeoff>,
    progress: watch::Sender<Progress>,
}

/// Starts downloading `key`; the caller has registered no other flight for it.
pub fn launch(inner: Arc<Inner>, key: Key, check: Option<Check>) -> Arc<Flight> {
    let (takeoff_tx, takeoff) = watch::channel(Takeoff::Fetching);
    let (progress_tx, progress) = watch::channel(Progress::Growing {
        written: 0,
        window: Arc::default(),
        end: 0,
        all: false,
    });
    let report = Report {
        takeoff: takeoff_tx,
        progress: progress_tx,
    };
    let file: SharedFile = Arc::new(OnceLock::new());
    let flight = Arc::new(Flight {
        takeoff,
        progress,
        file: file.clone(),
    });
    tokio::spawn(async move {
        if let Some(temp) = fly(&inner, &key, &file, report, check).await {
            let _ = std::fs::remove_file(&temp);
        }
        inner.landed(&key.file);
    });
    flight
}

/// Fetches, streams and stores `key`; returns the temporary file to remove.
async fn fly(
    inner: &Arc<Inner>,
    key: &Key,
    file: &SharedFile,
    report: Report,
    check: Option<Check>,
) -> Option<PathBuf> {
    let (response, mirror) = match inner.source.fetch(&key.upstream, &key.suffix).await {
        Fetched::Found { response, mirror } => (response, mirror),
        Fetched::Missed(miss) => {
            if let Miss::NotFound(reason) = &miss {
                inner.remember_not_found(&key.file, reason.clone());
            }
            let _ = report.takeoff.send(Takeoff::Missed(miss));
            return None;
        }
    };
    let head = head_of(&response, &mirror);
    let expected = head.content_length;
    let writing = Writing {
        store: &inner.store,
        file,
        progress: &report.progress,
        // Bytes that must pass a check are released only once stored, and
        // must be in a file to be checked.
        release: match (&check, expected) {
            (Some(_), _) => Release::Stored,
            (None, Some(length)) => Release::AtLength(length),
            (None, None) => Release::AtEnd,
        },
        hold_small: check.is_none(),
        limit: key.kind.limit(),
    };
    // Clients are told it started with the first bytes in hand, so a
    // small file goes out as one answer.
    let start = Start {
        takeoff: &report.takeoff,
        head: Some(head),
    };
    let copied = copy(
        response.into_body(),
        writing,
        start,
        inner.settings.read_timeout,
    )
    .await;
    let landing = Landing {
        inner,
        key,
        file,
        report: &report,
        mirror,
        expected,
    };
    land(landing, copied, check).await
}

/// What a finished copy is settled with.
struct Landing<'a> {
    inner: &'a Arc<Inner>,
    key: &'a Key,
    file: &'a SharedFile,
    report: &'a Report,
    mirror: String,
    expected: Option<u64>,
}

/// Settles a finished copy: stored (then complete), served but not stored
/// (only the write failed), or broken (the mirror failed, sent a wrong
/// length, or the check refused the bytes). Returns a file to remove.
async fn land(landing: Landing<'_>, copied: Copied, check: Option<Check>) -> Option<PathBuf> {
    let Landing {
        inner,
        key,
        file,
        report,
        mirror,
        expected,
    } = landing;
    let (arrived, downloaded) = match copied {
        Copied {
            written: Err(reason),
            arrived: Ok(_),
            downloaded,
        } => {
            // The clients keeping up have every byte (from memory); only
            // storing failed.
            tracing::warn!(file = %key.file, %mirror, %reason, "cache: served but not stored");
            return downloaded.temp();
        }
        Copied {
            arrived,
            downloaded,
            ..
        } => (arrived, downloaded),
    };
    let checked = match (arrived, &downloaded) {
        (Ok(size), _) if expected.is_some_and(|length| length != size) => Err(format!(
            "{mirror} sent {size} bytes of {}",
            expected.unwrap_or_default()
        )),
        (Ok(size), Downloaded::File(temp)) => run_check(check, temp).await.map(|()| size),
        (Ok(size), _) => Ok(size),
        (Err(reason), _) => Err(format!("{mirror}: {reason}")),
    };
    match checked {
        Ok(size) => {
            let meta = Meta {
                file: key.file.clone(),
                fetched: unix_secs(Some(SystemTime::now())),
                mirror,
                size,
                // Hashed after it is stored, when the CPU has time.
                sha256: String::new(),
            };
            let temp = inner.commit(key, file.clone(), downloaded, meta).await;
            let _ = report.progress.send(Progress::Complete { size });
            temp
        }
        Err(reason) => {
            tracing::warn!(file = %key.file, %mirror, %reason, "cache: download failed; nothing stored");
            let reason: Arc<str> = Arc::from(reason);
            // Failed before its first byte: the waiting clients hear why.
            report.takeoff.send_if_modified(|takeoff| match takeoff {
                Takeoff::Fetching => {
                    *takeoff = Takeoff::Missed(Miss::Failed(reason.clone()));
                    true
                }
                _ => false,
            });
            let _ = report.progress.send(Progress::Broken(reason));
            downloaded.temp()
        }
    }
}

/// Where a complete download's bytes are.
pub enum Downloaded {
    /// In this temporary file (`file` of the flight).
    File(PathBuf),
    /// Still in memory (small, and nothing to check): written, fsynced and
    /// renamed in one go when stored.
    Memory(Vec<Bytes>),
    /// Nowhere (the download failed before a file was made).
    Nothing,
}

impl Downloaded {
    pub fn temp(self) -> Option<PathBuf> {
        match self {
            Downloaded::File(path) => Some(path),
            _ => None,
        }
    }
}

fn head_of(response: &http::Response<Body>, mirror: &str) -> Head {
    let headers = response.headers();
    Head {
        content_type: headers.get(CONTENT_TYPE).cloned(),
        content_length: headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
        mirror: Arc::from(mirror),
    }
}

/// The most bytes gathered from ready frames into one write.
const BATCH: usize = 1 << 20;

/// A download up to this size is held in memory and written once, whole,
/// when complete; a larger one goes to its file as it arrives.
const IN_MEMORY: usize = 1 << 20;

/// The newest bytes kept in memory for clients: more than can wait to be
/// written (the write queue's batches), so a client that keeps up never
/// waits for the disk.
const WINDOW: usize = 8 << 20;

/// Where a download's bytes go.
struct Writing<'a> {
    store: &'a Arc<Store>,
    file: &'a SharedFile,
    progress: &'a watch::Sender<Progress>,
    release: Release,
    /// A small download may stay in memory until it is stored.
    hold_small: bool,
    /// More bytes than this end the download as failed.
    limit: u64,
}

/// Tells the waiting clients that the download started, once.
struct Start<'a> {
    takeoff: &'a watch::Sender<Takeoff>,
    head: Option<Head>,
}

impl Start<'_> {
    fn now(&mut self) {
        if let Some(head) = self.head.take() {
            let _ = self.takeoff.send(Takeoff::Started(head));
        }
    }
}

/// When clients may end their responses, before the bytes are stored.
#[derive(Clone, Copy)]
enum Release {
    /// Only once stored: the bytes must pass a check first.
    Stored,
    /// When this many bytes (the mirror's Content-Length) have arrived.
    AtLength(u64),
    /// When the mirror's body ends cleanly (no Content-Length).
    AtEnd,
}

impl Release {
    fn now(self, arrived: u64, ended: bool) -> bool {
        match self {
            Release::Stored => false,
            Release::AtLength(length) => arrived == length,
            Release::AtEnd => ended,
        }
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
struct Copied {
    arrived: Result<u64, String>,
    written: Result<u64, String>,
    downloaded: Downloaded,
}

/// Writes the body into the file, telling readers how far it is. Reading
/// from the mirror and writing overlap: batches pass between them through
/// a short queue.
async fn copy(
    body: Body,
    writing: Writing<'_>,
    start: Start<'_>,
    read_timeout: Duration,
) -> Copied {
    // One batch queued while one is written; the rest waits as one backlog.
    let (tx, rx) = mpsc::channel(1);
    let ends = Ends {
        release: writing.release,
        limit: writing.limit,
        read_timeout,
    };
    let (arrived, (written, downloaded)) = tokio::join!(
        read_batches(body, tx, writing.progress, ends, start),
        write_batches(rx, writing)
    );
    Copied {
        arrived,
        written,
        downloaded,
    }
}

/// Hands the body to the clients (the window) and to the writer, in
/// batches of the frames that are ready together (never copied: a frame
/// is the buffer the mirror's bytes were read into).
async fn read_batches(
    mut body: Body,
    tx: mpsc::Sender<Vec<Bytes>>,
    progress: &watch::Sender<Progress>,
    ends: Ends,
    mut start: Start<'_>,
) -> Result<u64, String> {
    let Ends {
        release,
        limit,
        read_timeout,
    } = ends;
    let mut writer = Some(tx);
    // Bytes the writer has not taken yet (it was busy).
    let mut behind: Vec<Bytes> = Vec::new();
    let mut end = 0u64;
    loop {
        let frame = tokio::time::timeout(read_timeout, body.frame())
            .await
            .map_err(|_| format!("no bytes for {read_timeout:?}"))?;
        let Some(frame) = frame else {
            hand_to_writer(&mut writer, &mut behind, true).await;
            let done = release.now(end, true);
            progress.send_if_modified(|now| match now {
                Progress::Growing { all, .. } if *all != done => {
                    *all = done;
                    true
                }
                _ => false,
            });
            start.now();
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
        if end > limit {
            return Err(format!(
                "more than {limit} bytes, more than the go command accepts"
            ));
        }
        publish(progress, first, &batch, release.now(end, ended));
        start.now();
        behind.extend(batch);
        hand_to_writer(&mut writer, &mut behind, ended).await;
        if ended {
            return Ok(end);
        }
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

/// Puts `batch` (starting at `start`) in the window clients read from.
fn publish(progress: &watch::Sender<Progress>, start: u64, batch: &[Bytes], done: bool) {
    let end = start + batch.iter().map(|d| d.len() as u64).sum::<u64>();
    progress.send_modify(|now| {
        if let Progress::Growing {
            window,
            end: arrived,
            all,
            ..
        } = now
        {
            let mut newer = Window::clone(window);
            newer.push(start, batch, WINDOW);
            *window = Arc::new(newer);
            *arrived = end;
            *all = done;
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
/// on disk. A small download is held: written once, whole, at the end, or
/// (`hold_small`) handed on in memory. Returns the size and where it is.
async fn write_batches(
    mut rx: mpsc::Receiver<Vec<Bytes>>,
    writing: Writing<'_>,
) -> (Result<u64, String>, Downloaded) {
    let mut held: Vec<Bytes> = Vec::new();
    let mut held_bytes = 0usize;
    let mut temp = None;
    let mut written = 0u64;
    while let Some(batch) = rx.recv().await {
        held_bytes += batch.iter().map(Bytes::len).sum::<usize>();
        held.extend(batch);
        if temp.is_none() && held_bytes <= IN_MEMORY {
            continue;
        }
        let pending = std::mem::take(&mut held);
        held_bytes = 0;
        match write(&writing, &mut temp, pending, written).await {
            Ok(length) => written += length,
            Err(e) => return (Err(e), in_file(temp)),
        }
        writing.progress.send_modify(|now| {
            if let Progress::Growing { written: w, .. } = now {
                *w = written;
            }
        });
    }
    if temp.is_none() {
        if writing.hold_small {
            return (Ok(held_bytes_of(&held)), Downloaded::Memory(held));
        }
        match write(&writing, &mut temp, held, 0).await {
            Ok(length) => written = length,
            Err(e) => return (Err(e), in_file(temp)),
        }
    }
    (Ok(written), in_file(temp))
}

fn in_file(temp: Option<PathBuf>) -> Downloaded {
    temp.map_or(Downloaded::Nothing, Downloaded::File)
}

fn held_bytes_of(pieces: &[Bytes]) -> u64 {
    pieces.iter().map(|p| p.len() as u64).sum()
}

/// Writes `pieces` from `offset` on, off the async threads, making the
/// temporary file first if there is none yet; returns how many bytes.
async fn write(
    writing: &Writing<'_>,
    temp: &mut Option<PathBuf>,
    pieces: Vec<Bytes>,
    offset: u64,
) -> Result<u64, String> {
    let (store, file, make) = (writing.store.clone(), writing.file.clone(), temp.is_none());
    let made = tokio::task::spawn_blocking(move || {
        let mut path = None;
        if make {
            let (handle, made) = store.temp()?;
            let _ = file.set(handle);
            path = Some(made);
        }
        let handle = file
            .get()
            .ok_or_else(|| std::io::Error::other("no download file"))?;
        let mut at = offset;
        for piece in &pieces {
            handle.write_all_at(piece, at)?;
            at += piece.len() as u64;
        }
        Ok::<_, std::io::Error>((path, at - offset))
    })
    .await
    .map_err(|e| format!("cache write: {e}"))?
    .map_err(|e| format!("cache write: {e}"))?;
    let (made, length) = made;
    if made.is_some() {
        *temp = made;
    }
    Ok(length)
}

async fn run_check(check: Option<Check>, temp: &Path) -> Result<(), String> {
    let Some(check) = check else {
        return Ok(());
    };
    let temp: PathBuf = temp.to_path_buf();
    tokio::task::spawn_blocking(move || check(&temp))
        .await
        .map_err(|e| e.to_string())?
}
