//! The office package cache: each file is fetched from a mirror once and
//! served from disk after that, through mirror outages too. It knows no
//! ecosystem: each one (Go modules in `gomod`) maps its requests to keys
//! in the tree, says what never changes, checks its files and fetches
//! them from its mirrors ([`key::Ecosystem`], [`Source`], [`Checker`]).
//! Pure parts: [`key`] (what a key is) and [`fresh`] (TTL and eviction decisions);
//! [`store`] owns the disk, [`index`] the accounting, [`flight`] the
//! coalesced downloads and [`stream`] the bytes to each client.

pub mod bucket;
mod copy;
pub mod flight;
pub mod fresh;
mod hasher;
pub mod index;
pub mod key;
pub mod lease;
pub mod maintain;
mod nofollow;
pub mod shared;
pub mod storage;
pub mod store;
pub mod stream;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin as StdPin;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use tokio::sync::watch;

use crate::message::Body;
use bytes::Bytes;
use flight::{Downloaded, Flight, MakeCheck, Takeoff};
use fresh::{Use, judge};
use index::Index;
use key::{Ecosystems, Key, Kind, Upstream};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use store::{Found, Meta, Store};
use stream::Progress;

/// `[cache]`, as the cache uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub dir: PathBuf,
    pub max_size: u64,
    pub mutable_ttl: Duration,
    pub negative_ttl: Duration,
    pub offline: bool,
    /// The longest a mirror may pause mid-body.
    pub read_timeout: Duration,
    /// The bucket a fleet of gateways shares (`cache.shared`), if any.
    pub shared: Option<crate::config::SharedConfig>,
    /// How the fleet's other gateways reach this one (`proxy.public_name`).
    pub public_name: Option<String>,
}

/// Why no mirror gave a file.
#[derive(Clone, Debug)]
pub enum Miss {
    /// Every mirror answered 404 or 410 (the reason lists them).
    NotFound(Arc<str>),
    /// At least one mirror failed (connect, timeout, 5xx).
    Failed(Arc<str>),
}

/// What a [`Source`] gives for one request.
pub enum Fetched {
    /// A mirror's 2xx answer, its body still to come.
    Found {
        response: Response<Body>,
        mirror: String,
    },
    Missed(Miss),
}

impl Fetched {
    /// A mirror's 2xx answer as the cache takes it: hop-by-hop headers
    /// gone, spoken as HTTP/1.1, its body still to come.
    pub fn from_mirror(response: Response<hyper::body::Incoming>, mirror: String) -> Fetched {
        use http_body_util::BodyExt;
        let (mut parts, body) = response.into_parts();
        crate::message::headers::strip_hop_by_hop(&mut parts.headers, None);
        parts.version = http::Version::HTTP_11;
        let body = body.map_err(Into::into).boxed();
        Fetched::Found {
            response: Response::from_parts(parts, body),
            mirror,
        }
    }
}

/// Where files come from: the mirrors (`gomod`), with their failover,
/// and the shared tier in front of them when there is one.
pub trait Source: Send + Sync + 'static {
    fn fetch<'a>(&'a self, key: &'a Key) -> StdPin<Box<dyn Future<Output = Fetched> + Send + 'a>>;

    /// `mirror` failed for `file`: its bytes refused by their check (a
    /// security event) or, `Blame::Broke`, it broke off, dribbled or sent a
    /// wrong length. Either way it counts as failing.
    fn failed(&self, upstream: &Upstream, file: &str, mirror: &str, why: Blame<'_>);

    /// `key`'s file from `base` (another gateway of the fleet, which an
    /// admin named in `cache.peers`), as from a mirror.
    fn fetch_from<'a>(
        &'a self,
        _base: &'a str,
        _key: &'a Key,
    ) -> StdPin<Box<dyn Future<Output = Fetched> + Send + 'a>> {
        Box::pin(async { Fetched::Missed(Miss::Failed("no fleet".into())) })
    }

    /// Completes once what this source still does in the background
    /// (uploads) is done, or has been given up.
    fn settled(&self) -> StdPin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }

    /// `key`'s file, from `mirror`, is stored (complete, and checked when
    /// it needed a check): `file` is open on it.
    fn stored(&self, _key: &Key, _mirror: &str, _file: Arc<std::fs::File>, _size: u64) {}
}

