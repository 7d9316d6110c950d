//! Where files of an indexed ecosystem (PyPI, npm) come from: its mirrors,
//! in health order with failover. A package's index document (PyPI's
//! project page, npm's packument) is the mirror's; a file, named by the
//! hash its index gave, is fetched from where a mirror's index lists it
//! (remembered from the indexes modgate served; else that mirror's index
//! is read again), so each mirror is asked only for what it listed.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use crate::cache::flight::{Check, Refusal};

mod front;

pub use front::{Answer, Front, FrontError, Setup, read_document};

use http::StatusCode;

use crate::cache::key::{Key, Upstream};
use crate::cache::{Blame, Fetched, Miss, Source};
use crate::mirrors::MirrorSet;
use crate::stats::Stats;
use crate::upstream::MirrorClient;

/// Remembered file locations beyond this many are forgotten (and found
/// again on the mirror's page when asked for).
const MAX_KNOWN: usize = 200_000;
/// The largest page read to find a file's location.
const MAX_PAGE: usize = 64 << 20;

/// What the mirrors of one ecosystem need to know of it.
pub trait Index: Send + Sync + 'static {
    /// The URL of `base`'s index document for `name`.
    fn index_url(&self, base: &str, name: &str) -> String;

    /// Each file an index document (fetched from `url`) lists: its hash
    /// (as the file's key names it) and its absolute URL.
    fn locations(&self, url: &str, document: &str) -> Vec<(String, String)>;

    /// `(package, hash)` of a file's key; `None` for an index document's.
    fn file_of<'a>(&self, key: &'a Key) -> Option<(&'a str, &'a str)>;

    /// The package an index document's key is for.
    fn package_of<'a>(&self, key: &'a Key) -> &'a str;

    /// How a security event names the file `file` (its package and version).
    fn describe(&self, file: &str) -> String;
}

pub struct Mirrors<I: Index> {
    index: I,
    pub set: MirrorSet,
    pub client: MirrorClient,
    pub stats: Arc<Stats>,
    /// A file's hash → (mirror base, the file's URL there).
    known: Mutex<HashMap<String, (String, String)>>,
}

