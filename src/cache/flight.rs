//! One download from the mirrors into the cache, shared by every client
//! that asks for the same file meanwhile (coalescing). It runs as its own
//! task, so a client going away never stops it; it writes into a temporary
//! file that readers stream from as it grows, and commits the entry only
//! when the bytes are complete (and, where asked, checked).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lc_rs::digest;
use bytes::Bytes;
use http::HeaderValue;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::BodyExt;
use tokio::sync::watch;

use super::key::Key;
use super::store::{Meta, unix_secs};
use super::stream::Progress;
use super::{Fetched, Inner, Miss};
use crate::gomod::dirhash::hex;
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
    /// The temporary file: written by the flight, read by every client.
    pub file: Arc<File>,
    pub takeoff: watch::Receiver<Takeoff>,
    pub progress: watch::Receiver<Progress>,
}

/// The ends a flight reports through.
struct Report {
    takeoff: watch::Sender<Takeoff>,
    progress: watch::Sender<Progress>,
}

/// Starts downloading `key`; the caller has registered no other flight for it.
pub fn launch(inner: Arc<Inner>, key: Key, check: Option<Check>) -> std::io::Result<Arc<Flight>> {
    let (file, temp) = inner.store.temp()?;
    let file = Arc::new(file);
    let (takeoff_tx, takeoff) = watch::channel(Takeoff::Fetching);
    let (progress_tx, progress) = watch::channel(Progress::Growing { written: 0 });
    let flight = Arc::new(Flight {
        file: file.clone(),
        takeoff,
        progress,
    });
    let report = Report {
        takeoff: takeoff_tx,
        progress: progress_tx,
    };
    tokio::spawn(async move {
        fly(&inner, &key, file, &temp, report, check).await;
        let _ = std::fs::remove_file(&temp);
        inner.landed(&key.file);
    });
    Ok(flight)
}

async fn fly(
    inner: &Arc<Inner>,
    key: &Key,
    file: Arc<File>,
    temp: &Path,
    report: Report,
    check: Option<Check>,
) {
    let (response, mirror) = match inner.source.fetch(&key.upstream, &key.suffix).await {
        Fetched::Found { response, mirror } => (response, mirror),
        Fetched::Missed(miss) => {
            if let Miss::NotFound(reason) = &miss {
                inner.remember_not_found(&key.file, reason.clone());
            }
            let _ = report.takeoff.send(Takeoff::Missed(miss));
            return;
        }
    };
    let headers = response.headers();
    let head = Head {
        content_type: headers.get(CONTENT_TYPE).cloned(),
        content_length: headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
        mirror: Arc::from(mirror.as_str()),
    };
    let expected = head.content_length;
    let _ = report.takeoff.send(Takeoff::Started(head));
    let copied = copy(
        response.into_body(),
        &file,
        &report.progress,
        inner.read_timeout,
    )
    .await;
    let checked = match (copied, expected) {
        (Ok(got), Some(length)) if got.size != length => {
            Err(format!("{mirror} sent {} bytes of {length}", got.size))
        }
        (Ok(got), _) => run_check(check, temp, got).await,
        (Err(reason), _) => Err(format!("{mirror}: {reason}")),
    };
    match checked {
        Err(reason) => {
            tracing::warn!(file = %key.file, %mirror, %reason, "cache: download failed; nothing stored");
            let _ = report
                .progress
                .send(Progress::Broken(Arc::from(reason.as_str())));
        }
        Ok(got) => {
            let _ = report.progress.send(Progress::Complete { size: got.size });
            let meta = Meta {
                fetched: unix_secs(Some(SystemTime::now())),
                mirror,
                size: got.size,
                sha256: got.sha256,
            };
            inner.commit(key, file, temp.to_path_buf(), meta).await;
        }
    }
}

/// What a complete download is.
struct Got {
    size: u64,
    sha256: String,
}

/// Writes the body into `file`, telling readers how far it is, hashing as it goes.
async fn copy(
    mut body: Body,
    file: &Arc<File>,
    progress: &watch::Sender<Progress>,
    read_timeout: Duration,
) -> Result<Got, String> {
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut written = 0u64;
    loop {
        let frame = tokio::time::timeout(read_timeout, body.frame())
            .await
            .map_err(|_| format!("no bytes for {read_timeout:?}"))?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        hash.update(&data);
        write_at(file, data.clone(), written)
            .await
            .map_err(|e| format!("cache write: {e}"))?;
        written += data.len() as u64;
        progress.send_replace(Progress::Growing { written });
    }
    let sha256 = hex(hash.finish().as_ref());
    Ok(Got {
        size: written,
        sha256,
    })
}

async fn write_at(file: &Arc<File>, data: Bytes, offset: u64) -> std::io::Result<()> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || file.write_all_at(&data, offset))
        .await
        .map_err(std::io::Error::other)?
}

async fn run_check(check: Option<Check>, temp: &Path, got: Got) -> Result<Got, String> {
    let Some(check) = check else {
        return Ok(got);
    };
    let temp: PathBuf = temp.to_path_buf();
    tokio::task::spawn_blocking(move || check(&temp))
        .await
        .map_err(|e| e.to_string())??;
    Ok(got)
}