/// Why a mirror is blamed for a download.
#[derive(Clone, Copy, Debug)]
pub enum Blame<'a> {
    /// Its bytes failed their check.
    Refused(&'a str),
    /// It broke off, sent too slowly or sent a wrong length.
    Broke(&'a str),
}

/// Decides which downloads must pass a check before clients have them
/// whole and before they are stored (`gomod`'s checksum verification).
pub trait Checker: Send + Sync + 'static {
    /// The check for `key`'s download, if it needs one. `cache` is where
    /// the check may fetch what it needs (lookups, tiles).
    fn check_for(&self, cache: &Cache, key: &Key) -> Option<MakeCheck>;
}

/// How a request was served, for the access log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// From the cache.
    Hit,
    /// From a mirror, through the cache.
    Miss,
    /// From a download another client started.
    Joined,
    /// A mutable file past its TTL, served while a new copy is fetched.
    Revalidating,
    /// A mutable file past its TTL, served because every mirror failed (or offline).
    Stale,
    /// A remembered 404.
    Negative,
}

impl How {
    pub fn name(self) -> &'static str {
        match self {
            How::Hit => "hit",
            How::Miss => "miss",
            How::Joined => "joined",
            How::Revalidating => "revalidating",
            How::Stale => "stale",
            How::Negative => "negative",
        }
    }
}

/// The cache's answer to one request.
pub enum Outcome {
    Served {
        response: Response<Body>,
        how: How,
        mirror: Option<Arc<str>>,
    },
    Missed(Miss, How),
}

#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

pub struct Inner {
    store: Arc<Store>,
    index: Arc<Index>,
    /// Whose files the tree holds.
    ecosystems: Ecosystems,
    /// Where each ecosystem's files come from and what checks them:
    /// swapped on reload.
    wiring: ArcSwap<Wiring>,
    settings: Settings,
    flights: Mutex<HashMap<String, Arc<Flight>>>,
    hasher: hasher::Hasher,
    not_found: Mutex<HashMap<String, (Instant, Arc<str>)>>,
    meters: Meters,
}

/// What the cache counts for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Meters {
    /// Entries eviction removed.
    pub evictions: Counter,
    /// Downloads in flight: up from launch until stored (or not).
    pub downloads: Gauge,
    /// 1 while files are stored; 0 while storing fails (a full disk):
    /// files are then served from the mirrors without being kept.
    pub storing: Gauge,
}

