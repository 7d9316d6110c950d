//! One download from the mirrors into the cache, shared by every client
//! that asks for the same file meanwhile (coalescing). It runs as its own
//! task, so a client going away never stops it. Each batch of bytes goes to
//! the clients from memory at once, then into a temporary file that a
//! client who fell behind reads back; the entry is committed only when the
//! bytes are complete (and, where asked, checked).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use http::HeaderValue;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use tokio::sync::watch;

use super::copy::{Copied, Release, Start, Writing, copy};
use super::key::Key;
use super::store::{Meta, unix_secs};
use super::stream::{Progress, SharedFile};
use super::{Blame, Fetched, Inner, Miss};
use crate::message::Body;

/// A check the complete bytes must pass before any client has them all
/// and before they are stored (a go.sum hash, a signed tree head).
pub struct Check {
    /// Sees every byte of the download in order as it arrives, off the
    /// async threads and beside the writer: a zip is hashed on the way.
    pub tap: Option<Tap>,
    /// Judges the complete bytes; `Err` says what is wrong with them.
    pub verdict: Verdict,
}

pub type Tap = Box<dyn FnMut(&[u8]) + Send>;

pub type Verdict =
    Box<dyn FnOnce(Content) -> Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send>> + Send>;

impl Check {
    /// A check of the complete bytes alone.
    pub fn new<F>(verdict: impl FnOnce(Content) -> F + Send + 'static) -> Check
    where
        F: Future<Output = Result<(), Refusal>> + Send + 'static,
    {
        Check {
            tap: None,
            verdict: Box::new(move |content| Box::pin(verdict(content))),
        }
    }
}

/// The complete bytes of a download, as a check reads them.
pub enum Content {
    /// A small download, still in memory.
    Memory(Bytes),
    /// A larger one, in the flight's temporary file.
    File(PathBuf),
}

impl Content {
    /// All the bytes (a file is read off the async threads).
    pub async fn bytes(self) -> Result<Bytes, Refusal> {
        match self {
            Content::Memory(bytes) => Ok(bytes),
            Content::File(path) => tokio::fs::read(&path)
                .await
                .map(Bytes::from)
                .map_err(|e| Refusal::Unchecked(e.to_string())),
        }
    }
}

/// Why a check did not pass.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The bytes are wrong: the mirror that sent them counts as failing,
    /// and it is a security event.
    #[error("{0}")]
    Bad(String),
    /// They could not be checked (what the check needs is unavailable):
    /// no mirror's fault; nothing is served whole or stored.
    #[error("cannot be checked: {0}")]
    Unchecked(String),
}

/// Makes the check for each attempt of a flight (a retry checks anew).
pub type MakeCheck = Arc<dyn Fn() -> Check + Send + Sync>;

/// Zips up to this size are checked whole before any byte goes out; a
/// larger one streams all but its last `HOLD` bytes meanwhile.
const CHECK_WHOLE: u64 = 1 << 20;

/// What a streamed download keeps from its clients until it is checked:
/// enough that nobody ever has a complete unchecked file (a zip's central
/// directory is at its end).
const HOLD: u64 = 64 << 10;

/// Attempts of a checked download whose bytes failed before any went out
/// (each from the healthiest mirror left).
const ATTEMPTS: usize = 3;

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

fn fresh() -> Progress {
    Progress::Growing {
        written: 0,
        window: Arc::default(),
        end: 0,
        open: 0,
        all: false,
    }
}

/// Starts downloading `key`; the caller has registered no other flight for it.
pub fn launch(inner: Arc<Inner>, key: Key, check: Option<MakeCheck>) -> Arc<Flight> {
    let (takeoff_tx, takeoff) = watch::channel(Takeoff::Fetching);
    let (progress_tx, progress) = watch::channel(fresh());
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
        let mut temp = None;
        for attempt in 1..=ATTEMPTS {
            match fly(&inner, &key, &file, &report, (temp.take(), check.clone())).await {
                Flown::Done(left) => {
                    temp = left;
                    break;
                }
                Flown::Retry {
                    mirror,
                    reason,
                    refused,
                    temp: left,
                } => {
                    temp = left;
                    let why = if refused {
                        Blame::Refused(&reason)
                    } else {
                        Blame::Broke(&reason)
                    };
                    inner
                        .source(&key)
                        .failed(&key.upstream, &key.file, &mirror, why);
                    if attempt == ATTEMPTS {
                        fail(&report, reason);
                    } else {
                        restart(&report, &file, &inner.index).await;
                    }
                }
            }
        }
        if let Some(temp) = temp {
            let size = std::fs::metadata(&temp).map_or(0, |m| m.len());
            if std::fs::remove_file(&temp).is_ok() {
                inner.index.temp_gone(size);
            }
        }
        inner.landed(&key.file);
    });
    flight
}

