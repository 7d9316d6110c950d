//! The shared tier: a bucket (S3-compatible, through [`Storage`]) that a
//! fleet of gateways keeps behind their own directories. As a [`Source`]
//! it stands in front of the mirrors: an immutable file the bucket has is
//! read from it (a zip asked of the bucket first; a small file asked of
//! the bucket and the mirrors at once, the first answer taken), and checked as a mirror's bytes would be (the bucket is
//! one more place bytes come from, and someone else may write it); a file
//! it lacks comes from the mirrors and, once stored locally, is offered
//! back to the bucket ([`Source::stored`]) by a create-only write, so
//! racing gateways keep the first copy. A copy the check refused is not
//! asked for again by this gateway and is removed from the bucket. The
//! bucket failing (unreachable, slow, refusing) never holds a client
//! longer than `cache.shared_timeout`: the mirrors answer, the tier shows
//! as down, and the write is dropped (at most [`UPLOADS`] at once, at
//! most [`PENDING`] waiting).

use std::collections::HashSet;
use std::fs::File;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Response;
use http::header::{CONTENT_LENGTH, HeaderValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::stats::ResultLabel;

use super::key::{Key, Upstream};
use super::lease::{Fleet, Lease};
use super::storage::{Storage, Written};
use super::{Blame, Fetched, Source};
use crate::message::BoxError;

/// The mirror name of files read from the bucket, in logs and records.
pub const SHARED: &str = "shared";
/// What becomes of a file offered to the bucket, as `/metrics` counts it.
pub const UPLOAD_RESULTS: [&str; 4] = ["created", "existed", "failed", "dropped"];

/// What the shared tier counts for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Meters {
    /// `modgate_cache_shared_up`.
    pub up: Gauge,
    /// `modgate_cache_shared_uploads_total` by [`UPLOAD_RESULTS`].
    pub uploads: Family<ResultLabel, Counter>,
}

/// Uploads to the bucket at once.
pub const UPLOADS: usize = 4;
/// Uploads waiting for a slot; a file stored while this many wait is not
/// uploaded (another gateway, or a later download, will).
pub const PENDING: usize = 1024;
/// How long one upload may take.
const UPLOAD_LIMIT: Duration = Duration::from_secs(300);
/// Refused files remembered; beyond this the set starts over.
const MAX_REFUSED: usize = 10_000;

pub struct Shared {
    storage: Arc<dyn Storage>,
    mirrors: Arc<dyn Source>,
    timeout: Duration,
    /// `modgate_cache_shared_up`: whether the bucket answered last time.
    up: Gauge,
    /// `modgate_cache_shared_uploads_total`.
    uploaded: Family<ResultLabel, Counter>,
    /// Uploads running or waiting: at most [`UPLOADS`] + [`PENDING`].
    admitted: Arc<tokio::sync::Semaphore>,
    /// Uploads running: at most [`UPLOADS`].
    uploads: Arc<tokio::sync::Semaphore>,
    /// Files whose bucket copy failed its check here: fetched from mirrors.
    refused: Mutex<HashSet<String>>,
    /// Companions (checksum databases' `supported`) known to be in the bucket.
    marked: Arc<Mutex<HashSet<String>>>,
    /// Objects the bucket held at the start-up probe (`None`: not counted).
    counted: Mutex<Option<usize>>,
    fleet: Fleet,
}

impl Shared {
    pub fn new(
        storage: Arc<dyn Storage>,
        mirrors: Arc<dyn Source>,
        timeout: Duration,
        meters: Meters,
    ) -> Shared {
        let Meters {
            up,
            uploads: uploaded,
        } = meters;
        up.set(1);
        Shared {
            storage,
            mirrors,
            timeout,
            up,
            uploaded,
            admitted: Arc::new(tokio::sync::Semaphore::new(UPLOADS + PENDING)),
            uploads: Arc::new(tokio::sync::Semaphore::new(UPLOADS)),
            refused: Mutex::new(HashSet::new()),
            marked: Arc::new(Mutex::new(HashSet::new())),
            counted: Mutex::new(None),
            fleet: Fleet::default(),
        }
    }

    /// With leases: a zip no gateway has is downloaded by one of them, and
    /// the others stream it from that one as it arrives.
    pub fn with_fleet(self, fleet: Fleet) -> Shared {
        Shared { fleet, ..self }
    }