/// The mirrors and the checker a cache uses now, per ecosystem.
#[derive(Clone, Default)]
struct Wiring(HashMap<&'static str, Wired>);

#[derive(Clone)]
struct Wired {
    source: Arc<dyn Source>,
    checker: Option<Arc<dyn Checker>>,
}

/// The source of an ecosystem nothing wired: it has no mirrors.
struct Unwired;

impl Source for Unwired {
    fn fetch<'a>(&'a self, key: &'a Key) -> StdPin<Box<dyn Future<Output = Fetched> + Send + 'a>> {
        let why = format!("no mirrors for {} files", key.kind.ecosystem);
        Box::pin(async move { Fetched::Missed(Miss::Failed(why.into())) })
    }

    fn failed(&self, _: &Upstream, _: &str, _: &str, _: Blame<'_>) {}
}

/// Remembered 404s beyond this many are dropped (oldest TTLs first are not tracked).
const MAX_NOT_FOUND: usize = 100_000;

impl Cache {
    /// Opens the cache directory and starts the start-up scan (leftovers
    /// removed, sizes counted) in the background.
    pub fn open(
        settings: Settings,
        ecosystems: Ecosystems,
        meters: Meters,
    ) -> std::io::Result<Cache> {
        let store = Arc::new(Store::open(&settings.dir)?);
        let inner = Arc::new(Inner {
            hasher: hasher::Hasher::start(store.clone())?,
            store,
            index: Arc::new(Index::new(settings.max_size, ecosystems.kinds())),
            ecosystems,
            wiring: ArcSwap::from_pointee(Wiring::default()),
            settings,
            flights: Mutex::new(HashMap::new()),
            not_found: Mutex::new(HashMap::new()),
            meters,
        });
        inner.meters.storing.set(1);
        let scanning = inner.clone();
        tokio::task::spawn_blocking(move || {
            let removed = scanning.store.remove_leftovers();
            if let Err(e) = scanning.store.compact() {
                tracing::warn!(error = %e, "cache: cannot compact the records log");
            }
            scanning
                .index
                .load(scanning.store.scan(&scanning.ecosystems));
            let totals = scanning.index.totals();
            tracing::info!(
                dir = %scanning.store.root().display(), entries = totals.entries,
                bytes = totals.bytes, leftovers_removed = removed, "cache ready"
            );
            scanning.evict_blocking();
        });
        Ok(Cache { inner })
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Entries and bytes by kind, as the index counts them.
    pub fn totals(&self) -> index::Totals {
        self.inner.index.totals()
    }

    /// Sets where `ecosystem`'s new downloads come from and what checks
    /// them (at start, and on reload: downloads in flight finish as they
    /// began).
    pub fn rewire(
        &self,
        ecosystem: &'static str,
        source: Arc<dyn Source>,
        checker: Option<Arc<dyn Checker>>,
    ) {
        self.inner.wiring.rcu(|wiring| {
            let mut wiring = Wiring::clone(wiring);
            let wired = Wired {
                source: source.clone(),
                checker: checker.clone(),
            };
            wiring.0.insert(ecosystem, wired);
            wiring
        });
    }

    /// Completes once no download is in flight (bounded: 10 minutes) and
    /// the source's background work is done: for a command that exits
    /// after fetching (`cache warm`).
    pub async fn settled(&self) {
        for _ in 0..6000 {
            if lock(&self.inner.flights).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let sources: Vec<_> = (self.inner.wiring.load().0.values())
            .map(|w| w.source.clone())
            .collect();
        for source in sources {
            source.settled().await;
        }
    }

    /// The check `key`'s download must pass, by the checker.
    fn check_for(&self, key: &Key) -> Option<MakeCheck> {
        let wiring = self.inner.wiring.load();
        let checker = wiring.0.get(key.kind.ecosystem)?.checker.clone()?;
        checker.check_for(self, key)
    }

    /// Serves `key` from the cache, a download in flight, or the mirrors.
    pub async fn get(&self, key: &Key) -> Outcome {
        let inner = &self.inner;
        if let Some(reason) = inner.remembered_not_found(&key.file) {
            return Outcome::Missed(Miss::NotFound(reason), How::Negative);
        }
        if let Some(flight) = inner.flight(&key.file) {
            return match inner.follow(key, flight, How::Joined).await {
                // A revalidation every mirror failed: the stored copy rides it out.
                Outcome::Missed(Miss::Failed(reason), how) => match inner.lookup(key) {
                    Some(found) => inner.serve_found(key, found, How::Stale),
                    None => Outcome::Missed(Miss::Failed(reason), how),
                },
                outcome => outcome,
            };
        }
        let found = inner.lookup(key);
        let settings = &inner.settings;
        match found {
            Some(found) => match judge(key.kind, found.age, settings.mutable_ttl, settings.offline)
            {
                Use::Fresh => inner.serve_found(key, found, How::Hit),
                Use::StaleOffline => inner.serve_found(key, found, How::Stale),
                Use::StaleRevalidate => {
                    inner.flight_or_launch(key, || self.check_for(key));
                    inner.serve_found(key, found, How::Revalidating)
                }
                Use::Refetch => {
                    let flight = inner.flight_or_launch(key, || self.check_for(key));
                    match inner.follow(key, flight, How::Miss).await {
                        Outcome::Missed(Miss::Failed(_), _) => {
                            inner.serve_found(key, found, How::Stale)
                        }
                        outcome => outcome,
                    }
                }
            },
            None if settings.offline => Outcome::Missed(
                Miss::NotFound(Arc::from(
                    "not in the cache, and cache.offline is set: no mirror is asked",
                )),
                How::Miss,
            ),
            None => {
                let flight = inner.flight_or_launch(key, || self.check_for(key));
                inner.follow(key, flight, How::Miss).await
            }
        }
    }

    /// The whole of a small file (at most `max` bytes), from the cache or
    /// through it (checked as any download of it is).
    pub async fn bytes(&self, key: &Key, max: usize) -> Result<Bytes, String> {
        match self.get(key).await {
            Outcome::Served { response, .. } => {
                crate::message::whole(response.into_body(), max).await
            }
            Outcome::Missed(Miss::NotFound(reason) | Miss::Failed(reason), _) => {
                Err(reason.to_string())
            }
        }
    }

    /// Removes `key`'s file (one found wanting after it was stored: a tile
    /// that failed a proof). Done off the async threads.
    pub async fn forget(&self, key: &Key) {
        // A download of it still being stored lands first (bounded wait).
        for _ in 0..500 {
            if self.inner.flight(&key.file).is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let inner = self.inner.clone();
        let file = key.file.clone();
        let _ = tokio::task::spawn_blocking(move || {
            inner.index.forget(&file);
            match inner.store.remove(&file) {
                Ok(()) => tracing::info!(%file, "cache: removed (failed a check)"),
                Err(e) => tracing::warn!(%file, error = %e, "cache: cannot remove"),
            }
        })
        .await;
    }

    /// Downloads `key` into the cache (unless it is there) and waits for the
    /// outcome; `check` must pass before anything is stored.
    /// [`Cache::fill`] with the check its ecosystem wired for `key` (none
    /// when it wired none).
    pub async fn fill_wired(&self, key: &Key) -> Result<How, String> {
        let check = self
            .check_for(key)
            .unwrap_or_else(|| Arc::new(|| flight::Check::new(|_| async { Ok(()) })));
        self.fill(key, check).await
    }

    pub async fn fill(&self, key: &Key, check: MakeCheck) -> Result<How, String> {
        if self.inner.lookup(key).is_some() {
            return Ok(How::Hit);
        }
        let flight = self.inner.flight_or_launch(key, || Some(check));
        let mut takeoff = flight.takeoff.clone();
        let started = takeoff
            .wait_for(|t| !matches!(t, Takeoff::Fetching))
            .await
            .map(|t| t.clone());
        match started {
            Ok(Takeoff::Started(_)) => {}
            Ok(Takeoff::Missed(Miss::NotFound(r) | Miss::Failed(r))) => return Err(r.to_string()),
            _ => return Err("download ended without an outcome".into()),
        }
        let mut progress = flight.progress.clone();
        let done = progress
            .wait_for(|p| !matches!(p, Progress::Growing { .. }))
            .await
            .map(|p| p.clone());
        match done {
            // Complete is told once storing is over, stored or not.
            Ok(Progress::Complete { .. }) if self.inner.lookup(key).is_some() => Ok(How::Miss),
            Ok(Progress::Complete { .. }) => Err("checked but not stored (see the log)".into()),
            Ok(Progress::Broken(reason)) => Err(reason.to_string()),
            _ => Err("download ended without an outcome".into()),
        }
    }
}

impl Inner {
    /// Where `key`'s new downloads come from now.
    fn source(&self, key: &Key) -> Arc<dyn Source> {
        match self.wiring.load().0.get(key.kind.ecosystem) {
            Some(wired) => wired.source.clone(),
            None => Arc::new(Unwired),
        }
    }

    fn flight(&self, file: &str) -> Option<Arc<Flight>> {
        lock(&self.flights).get(file).cloned()
    }

    /// The download in flight for `key`, or a new one.
    fn flight_or_launch(
        self: &Arc<Self>,
        key: &Key,
        check: impl FnOnce() -> Option<MakeCheck>,
    ) -> Arc<Flight> {
        let mut flights = lock(&self.flights);
        if let Some(flight) = flights.get(&key.file) {
            return flight.clone();
        }
        let flight = flight::launch(self.clone(), key.clone(), check());
        flights.insert(key.file.clone(), flight.clone());
        self.meters.downloads.inc();
        flight
    }

    /// A flight is over (stored or not): later requests look in the store.
    fn landed(&self, file: &str) {
        if lock(&self.flights).remove(file).is_some() {
            self.meters.downloads.dec();
        }
    }

    /// Waits for the flight's first answer, then streams it.
    async fn follow(&self, key: &Key, flight: Arc<Flight>, how: How) -> Outcome {
        let mut takeoff = flight.takeoff.clone();
        let started = takeoff
            .wait_for(|t| !matches!(t, Takeoff::Fetching))
            .await
            .map(|t| t.clone());
        let head = match started {
            Ok(Takeoff::Started(head)) => head,
            Ok(Takeoff::Missed(miss)) => return Outcome::Missed(miss, how),
            _ => {
                let reason = Arc::from("download ended without an outcome");
                return Outcome::Missed(Miss::Failed(reason), how);
            }
        };
        let whole = match &*flight.progress.borrow() {
            Progress::Growing {
                window,
                end,
                all: true,
                ..
            } => window.whole(*end),
            _ => None,
        };
        let body = match whole {
            Some(bytes) => crate::message::text(bytes),
            None => {
                let pin = self.index.pin(&key.file);
                stream::body(flight.file.clone(), flight.progress.clone(), pin)
            }
        };
        let content_type = head.content_type.unwrap_or_else(|| content_type(key.kind));
        Outcome::Served {
            response: response(body, content_type, head.content_length),
            how,
            mirror: Some(head.mirror),
        }
    }

    /// Opens the stored file. Done on the async thread: an open and an
    /// fstat are answered from the kernel's dentry and inode caches, far
    /// cheaper than a hop to the blocking pool (which costs a request
    /// about a millisecond on a busy two-core gateway).
    fn lookup(&self, key: &Key) -> Option<Found> {
        match self.store.lookup(&key.file) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(file = %key.file, error = %e, "cache: cannot read entry");
                None
            }
        }
    }

    fn serve_found(&self, key: &Key, found: Found, how: How) -> Outcome {
        if self.index.used(&key.file, key.kind, found.size) {
            let (store, file) = (self.store.clone(), key.file.clone());
            tokio::task::spawn_blocking(move || store.touch(&file));
        }
        let body = match stream::small(&found.file, found.size) {
            Some(bytes) => crate::message::text(bytes),
            None => {
                let pin = self.index.pin(&key.file);
                let (_, progress) = watch::channel(Progress::Complete { size: found.size });
                stream::body(stream::ready(found.file), progress, pin)
            }
        };
        Outcome::Served {
            response: response(body, content_type(key.kind), Some(found.size)),
            how,
            mirror: None,
        }
    }

    /// Stores a complete download (written, if still in memory, in the
    /// same trip) and evicts what no longer fits. Returns a temporary file
    /// left to remove, if storing failed.
    async fn commit(
        self: &Arc<Self>,
        key: &Key,
        file: stream::SharedFile,
        downloaded: Downloaded,
        meta: Meta,
    ) -> Option<PathBuf> {
        if meta.size > self.settings.max_size {
            tracing::info!(file = %key.file, size = meta.size, max_size = self.settings.max_size,
                "cache: larger than cache.max_size; served, not kept");
            return downloaded.temp();
        }
        let inner = self.clone();
        let entry = key.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let key = entry;
            let (temp, counted) = match downloaded {
                Downloaded::File(path) => (path, meta.size),
                Downloaded::Memory(pieces) => (inner.write_whole(&file, &pieces)?, 0),
                Downloaded::Unstored(..) | Downloaded::Nothing => {
                    return Err((None, std::io::Error::other("nothing to store")));
                }
            };
            let stored = file
                .get()
                .ok_or_else(|| std::io::Error::other("no download file"))
                .and_then(|handle| {
                    handle.sync_all()?;
                    inner
                        .store
                        .commit(&temp, &key.file, key.companion.as_deref())?;
                    handle.try_clone()
                });
            let handle = stored.map_err(|e| (Some(temp), e))?;
            inner.index.temp_gone(counted);
            inner.index.record(&key.file, key.kind, meta.size);
            let handle = Arc::new(handle);
            let source = inner.source(&key);
            source.stored(&key, &meta.mirror, handle.clone(), meta.size);
            inner.hasher.submit(hasher::Job { file: handle, meta });
            inner.evict_blocking();
            Ok(())
        })
        .await;
        match stored {
            Ok(Ok(())) => {
                self.storing_works();
                None
            }
            Ok(Err((temp, e))) => {
                self.storing_failed(&key.file, &e.to_string());
                temp
            }
            Err(e) => {
                tracing::warn!(file = %key.file, error = %e, "cache: cannot store entry");
                None
            }
        }
    }

    /// Makes the temporary file of a download held in memory and writes it.
    fn write_whole(
        &self,
        file: &stream::SharedFile,
        pieces: &[Bytes],
    ) -> Result<PathBuf, (Option<PathBuf>, std::io::Error)> {
        let (mut handle, temp) = self.store.temp().map_err(|e| (None, e))?;
        for piece in pieces {
            std::io::Write::write_all(&mut handle, piece).map_err(|e| (Some(temp.clone()), e))?;
        }
        let _ = file.set(handle);
        Ok(temp)
    }

    /// Storing `file` failed: said once until storing works again (the
    /// file itself was served); `modgate_cache_storing` shows it.
    pub(crate) fn storing_failed(&self, file: &str, reason: &str) {
        let was = self.meters.storing.set(0);
        if was == 1 {
            tracing::warn!(
                %file, dir = %self.store.root().display(), %reason,
                "cache: cannot store: files are served from the mirrors and not kept until storing works again (a full disk? see the reason)"
            );
        } else {
            tracing::debug!(%file, %reason, "cache: not stored");
        }
    }

    fn storing_works(&self) {
        if self.meters.storing.set(1) == 0 {
            tracing::info!(dir = %self.store.root().display(), "cache: storing again");
        }
    }

    fn evict_blocking(&self) {
        for file in self.index.evict() {
            match self.store.remove(&file) {
                Ok(()) => {
                    self.meters.evictions.inc();
                    tracing::info!(%file, "cache: evicted (least recently used)");
                }
                Err(e) => tracing::warn!(%file, error = %e, "cache: cannot evict"),
            }
        }
    }

    fn remember_not_found(&self, file: &str, reason: Arc<str>) {
        let mut map = lock(&self.not_found);
        let now = Instant::now();
        if map.len() >= MAX_NOT_FOUND {
            map.retain(|_, (until, _)| *until > now);
            if map.len() >= MAX_NOT_FOUND {
                map.clear();
            }
        }
        map.insert(file.to_string(), (now + self.settings.negative_ttl, reason));
    }

    fn remembered_not_found(&self, file: &str) -> Option<Arc<str>> {
        let mut map = lock(&self.not_found);
        match map.get(file) {
            Some((until, reason)) if *until > Instant::now() => Some(reason.clone()),
            Some(_) => {
                map.remove(file);
                None
            }
            None => None,
        }
    }
}

/// A mutex's guard; a panic elsewhere while it was held does not stop
/// the state being used (every holder leaves it consistent).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn response(body: Body, content_type: HeaderValue, length: Option<u64>) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    if let Some(length) = length {
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    response
}

/// What each kind is served as.
fn content_type(kind: Kind) -> HeaderValue {
    HeaderValue::from_static(kind.content_type)
}