/// How one attempt ended.
enum Flown {
    /// Stored, served, or failed for good; a temporary file to remove.
    Done(Option<PathBuf>),
    /// The mirror's bytes were refused by their check, or the mirror broke
    /// off or dribbled, before any byte went out: another mirror may be
    /// tried (this one is demoted). The temporary file is kept for the next
    /// attempt.
    Retry {
        mirror: String,
        reason: String,
        /// The check refused its bytes (else the mirror broke).
        refused: bool,
        temp: Option<PathBuf>,
    },
}

/// Empties the window and the file for another attempt (the file's bytes
/// no longer count toward the cache's size).
async fn restart(report: &Report, file: &SharedFile, index: &Arc<super::index::Index>) {
    let _ = report.progress.send(fresh());
    let (file, index) = (file.clone(), index.clone());
    let _ = tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::MetadataExt;
        let handle = file.get()?;
        let meta = handle.metadata().ok()?;
        // A file already given up (removed) was taken off the count then.
        if meta.nlink() > 0 {
            index.temp_gone(meta.len());
        }
        handle.set_len(0).ok()
    })
    .await;
}

/// Tells every waiting client the download failed.
fn fail(report: &Report, reason: String) {
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
}

/// Fetches, streams and stores `key` (one attempt).
async fn fly(
    inner: &Arc<Inner>,
    key: &Key,
    file: &SharedFile,
    report: &Report,
    (temp, check): (Option<PathBuf>, Option<MakeCheck>),
) -> Flown {
    let (response, mirror) = match inner.source(key).fetch(key).await {
        Fetched::Found { response, mirror } => (response, mirror),
        Fetched::Missed(miss) => {
            if let Miss::NotFound(reason) = &miss {
                inner.remember_not_found(&key.file, reason.clone());
            }
            let _ = report.takeoff.send(Takeoff::Missed(miss));
            return Flown::Done(temp);
        }
    };
    let head = head_of(&response, &mirror);
    let expected = head.content_length;
    let (tap, check) = match check.map(|make| make()) {
        Some(Check { tap, verdict }) => (tap, Some(verdict)),
        None => (None, None),
    };
    // Only an archive (a module zip) may be too large to hold whole: every
    // other kind (a go.mod, a lookup) is held until checked, whatever the
    // mirror says of its length.
    let whole = !key.kind.archive || expected.is_some_and(|length| length <= CHECK_WHOLE);
    let release = match (&check, expected) {
        (Some(_), _) if whole => Release::Checked { hold: None },
        (Some(_), _) => Release::Checked { hold: Some(HOLD) },
        (None, Some(length)) => Release::AtLength(length),
        (None, None) => Release::AtEnd,
    };
    let writing = Writing {
        store: &inner.store,
        index: &inner.index,
        file,
        temp,
        progress: &report.progress,
        release,
        limit: key.kind.limit(),
    };
    // Clients are told it started with the first bytes in hand, so a
    // small file goes out as one answer.
    let mut start = Start {
        takeoff: &report.takeoff,
        head: Some(head),
    };
    let copied = copy(
        response.into_body(),
        writing,
        tap,
        &mut start,
        inner.settings.read_timeout,
    )
    .await;
    let landing = Landing {
        inner,
        key,
        file,
        report,
        start,
        mirror,
        expected,
        release,
    };
    land(landing, copied, check).await
}

/// What a finished copy is settled with.
struct Landing<'a> {
    inner: &'a Arc<Inner>,
    key: &'a Key,
    file: &'a SharedFile,
    report: &'a Report,
    start: Start<'a>,
    mirror: String,
    expected: Option<u64>,
    release: Release,
}