impl<I: Index> Mirrors<I> {
    pub fn new(index: I, set: MirrorSet, client: MirrorClient, stats: Arc<Stats>) -> Self {
        Mirrors {
            index,
            set,
            client,
            stats,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Remembers where `base`'s index document for `package` lists each file.
    fn learn(&self, base: &str, package: &str, document: &str) {
        let url = self.index.index_url(base, package);
        self.remember(base, self.index.locations(&url, document));
    }

    /// Remembers that `base` has each file `(hash, URL)` of `found` (what
    /// its index document listed, read by the handler that served it).
    pub fn remember(&self, base: &str, found: Vec<(String, String)>) {
        let Ok(mut known) = self.known.lock() else {
            return;
        };
        if known.len() + found.len() > MAX_KNOWN {
            known.clear();
        }
        for (hash, url) in found {
            known.insert(hash, (base.to_string(), url));
        }
    }

    /// `package`'s index document from the mirrors, the first 2xx winning.
    async fn page(&self, package: &str) -> Fetched {
        let mut misses = Vec::new();
        let mut any_failed = false;
        for index in self.set.order() {
            let base = self.set.base(index);
            match self.get(index, &self.index.index_url(base, package)).await {
                Ok(response) => return Fetched::from_mirror(response, base.to_string()),
                Err((miss, failed)) => {
                    any_failed |= failed;
                    misses.push(miss);
                }
            }
        }
        missed(misses, any_failed)
    }

    /// The file `hash` of `package` from the first mirror that lists it
    /// and serves it.
    async fn file(&self, package: &str, hash: &str) -> Fetched {
        let mut misses = Vec::new();
        let mut any_failed = false;
        for index in self.set.order() {
            let base = self.set.base(index).to_string();
            let url = match self.location(index, package, hash).await {
                Ok(url) => url,
                Err((miss, failed)) => {
                    any_failed |= failed;
                    misses.push(miss);
                    continue;
                }
            };
            match self.get(index, &url).await {
                Ok(response) => return Fetched::from_mirror(response, base),
                Err((miss, failed)) => {
                    any_failed |= failed;
                    misses.push(miss);
                }
            }
        }
        missed(misses, any_failed)
    }

    /// Where mirror `index` has file `hash`: remembered, or read from
    /// its index of `package`.
    async fn location(
        &self,
        index: usize,
        package: &str,
        hash: &str,
    ) -> Result<String, (String, bool)> {
        let base = self.set.base(index);
        let remembered = || {
            let known = self.known.lock().ok()?;
            let (from, url) = known.get(hash)?;
            (from == base).then(|| url.clone())
        };
        if let Some(url) = remembered() {
            return Ok(url);
        }
        let response = self
            .get(index, &self.index.index_url(base, package))
            .await?;
        let body = read(response)
            .await
            .map_err(|e| (format!("{base}: {e}"), true))?;
        self.learn(base, package, &body);
        remembered().ok_or_else(|| {
            let why = format!("{base}: its index of {package} lists no such file");
            (why, false)
        })
    }

    /// GETs `url` of mirror `index`: its 2xx answer, or why not and
    /// whether the mirror failed (a 404 or 410 is an answer).
    async fn get(
        &self,
        index: usize,
        url: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, (String, bool)> {
        let base = self.set.base(index);
        let asked = std::time::Instant::now();
        let response = match self.client.get(url).await {
            Ok(response) => response,
            Err(err) => {
                let miss = format!("{base}: {err}");
                self.stats.mirror_result(base, "failed");
                self.demote(index, &miss);
                return Err((miss, true));
            }
        };
        self.set.answered(index, asked.elapsed());
        self.stats.mirror_answered(base, asked.elapsed());
        let status = response.status();
        if status.is_success() {
            self.stats.mirror_result(base, "ok");
            self.set.restore(index);
            return Ok(response);
        }
        let miss = format!("{base}: {status}");
        let absent = status == StatusCode::NOT_FOUND || status == StatusCode::GONE;
        self.stats
            .mirror_result(base, if absent { "not_found" } else { "failed" });
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            self.demote(index, &miss);
        }
        Err((miss, !absent))
    }

    fn demote(&self, index: usize, reason: &str) {
        self.stats.demoted(self.set.base(index));
        self.set.demote(index, reason, None);
    }
}

fn missed(misses: Vec<String>, any_failed: bool) -> Fetched {
    let reason = misses.join("; ").into();
    Fetched::Missed(if any_failed {
        Miss::Failed(reason)
    } else {
        Miss::NotFound(reason)
    })
}

/// An index document's body, as text, up to [`MAX_PAGE`].
async fn read(response: http::Response<hyper::body::Incoming>) -> Result<String, String> {
    use http_body_util::{BodyExt, Limited};
    let body = Limited::new(response.into_body(), MAX_PAGE);
    let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|_| "its index is not UTF-8".to_string())
}

impl<I: Index> Source for Mirrors<I> {
    fn fetch<'a>(&'a self, key: &'a Key) -> Pin<Box<dyn Future<Output = Fetched> + Send + 'a>> {
        Box::pin(async move {
            match self.index.file_of(key) {
                Some((package, hash)) => self.file(package, hash).await,
                None => self.page(self.index.package_of(key)).await,
            }
        })
    }

    fn failed(&self, _: &Upstream, file: &str, mirror: &str, why: Blame<'_>) {
        let reason = match why {
            Blame::Refused(reason) => {
                let named = self.index.describe(file);
                tracing::error!(file = %named, %mirror, reason, "security: a file from a mirror does not match its index's hash; not stored, the next mirror is tried");
                self.stats.verification_failures.inc();
                self.stats.security_event(format!(
                    "verification failed: {named} from {mirror}: {reason}"
                ));
                reason
            }
            Blame::Broke(reason) => {
                self.stats.mirror_result(mirror, "failed");
                reason
            }
        };
        if let Some(index) = self.set.bases().position(|base| base == mirror) {
            self.demote(index, &format!("{mirror}: {reason}"));
        }
    }
}

/// A check that the bytes hash (by `algorithm`) to `want` (lower-case
/// hex), as `source` (the index that gave it) says: hashed as they stream.
pub fn hash_check(
    algorithm: &'static aws_lc_rs::digest::Algorithm,
    want: String,
    source: &'static str,
) -> Check {
    use aws_lc_rs::digest;
    let running = Arc::new(Mutex::new(Some(digest::Context::new(algorithm))));
    let tapped = running.clone();
    let tap = Box::new(move |bytes: &[u8]| {
        if let Ok(mut context) = tapped.lock()
            && let Some(context) = context.as_mut()
        {
            context.update(bytes);
        }
    });
    let verdict = Box::new(move |_| {
        let got = running.lock().ok().and_then(|mut c| c.take());
        Box::pin(async move {
            let got = got.ok_or_else(|| Refusal::Unchecked("the file was not hashed".into()))?;
            let got = crate::sha256::hex(got.finish().as_ref());
            if got == want {
                Ok(())
            } else {
                Err(Refusal::Bad(format!(
                    "hash {got}, but {source} gave {want}"
                )))
            }
        })
            as std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Refusal>> + Send>>
    });
    Check {
        tap: Some(tap),
        verdict,
    }
}
