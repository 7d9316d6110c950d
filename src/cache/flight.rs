//! One download from the mirrors into the cache, shared by every client
//! that asks for the same file meanwhile (coalescing). It runs as its own
//! task, so a client going away never stops it. Each batch of bytes goes to
//! the clients from memory at once, then into a temporary file that a
//! client who fell behind reads back; the entry is committed only when the
//! bytes are complete (and, where asked, checked).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::key::Key;
use super::store::{Meta, unix_secs};
use super::stream::{Progress, SharedFile};
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

/// The temporary file being made (off the async threads, while the mirror
/// is asked and the first bytes go out).
type Creating = JoinHandle<std::io::Result<(File, PathBuf)>>;

/// Starts downloading `key`; the caller has registered no other flight for it.
pub fn launch(inner: Arc<Inner>, key: Key, check: Option<Check>) -> Arc<Flight> {
    let (takeoff_tx, takeoff) = watch::channel(Takeoff::Fetching);
    let (progress_tx, progress) = watch::channel(Progress::Growing {
        written: 0,
        last: Bytes::new(),
        last_end: 0,
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
        let store = inner.store.clone();
        let creating = tokio::task::spawn_blocking(move || store.temp());
        if let Some(temp) = fly(&inner, &key, creating, &file, report, check).await {
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
    creating: Creating,
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
            return created(creating).await.ok().map(|(_, path)| path);
        }
    };
    let head = head_of(&response, &mirror);
    let expected = head.content_length;
    let _ = report.takeoff.send(Takeoff::Started(head));
    let writing = Writing {
        creating: Some(creating),
        file,
        progress: &report.progress,
        // Bytes that must pass a check are released only after it.
        release_at: expected.filter(|_| check.is_none()),
    };
    let (copied, temp) = copy(response.into_body(), writing, inner.read_timeout).await;
    let checked = match (copied, &temp) {
        (Ok(size), Some(temp)) => match expected {
            Some(length) if size != length => {
                Err(format!("{mirror} sent {size} bytes of {length}"))
            }
            _ => run_check(check, temp).await.map(|()| size),
        },
        (Ok(_), None) => Err("no download file".to_string()),
        (Err(reason), _) => Err(format!("{mirror}: {reason}")),
    };
    match (checked, file.get().and_then(|_| temp.clone())) {
        (Ok(size), Some(temp)) => {
            let _ = report.progress.send(Progress::Complete { size });
            let meta = Meta {
                file: key.file.clone(),
                fetched: unix_secs(Some(SystemTime::now())),
                mirror,
                size,
                // Hashed when committed, after the clients have their bytes.
                sha256: String::new(),
            };
            inner.commit(key, file.clone(), temp, meta).await;
        }
        (result, _) => {
            let reason = result.err().unwrap_or_else(|| "no download file".into());
            tracing::warn!(file = %key.file, %mirror, %reason, "cache: download failed; nothing stored");
            let _ = report.progress.send(Progress::Broken(Arc::from(reason)));
        }
    }
    temp
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

async fn created(creating: Creating) -> std::io::Result<(File, PathBuf)> {
    creating.await.map_err(std::io::Error::other)?
}

/// The most bytes gathered from ready frames into one write.
const BATCH: usize = 1 << 20;

/// Where a download's bytes go.
struct Writing<'a> {
    /// Taken when the first write needs the file.
    creating: Option<Creating>,
    file: &'a SharedFile,
    progress: &'a watch::Sender<Progress>,
    /// When the bytes reach this size (the mirror's Content-Length),
    /// clients may end their responses before the last write is done.
    release_at: Option<u64>,
}

/// Writes the body into the file, telling readers how far it is; returns
/// the size and the temporary file's path. Reading from the mirror and
/// writing overlap: batches pass between them through a short queue.
async fn copy(
    body: Body,
    writing: Writing<'_>,
    read_timeout: Duration,
) -> (Result<u64, String>, Option<PathBuf>) {
    let (tx, rx) = mpsc::channel(4);
    let (read, (written, temp)) = tokio::join!(
        read_batches(body, tx, read_timeout),
        write_batches(rx, writing)
    );
    // A write failure stops the reading too; its reason is the one to tell.
    (written.and_then(|size| read.map(|()| size)), temp)
}

/// Sends the body on in batches of the frames that are ready together.
async fn read_batches(
    mut body: Body,
    tx: mpsc::Sender<Bytes>,
    read_timeout: Duration,
) -> Result<(), String> {
    loop {
        let frame = tokio::time::timeout(read_timeout, body.frame())
            .await
            .map_err(|_| format!("no bytes for {read_timeout:?}"))?;
        let Some(frame) = frame else {
            return Ok(());
        };
        let mut first = frame
            .map_err(|e| e.to_string())?
            .into_data()
            .unwrap_or_default();
        let mut batch = BytesMut::new();
        let mut ended = false;
        while first.len() + batch.len() < BATCH {
            // Only what is ready now: never wait to fill a batch.
            let ready = std::future::poll_fn(|cx| {
                Poll::Ready(http_body::Body::poll_frame(Pin::new(&mut body), cx))
            })
            .await;
            match ready {
                Poll::Ready(Some(frame)) => {
                    if let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() {
                        if batch.is_empty() {
                            batch.extend_from_slice(&first);
                            first = Bytes::new();
                        }
                        batch.extend_from_slice(&data);
                    }
                }
                Poll::Ready(None) => {
                    ended = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        let data = if batch.is_empty() {
            first
        } else {
            batch.freeze()
        };
        if tx.send(data).await.is_err() {
            return Err("the cache write stopped".into());
        }
        if ended {
            return Ok(());
        }
    }
}

/// Hands each batch to readers at once, then writes it off the async
/// threads and tells readers it is on disk. Returns the size, and the
/// temporary file's path once it was made.
async fn write_batches(
    mut rx: mpsc::Receiver<Bytes>,
    mut writing: Writing<'_>,
) -> (Result<u64, String>, Option<PathBuf>) {
    let mut written = 0u64;
    let mut temp = None;
    while let Some(data) = rx.recv().await {
        let end = written + data.len() as u64;
        let all = writing.release_at == Some(end);
        let growing = |written| Progress::Growing {
            written,
            last: data.clone(),
            last_end: end,
            all,
        };
        writing.progress.send_replace(growing(written));
        if let Err(e) = make_file(&mut writing, &mut temp).await {
            return (Err(e), None);
        }
        if let Err(e) = write_at(writing.file, data.clone(), written).await {
            return (Err(format!("cache write: {e}")), temp);
        }
        written = end;
        writing.progress.send_replace(growing(written));
    }
    match make_file(&mut writing, &mut temp).await {
        Ok(()) => (Ok(written), temp),
        Err(e) => (Err(e), None),
    }
}

/// Waits for the temporary file, the first time it is needed.
async fn make_file(writing: &mut Writing<'_>, temp: &mut Option<PathBuf>) -> Result<(), String> {
    let Some(creating) = writing.creating.take() else {
        return Ok(());
    };
    let (file, path) = created(creating)
        .await
        .map_err(|e| format!("cannot make a download file: {e}"))?;
    let _ = writing.file.set(file);
    *temp = Some(path);
    Ok(())
}

async fn write_at(file: &SharedFile, data: Bytes, offset: u64) -> std::io::Result<()> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || match file.get() {
        Some(file) => file.write_all_at(&data, offset),
        None => Err(std::io::Error::other("no download file")),
    })
    .await
    .map_err(std::io::Error::other)?
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