    /// A zip the bucket lacks: from the mirrors when this gateway holds
    /// (or cannot take) the lease, else from the peer that holds it,
    /// falling back to the mirrors when that peer does not serve it.
    async fn coalesced(&self, key: &Key) -> Fetched {
        if let Some(Lease::Theirs(holder)) = self.lease(key).await {
            let base = format!("http://{holder}");
            if let found @ Fetched::Found { .. } = self.mirrors.fetch_from(&base, key).await {
                return found;
            }
        }
        self.mirrors.fetch(key).await
    }

    /// The lease on `key`'s download: this gateway's, another's, or none.
    async fn lease(&self, key: &Key) -> Option<Lease> {
        super::lease::take(self.storage.as_ref(), &self.fleet, self.timeout, &key.file).await
    }

    /// `key`'s companion (a checksum database's `supported`, which
    /// `GOPROXY=file://` or a static web site serving the bucket's tree is
    /// asked for), unless it is known to be in the bucket.
    fn marker(&self, key: &Key) -> Option<String> {
        let companion = key.companion.as_ref()?;
        let known = self.marked.lock().is_ok_and(|m| m.contains(companion));
        (!known).then(|| companion.clone())
    }

    /// The bucket and how long a client may wait on it.
    pub fn storage(&self) -> (Arc<dyn Storage>, Duration) {
        (self.storage.clone(), self.timeout)
    }

    /// The bucket, whether it answered the last time it was asked, and
    /// how many objects it held at the start-up probe.
    pub fn state(&self) -> (String, bool, Option<usize>) {
        let counted = self.counted.lock().ok().and_then(|c| *c);
        (self.storage.describe(), self.up.get() != 0, counted)
    }

    /// A line for the start-up summary: the bucket, whether it answers,
    /// how many objects it holds, and whether it honours create-only
    /// writes (a second `If-None-Match: *` PUT of a probe object must fail).
    pub async fn probe(&self) -> String {
        let place = self.storage.describe();
        let limit = self.timeout * 4;
        let count = match tokio::time::timeout(limit, self.storage.list("")).await {
            Ok(Ok(listed)) => {
                if let Ok(mut counted) = self.counted.lock() {
                    *counted = Some(listed.len());
                }
                listed.len().to_string()
            }
            Ok(Err(e)) => {
                self.up.set(0);
                return format!(
                    "{place}: UNREACHABLE ({e}); serving from this gateway and the mirrors"
                );
            }
            Err(_) => format!("more than can be listed in {limit:?}: some"),
        };
        let honoured = match self.create_only().await {
            Ok(true) => "",
            Ok(false) => {
                "; WARNING: it does not honour create-only writes (If-None-Match), so gateways may overwrite each other's files"
            }
            Err(_) => "; WARNING: cannot write to it (see the log when files are uploaded)",
        };
        format!("{place}: reachable, {count} objects{honoured}")
    }

    /// Whether a second create-only write of one probe object fails.
    async fn create_only(&self) -> Result<bool, super::storage::StorageError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let name = format!("modgate-probe/{}-{nanos}", std::process::id());
        let first = self
            .storage
            .put_new(&name, Bytes::from_static(b"probe"))
            .await?;
        let second = self
            .storage
            .put_new(&name, Bytes::from_static(b"again"))
            .await;
        let _ = self.storage.delete(&name).await;
        Ok(first == Written::Created && matches!(second, Ok(Written::Existed)))
    }

    fn was_refused(&self, file: &str) -> bool {
        self.refused.lock().is_ok_and(|r| r.contains(file))
    }

    /// The bucket's copy of `key`, as a mirror's 2xx answer, if it has one
    /// and answers within the timeout.
    async fn read_bucket(&self, key: &Key) -> Option<Fetched> {
        let read = tokio::time::timeout(self.timeout, self.storage.get(&key.file, None)).await;
        let object = match read {
            Ok(Ok(Some(object))) => object,
            Ok(Ok(None)) => {
                self.up.set(1);
                return None;
            }
            Ok(Err(e)) => return self.down(&key.file, &e.to_string()),
            Err(_) => return self.down(&key.file, "no answer within cache.shared_timeout"),
        };
        self.up.set(1);
        let (tx, body) = crate::message::channel(4);
        let mut chunks = object.body;
        tokio::spawn(async move {
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|e| Box::new(e) as BoxError);
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut response = Response::new(body);
        if let Ok(length) = HeaderValue::from_str(&object.size.to_string()) {
            response.headers_mut().insert(CONTENT_LENGTH, length);
        }
        Some(Fetched::Found {
            response,
            mirror: SHARED.to_string(),
        })
    }

    /// A small file (anything but a zip): the bucket and the mirrors asked
    /// at once, the first 2xx taken and the other request dropped. A cold
    /// miss then costs no bucket round trip first; the mirrors' extra
    /// requests are for a few kilobytes.
    async fn race(&self, key: &Key) -> Fetched {
        use futures_util::future::{Either, select};
        let bucket = std::pin::pin!(self.read_bucket(key));
        let mirrors = std::pin::pin!(self.mirrors.fetch(key));
        match select(bucket, mirrors).await {
            Either::Left((Some(found), _)) => found,
            Either::Left((None, mirrors)) => mirrors.await,
            Either::Right((found @ Fetched::Found { .. }, _)) => found,
            Either::Right((missed, bucket)) => bucket.await.unwrap_or(missed),
        }
    }

    fn down(&self, file: &str, why: &str) -> Option<Fetched> {
        if self.up.set(0) != 0 {
            tracing::warn!(bucket = %self.storage.describe(), %file, why, "shared tier down: serving from this gateway and the mirrors");
        }
        None
    }
}

