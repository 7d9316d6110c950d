//! Serves intercepted Go module requests: `supported` answered here, private
//! modules answered 403 here (never sent anywhere), everything else through
//! the cache (when enabled and the request is cacheable) or straight from
//! the mirrors, streamed to the client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::fetch::Mirrors;
use super::path::{Plan, plan};
use super::verify::{Verifier, VerifyError};
use crate::access;
use crate::mirrors::{Health, MirrorSet};

use crate::cache::{Cache, Fetched, How, Miss, Outcome, Settings};
use crate::config::{GomodConfig, OnMirrorFailure};
use crate::message::{Body, plain_text};
use crate::rules::Via;
use crate::stats::{ModuleLabels, Stats};
use crate::tls::roots::{RootsError, client_config};
use crate::upstream::{Dialer, MirrorClient};

/// Everything the handler needs; built once per config.
pub struct Gomod {
    config: GomodConfig,
    stats: Arc<Stats>,
    mirrors: Arc<Mirrors>,
    /// The shared tier in front of the mirrors, when `cache.shared` is set.
    shared: Option<Arc<crate::cache::shared::Shared>>,
    cache: Option<Cache>,
}

#[derive(Debug, thiserror::Error)]
pub enum GomodError {
    #[error("a trusted CA file (upstream.ca_file or gomod.mirror_ca_file) {0}")]
    Roots(#[from] RootsError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("cache.dir {dir}: {source}")]
    Cache {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cache.shared: {0}")]
    Shared(#[from] crate::cache::storage::StorageError),
}

/// A mirror's first health probe: `module` or `sumdb`, the mirror, and
/// how long connecting took or why it failed.
pub type Probe = (&'static str, String, Result<std::time::Duration, String>);

/// One answer and what the access log says of it.
struct Answer {
    response: Response<Body>,
    /// `None`: the cache was not used.
    cache: Option<How>,
    mirror: Option<Arc<str>>,
}

impl Answer {
    fn plain(response: Response<Body>) -> Answer {
        Answer {
            response,
            cache: None,
            mirror: None,
        }
    }
}

impl Gomod {
    /// `cache`: `[cache]` when it is enabled. `running`: the cache of the
    /// config being replaced (a reload), fed by these mirrors from now on;
    /// its `[cache]` settings stay until a restart.
    pub fn new(
        config: &GomodConfig,
        cache: Option<Settings>,
        dialer: Arc<Dialer>,
        via: Via,
        stats: Arc<Stats>,
        running: Option<&Cache>,
    ) -> Result<Gomod, GomodError> {
        let peers = cache
            .as_ref()
            .and_then(|c| c.shared.as_ref())
            .map(|s| s.peers.clone())
            .unwrap_or_default();
        let mirrors = Arc::new(mirrors(config, &peers, (dialer, via), stats.clone())?);
        let mut shared_tier = None;
        let cache = match (cache, running) {
            (None, _) => None,
            (Some(settings), running) => {
                let dir = settings.dir.clone();
                let (source, shared) =
                    crate::ecosystems::source_for(&settings, mirrors.clone(), &stats)?;
                shared_tier = shared;
                let cache = match running {
                    Some(cache) => {
                        if *cache.settings() != settings {
                            tracing::warn!(
                                "[cache] changed: the new settings take effect at the next restart; the running cache stays"
                            );
                        }
                        cache.clone()
                    }
                    None => {
                        let meters = crate::cache::Meters {
                            evictions: stats.cache_evictions.clone(),
                            downloads: stats.cache_downloads.clone(),
                            storing: stats.cache_storing.clone(),
                        };
                        let all = crate::ecosystems::all();
                        Cache::open(settings, all, meters).map_err(|source| GomodError::Cache {
                            dir: dir.clone(),
                            source,
                        })?
                    }
                };
                let fleet = shared_tier.as_ref().map(|t| t.storage());
                let checker = verifier(config, cache.settings(), fleet)?;
                cache.rewire(super::tree::GO, source, checker);
                Some(cache)
            }
        };
        Ok(Gomod {
            mirrors,
            shared: shared_tier,
            cache,
            stats,
            config: config.clone(),
        })
    }

    /// The shared tier's start-up probe, when there is one.
    pub async fn probe_shared(&self) -> Option<String> {
        Some(self.shared.as_ref()?.probe().await)
    }

    /// The shared tier's bucket, whether it answers, and its object count
    /// at start, when there is one.
    pub fn shared_state(&self) -> Option<(String, bool, Option<usize>)> {
        self.shared.as_ref().map(|s| s.state())
    }

    /// Module mirrors up for readiness (not failing repeatedly within
    /// the readiness window), of how many.
    pub fn ready_mirrors(&self) -> (usize, usize) {
        self.mirrors.proxy.ready()
    }

    /// Module mirrors, then checksum database mirrors (`module`, `sumdb`),
    /// with their health.
    pub fn mirror_health(&self) -> Vec<(&'static str, Health)> {
        let module = self
            .mirrors
            .proxy
            .health()
            .into_iter()
            .map(|h| ("module", h));
        let sumdb = self
            .mirrors
            .sumdb
            .health()
            .into_iter()
            .map(|h| ("sumdb", h));
        module.chain(sumdb).collect()
    }

    /// Connects once to every mirror, concurrently, sending nothing: the
    /// first health probe. Empty under `cache.offline` (no mirror is dialled).
    pub async fn probe_mirrors(&self) -> Vec<Probe> {
        if self.cache.as_ref().is_some_and(|c| c.settings().offline) {
            return Vec::new();
        }
        let sumdb_host = self.config.sumdb_hosts.first().cloned().unwrap_or_default();
        let sets = [
            (
                "module",
                &self.mirrors.proxy,
                self.mirrors.proxy_host.clone(),
            ),
            ("sumdb", &self.mirrors.sumdb, sumdb_host),
        ];
        let mut probes = tokio::task::JoinSet::new();
        for (kind, set, host) in sets {
            for base in set.bases() {
                let url = if base == "origin" {
                    format!("https://{host}/")
                } else {
                    base.to_string()
                };
                let (mirrors, base) = (self.mirrors.clone(), base.to_string());
                probes.spawn(async move {
                    let reached = mirrors.client.reach(&url).await;
                    (kind, base, reached)
                });
            }
        }
        let mut done = Vec::new();
        while let Some(Ok(probe)) = probes.join_next().await {
            done.push(probe);
        }
        done.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        done
    }

    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    /// Serves `req` from `client`, which arrived for `host` (a proxy or
    /// sumdb host) by `entry` (`intercept` or `endpoint`).
    pub async fn serve(
        &self,
        client: SocketAddr,
        host: &str,
        entry: &'static str,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let started = Instant::now();
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let plan = plan(host, path, &self.config.sumdb_hosts, &self.config.private);
        let planned = plan.name();
        let answer = if req.method() == Method::GET || req.method() == Method::HEAD {
            self.carry_out(plan).await
        } else {
            Answer::plain(plain_text(
                StatusCode::METHOD_NOT_ALLOWED,
                "modgate: module requests are GET or HEAD\n",
            ))
        };
        let status = answer.response.status().as_u16();
        let cache = answer.cache.map(How::name);
        let labels = ModuleLabels {
            cache: cache.unwrap_or("none"),
            status,
        };
        self.stats.module_requests.get_or_create(&labels).inc();
        let labels = crate::stats::PackageLabels {
            ecosystem: super::tree::GO,
            cache: labels.cache,
            status,
        };
        self.stats.package_requests.get_or_create(&labels).inc();
        let line = access::Line {
            plan: planned,
            cache,
            mirror: answer.mirror,
            ..access::Line::new(client, &req, format!("{host}{path}"), entry, started)
        };
        line.on_sent(self.stats.clone(), answer.response)
    }

    async fn carry_out(&self, plan: Plan) -> Answer {
        let key = match plan {
            Plan::Fetch(key) => key,
            Plan::Own(own) => {
                let (status, text) = own.answer();
                return Answer::plain(plain_text(status, text));
            }
        };
        let Some(cache) = &self.cache else {
            return match self.mirrors.fetch(&key.upstream, &key.suffix).await {
                Fetched::Found { response, mirror } => Answer {
                    response,
                    cache: None,
                    mirror: Some(Arc::from(mirror.as_str())),
                },
                Fetched::Missed(miss) => Answer::plain(self.missed(&miss)),
            };
        };
        match cache.get(&key).await {
            Outcome::Served {
                response,
                how,
                mirror,
            } => Answer {
                response,
                cache: Some(how),
                mirror,
            },
            Outcome::Missed(miss, how) => Answer {
                response: self.missed(&miss),
                cache: Some(how),
                mirror: None,
            },
        }
    }

    fn missed(&self, miss: &Miss) -> Response<Body> {
        match miss {
            Miss::NotFound(reason) => plain_text(
                StatusCode::NOT_FOUND,
                format!("modgate: not found ({reason})\n"),
            ),
            Miss::Failed(reason) => {
                let status = match self.config.on_mirror_failure {
                    OnMirrorFailure::NotFound => StatusCode::NOT_FOUND,
                    OnMirrorFailure::BadGateway => StatusCode::BAD_GATEWAY,
                };
                plain_text(status, format!("modgate: every mirror failed ({reason})\n"))
            }
        }
    }
}

/// The checksum verification `config` asks for, over `cache`'s directory.
/// The checksum verifier, keeping the fleet's head in `fleet` (the shared
/// tier's bucket and timeout) when there is one.
fn verifier(
    config: &GomodConfig,
    cache: &Settings,
    fleet: Option<(Arc<dyn crate::cache::storage::Storage>, std::time::Duration)>,
) -> Result<Option<Arc<dyn crate::cache::Checker>>, GomodError> {
    let checks = &config.verification;
    if !checks.verify {
        return Ok(None);
    }
    let skip = vec![config.private.clone(), checks.nosumdb.clone()];
    let verifier = Verifier::new(&checks.sumdb_key, skip, &cache.dir, fleet)?;
    Ok(Some(Arc::new(verifier)))
}

/// A module request's access line, written when its body has been sent.
/// The mirror sets and their client. "origin" names the real hosts, which
/// the admin named too (allowed past `deny_destinations` like any mirror).
/// The mirrors; `peers` (the fleet's gateways) are admin-named too.
fn mirrors(
    config: &GomodConfig,
    peers: &[String],
    (dialer, via): (Arc<Dialer>, Via),
    stats: Arc<Stats>,
) -> Result<Mirrors, GomodError> {
    let tls = client_config(&config.ca_files())?;
    let origin = config
        .mirrors
        .iter()
        .chain(&config.sumdb_mirrors)
        .any(|m| m == "origin");
    let real_hosts = config.hosts().into_iter().filter(|_| origin);
    let admin_named: Vec<String> = config
        .mirrors
        .iter()
        .chain(&config.sumdb_mirrors)
        .cloned()
        .chain(real_hosts.map(|h| format!("https://{h}")))
        .chain(peers.iter().map(|p| format!("http://{p}")))
        .collect();
    Ok(Mirrors {
        proxy: MirrorSet::new(&config.mirrors, config.demote_for),
        sumdb: MirrorSet::new(&config.sumdb_mirrors, config.demote_for),
        client: MirrorClient::new(dialer, via, &admin_named, tls, config.mirror_timeout),
        proxy_host: config
            .proxy_hosts
            .first()
            .cloned()
            .unwrap_or_else(|| "proxy.golang.org".into()),
        stats,
    })
}
