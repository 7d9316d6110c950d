//! Fetches one module or checksum database file from the mirrors, in
//! health order with failover: the first 2xx wins; 404/410 is an answer
//! (the next mirror may still have it); a failure (connect, timeout, 5xx,
//! 429) demotes the mirror, for as long as its Retry-After asks when it says.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use http::header::RETRY_AFTER;

use super::tree::GoUpstream;
use crate::cache::key::Upstream;
use crate::cache::{Blame, Fetched, Miss, Source};
use crate::mirrors::{MirrorSet, retry_after};
use crate::stats::Stats;
use crate::upstream::MirrorClient;

pub struct Mirrors {
    pub proxy: MirrorSet,
    pub sumdb: MirrorSet,
    pub client: MirrorClient,
    /// The real module proxy host, for the `origin` mirror.
    pub proxy_host: String,
    /// Per-mirror results and demotions, for /metrics.
    pub stats: Arc<Stats>,
}

impl Mirrors {
    pub async fn fetch(&self, upstream: &Upstream, suffix: &str) -> Fetched {
        let (set, host) = match GoUpstream::of(upstream) {
            GoUpstream::Proxy => (&self.proxy, self.proxy_host.as_str()),
            GoUpstream::Sumdb(db) => (&self.sumdb, db),
        };
        let mut misses = Vec::new();
        let mut any_failed = false;
        for index in set.order() {
            let base = set.base(index);
            let url = if base == "origin" {
                format!("https://{host}{suffix}")
            } else {
                format!("{base}{suffix}")
            };
            let asked = std::time::Instant::now();
            let response = match self.client.get(&url).await {
                Ok(response) => {
                    set.answered(index, asked.elapsed());
                    self.stats.mirror_answered(base, asked.elapsed());
                    response
                }
                Err(err) => {
                    let miss = format!("{base}: {err}");
                    self.stats.mirror_result(base, "failed");
                    self.demote(set, index, &miss, None);
                    misses.push(miss);
                    any_failed = true;
                    continue;
                }
            };
            let status = response.status();
            if status.is_success() {
                self.stats.mirror_result(base, "ok");
                set.restore(index);
                return Fetched::from_mirror(response, base.to_string());
            }
            let (miss, failed) = self.unanswered(set, index, &response);
            any_failed |= failed;
            misses.push(miss);
        }
        let reason = misses.join("; ").into();
        Fetched::Missed(if any_failed {
            Miss::Failed(reason)
        } else {
            Miss::NotFound(reason)
        })
    }

    /// Demotes mirror `index` of `set` (for `asked`, when it said), and counts it.
    fn demote(&self, set: &MirrorSet, index: usize, reason: &str, asked: Option<Duration>) {
        self.stats.demoted(set.base(index));
        set.demote(index, reason, asked);
    }
    /// A mirror's answer other than 2xx: why (for the reason given to
    /// clients), and whether it counts as the mirror failing (not a
    /// 404/410); a 5xx or 429 demotes it, for as long as Retry-After asks.
    fn unanswered(
        &self,
        set: &MirrorSet,
        index: usize,
        response: &http::Response<hyper::body::Incoming>,
    ) -> (String, bool) {
        let (base, status) = (set.base(index), response.status());
        let miss = format!("{base}: {status}");
        let found = status == StatusCode::NOT_FOUND || status == StatusCode::GONE;
        self.stats
            .mirror_result(base, if found { "not_found" } else { "failed" });
        if !found && (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS) {
            let asked = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, SystemTime::now()));
            self.demote(set, index, &miss, asked);
        }
        (miss, !found)
    }
}

impl Source for Mirrors {
    fn fetch<'a>(
        &'a self,
        key: &'a crate::cache::key::Key,
    ) -> std::pin::Pin<Box<dyn Future<Output = Fetched> + Send + 'a>> {
        Box::pin(Mirrors::fetch(self, &key.upstream, &key.suffix))
    }

    fn fetch_from<'a>(
        &'a self,
        base: &'a str,
        key: &'a crate::cache::key::Key,
    ) -> std::pin::Pin<Box<dyn Future<Output = Fetched> + Send + 'a>> {
        Box::pin(async move {
            let url = format!("{base}{}", key.suffix);
            match self.client.get(&url).await {
                Ok(response) if response.status().is_success() => {
                    Fetched::from_mirror(response, format!("peer {base}"))
                }
                Ok(response) => {
                    Fetched::Missed(Miss::Failed(format!("{url}: {}", response.status()).into()))
                }
                Err(e) => Fetched::Missed(Miss::Failed(format!("{url}: {e}").into())),
            }
        })
    }

    fn failed(&self, upstream: &Upstream, file: &str, mirror: &str, why: Blame<'_>) {
        let set = match GoUpstream::of(upstream) {
            GoUpstream::Proxy => &self.proxy,
            GoUpstream::Sumdb(_) => &self.sumdb,
        };
        let reason = match why {
            Blame::Refused(reason) => {
                self.stats.verification_failures.inc();
                self.stats.security_event(format!(
                    "verification failed: {file} from {mirror}: {reason}"
                ));
                reason
            }
            Blame::Broke(reason) => {
                self.stats.mirror_result(mirror, "failed");
                reason
            }
        };
        if let Some(index) = set.bases().position(|base| base == mirror) {
            self.demote(set, index, &format!("{mirror}: {reason}"), None);
        }
    }
}
