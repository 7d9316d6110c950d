//! Where PyPI files come from: the mirrors in `pypi.mirrors`, in health
//! order with failover. A project's page is the mirror's
//! `/simple/<project>/`; a file is fetched from where a mirror's page
//! links it (remembered from the pages modgate served; else that mirror's
//! page is read again), so each mirror is asked only for what it listed.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use http::StatusCode;

use super::page::{Link, links, resolve};
use super::tree::{file_parts, kind, name_and_version};
use crate::cache::key::{Key, Upstream};
use crate::cache::{Blame, Fetched, Miss, Source};
use crate::gomod::MirrorSet;
use crate::stats::Stats;
use crate::upstream::MirrorClient;

/// Remembered file locations beyond this many are forgotten (and found
/// again on the mirror's page when asked for).
const MAX_KNOWN: usize = 200_000;
/// The largest page read to find a file's location.
const MAX_PAGE: usize = 64 << 20;

pub struct Mirrors {
    pub set: MirrorSet,
    pub client: MirrorClient,
    pub stats: Arc<Stats>,
    /// sha256 → (mirror base, the file's URL there).
    known: Mutex<HashMap<String, (String, String)>>,
}

impl Mirrors {
    pub fn new(set: MirrorSet, client: MirrorClient, stats: Arc<Stats>) -> Mirrors {
        Mirrors {
            set,
            client,
            stats,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Remembers where `base`'s page for `project` links each file.
    pub fn learn(&self, base: &str, project: &str, links: &[Link]) {
        let page = page_url(base, project);
        let Ok(mut known) = self.known.lock() else {
            return;
        };
        if known.len() + links.len() > MAX_KNOWN {
            known.clear();
        }
        for link in links {
            if let Some(url) = resolve(&page, &link.href) {
                known.insert(link.sha256.clone(), (base.to_string(), url.into_owned()));
            }
        }
    }

    /// `project`'s page from the mirrors, the first 2xx winning.
    async fn page(&self, project: &str) -> Fetched {
        let mut misses = Vec::new();
        let mut any_failed = false;
        for index in self.set.order() {
            let base = self.set.base(index);
            match self.get(index, &page_url(base, project)).await {
                Ok(response) => return Fetched::from_mirror(response, base.to_string()),
                Err((miss, failed)) => {
                    any_failed |= failed;
                    misses.push(miss);
                }
            }
        }
        missed(misses, any_failed)
    }

    /// The file `sha256` of `project` from the first mirror that lists it
    /// and serves it.
    async fn file(&self, project: &str, sha256: &str) -> Fetched {
        let mut misses = Vec::new();
        let mut any_failed = false;
        for index in self.set.order() {
            let base = self.set.base(index).to_string();
            let url = match self.location(index, project, sha256).await {
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

    /// Where mirror `index` has file `sha256`: remembered, or read from
    /// its page for `project`.
    async fn location(
        &self,
        index: usize,
        project: &str,
        sha256: &str,
    ) -> Result<String, (String, bool)> {
        let base = self.set.base(index);
        let remembered = self.known.lock().ok().and_then(|k| k.get(sha256).cloned());
        if let Some((_, url)) = remembered.filter(|(from, _)| from == base) {
            return Ok(url);
        }
        let response = self.get(index, &page_url(base, project)).await?;
        let body = read(response)
            .await
            .map_err(|e| (format!("{base}: {e}"), true))?;
        let (found, _) = links(&body).map_err(|e| (format!("{base}: {e}"), true))?;
        self.learn(base, project, &found);
        let remembered = self.known.lock().ok().and_then(|k| k.get(sha256).cloned());
        match remembered.filter(|(from, _)| from == base) {
            Some((_, url)) => Ok(url),
            None => Err((
                format!("{base}: its page for {project} lists no such file"),
                false,
            )),
        }
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

/// The URL of `base`'s page for `project`.
pub fn page_url(base: &str, project: &str) -> String {
    format!("{base}/simple/{project}/")
}

fn missed(misses: Vec<String>, any_failed: bool) -> Fetched {
    let reason = misses.join("; ").into();
    Fetched::Missed(if any_failed {
        Miss::Failed(reason)
    } else {
        Miss::NotFound(reason)
    })
}

/// A page's body, as text, up to [`MAX_PAGE`].
async fn read(response: http::Response<hyper::body::Incoming>) -> Result<String, String> {
    use http_body_util::{BodyExt, Limited};
    let body = Limited::new(response.into_body(), MAX_PAGE);
    let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|_| "its page is not UTF-8".to_string())
}

impl Source for Mirrors {
    fn fetch<'a>(&'a self, key: &'a Key) -> Pin<Box<dyn Future<Output = Fetched> + Send + 'a>> {
        Box::pin(async move {
            match file_parts(key) {
                Some((project, sha256, _)) if key.kind == kind::FILE => {
                    self.file(project, sha256).await
                }
                _ => {
                    let project = key.suffix.trim_matches('/').trim_start_matches("simple/");
                    self.page(project).await
                }
            }
        })
    }

    fn failed(&self, _: &Upstream, file: &str, mirror: &str, why: Blame<'_>) {
        let reason = match why {
            Blame::Refused(reason) => {
                let filename = file.rsplit('/').next().unwrap_or(file);
                let (name, version) = name_and_version(filename).unwrap_or((filename, "?"));
                tracing::error!(package = name, version, %mirror, reason, "security: a PyPI file from a mirror failed its index page's sha256; not stored, the next mirror is tried");
                self.stats.verification_failures.inc();
                self.stats.security_event(format!(
                    "verification failed: {name} {version} ({filename}) from {mirror}: {reason}"
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