/// Settles a finished copy: stored (then complete), served but not stored
/// (only the write failed), refused (its check failed before any byte went
/// out: another mirror may serve it) or broken (the mirror failed, sent a
/// wrong length, or the check refused bytes some client has).
async fn land(landing: Landing<'_>, copied: Copied, check: Option<Verdict>) -> Flown {
    let Landing {
        inner,
        key,
        file,
        report,
        mut start,
        mirror,
        expected,
        release,
    } = landing;
    let checked = settle(&copied, expected, &mirror, check).await;
    let Copied { downloaded, .. } = copied;
    match checked {
        Settled::Good(size) => {
            // Whatever was held back goes out now.
            report.progress.send_modify(|now| {
                if let Progress::Growing { open, all, end, .. } = now {
                    (*open, *all) = (*end, true);
                }
            });
            start.now();
            if let Downloaded::Unstored(_, reason) = &downloaded {
                // The disk refused it: clients finish from the window (it
                // holds the whole file), not from a file.
                inner.storing_failed(&key.file, reason);
                return Flown::Done(None);
            }
            let temp = store(inner, key, file, downloaded, (mirror, size)).await;
            // Readers go on from the file once it holds the whole download;
            // a small one the disk refused stays in the window for them.
            if file.get().is_some() {
                let _ = report.progress.send(Progress::Complete { size });
            }
            Flown::Done(temp)
        }
        Settled::ServedNotStored(reason) => {
            // The clients keeping up have every byte (from memory); only
            // storing failed.
            tracing::info!(file = %key.file, %mirror, %reason, "cache: served but not stored");
            inner.storing_failed(&key.file, &reason);
            Flown::Done(downloaded.temp())
        }
        Settled::Refused(reason) => {
            tracing::warn!(
                security = true, file = %key.file, %mirror, %reason,
                "verification failed: the mirror's bytes were refused; nothing served whole, nothing stored"
            );
            if release == (Release::Checked { hold: None }) {
                return Flown::Retry {
                    mirror,
                    reason,
                    refused: true,
                    temp: downloaded.temp(),
                };
            }
            let why = Blame::Refused(&reason);
            inner
                .source(key)
                .failed(&key.upstream, &key.file, &mirror, why);
            fail(report, reason);
            Flown::Done(downloaded.temp())
        }
        // No client has a byte yet: every one of them waits for the next mirror.
        Settled::MirrorFailed(reason) if !start.told() => {
            tracing::warn!(file = %key.file, %mirror, %reason, "cache: mirror failed mid-body; trying the next");
            Flown::Retry {
                mirror,
                reason,
                refused: false,
                temp: downloaded.temp(),
            }
        }
        Settled::MirrorFailed(reason) => {
            tracing::warn!(file = %key.file, %mirror, %reason, "cache: download failed; nothing stored");
            let why = Blame::Broke(&reason);
            inner
                .source(key)
                .failed(&key.upstream, &key.file, &mirror, why);
            fail(report, reason);
            Flown::Done(downloaded.temp())
        }
        Settled::Failed(reason) => {
            tracing::warn!(file = %key.file, %mirror, %reason, "cache: download failed; nothing stored");
            fail(report, reason);
            Flown::Done(downloaded.temp())
        }
    }
}

/// Stores a good download fetched from `mirror`, `size` bytes; returns a
/// temporary file left to remove.
async fn store(
    inner: &Arc<Inner>,
    key: &Key,
    file: &SharedFile,
    downloaded: Downloaded,
    (mirror, size): (String, u64),
) -> Option<PathBuf> {
    let meta = Meta {
        file: key.file.clone(),
        fetched: unix_secs(Some(SystemTime::now())),
        mirror,
        size,
        // Hashed after it is stored, when the CPU has time.
        sha256: String::new(),
    };
    inner.commit(key, file.clone(), downloaded, meta).await
}

/// What a finished copy amounts to.
enum Settled {
    Good(u64),
    ServedNotStored(String),
    /// The check refused the bytes.
    Refused(String),
    /// The mirror broke off, sent too slowly or sent a wrong length.
    MirrorFailed(String),
    Failed(String),
}

async fn settle(
    copied: &Copied,
    expected: Option<u64>,
    mirror: &str,
    check: Option<Verdict>,
) -> Settled {
    let size = match (&copied.arrived, &copied.written) {
        (Err(reason), _) => return Settled::MirrorFailed(format!("{mirror}: {reason}")),
        (Ok(_), Err(reason)) if check.is_none() => {
            return Settled::ServedNotStored(reason.clone());
        }
        (Ok(_), Err(reason)) => {
            return Settled::Failed(format!("cannot keep it to check it: {reason}"));
        }
        (Ok(size), Ok(_)) => *size,
    };
    if let Some(length) = expected.filter(|length| *length != size) {
        return Settled::MirrorFailed(format!("{mirror} sent {size} bytes of {length}"));
    }
    let Some(check) = check else {
        return Settled::Good(size);
    };
    let content = match &copied.downloaded {
        Downloaded::File(temp) => Content::File(temp.clone()),
        Downloaded::Memory(pieces) | Downloaded::Unstored(pieces, _) => {
            Content::Memory(joined(pieces))
        }
        Downloaded::Nothing => return Settled::Failed("nothing to check".into()),
    };
    match check(content).await {
        Ok(()) => Settled::Good(size),
        Err(Refusal::Bad(reason)) => Settled::Refused(reason),
        Err(unchecked) => Settled::Failed(unchecked.to_string()),
    }
}

/// The pieces of a small download as one buffer (no copy for one piece).
fn joined(pieces: &[Bytes]) -> Bytes {
    if let [only] = pieces {
        return only.clone();
    }
    let mut all = bytes::BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
    for piece in pieces {
        all.extend_from_slice(piece);
    }
    all.freeze()
}

/// Where a complete download's bytes are.
pub enum Downloaded {
    /// In this temporary file (`file` of the flight).
    File(PathBuf),
    /// Still in memory (small): written, fsynced and renamed in one go
    /// when stored.
    Memory(Vec<Bytes>),
    /// In memory because the disk refused it (full): checked and served
    /// from memory, never stored.
    Unstored(Vec<Bytes>, String),
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