impl Source for Shared {
    fn fetch<'a>(&'a self, key: &'a Key) -> Pin<Box<dyn Future<Output = Fetched> + Send + 'a>> {
        Box::pin(async move {
            if !key.kind.immutable() || self.was_refused(&key.file) {
                return self.mirrors.fetch(key).await;
            }
            if !key.kind.archive {
                return self.race(key).await;
            }
            match self.read_bucket(key).await {
                Some(found) => found,
                None => self.coalesced(key).await,
            }
        })
    }

    fn failed(&self, upstream: &Upstream, file: &str, mirror: &str, why: Blame<'_>) {
        if mirror != SHARED {
            return self.mirrors.failed(upstream, file, mirror, why);
        }
        if let Blame::Refused(reason) = why {
            tracing::warn!(bucket = %self.storage.describe(), %file, reason, "the shared tier's copy failed its check: removed from the bucket, fetched from the mirrors");
            if let Ok(mut refused) = self.refused.lock() {
                if refused.len() >= MAX_REFUSED {
                    refused.clear();
                }
                refused.insert(file.to_string());
            }
            let (storage, file) = (self.storage.clone(), file.to_string());
            tokio::spawn(async move { storage.delete(&file).await });
        }
    }

    fn settled(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + UPLOAD_LIMIT;
            while tokio::time::Instant::now() < deadline {
                if self.admitted.available_permits() == UPLOADS + PENDING {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    fn stored(&self, key: &Key, mirror: &str, file: Arc<File>, size: u64) {
        if mirror == SHARED || !key.kind.immutable() {
            return;
        }
        let count = self.uploaded.clone();
        let counted = move |result: &'static str| {
            count.get_or_create(&ResultLabel { result }).inc();
        };
        let Ok(admitted) = self.admitted.clone().try_acquire_owned() else {
            tracing::debug!(file = %key.file, "shared tier: {PENDING} uploads waiting; not uploaded");
            counted("dropped");
            return;
        };
        let slots = self.uploads.clone();
        let (storage, name, up) = (self.storage.clone(), key.file.clone(), self.up.clone());
        let (marker, marked) = (self.marker(key), self.marked.clone());
        let lease = (!self.fleet.peers.is_empty()).then(|| super::lease::name(&key.file));
        tokio::spawn(async move {
            let _admitted = admitted;
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            if let Some(companion) = marker
                && storage.put_new(&companion, Bytes::new()).await.is_ok()
                && let Ok(mut marked) = marked.lock()
            {
                marked.insert(companion);
            }
            let put = tokio::time::timeout(UPLOAD_LIMIT, storage.put_file(&name, file, size)).await;
            if let (Ok(Ok(_)), Some(lease)) = (&put, lease) {
                // In the bucket now: whoever asks next finds it there.
                let _ = storage.delete(&lease).await;
            }
            match put {
                Ok(Ok(Written::Created)) => counted("created"),
                Ok(Ok(Written::Existed)) => counted("existed"),
                Ok(Err(e)) => {
                    up.set(0);
                    counted("failed");
                    tracing::warn!(%name, error = %e, "shared tier: upload failed; dropped");
                }
                Err(_) => {
                    counted("failed");
                    tracing::warn!(%name, "shared tier: upload took too long; dropped");
                }
            }
        });
    }
}
