//! Counters shared by the whole process, kept as Prometheus metrics
//! (`prometheus-client`) so `/metrics` on the admin listener shows them as
//! they are; tests read them directly.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::access::{Kind, Record};

/// What the access log records a line for, by outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandledLabels {
    /// `request`, `module` or `tunnel`.
    pub kind: &'static str,
    pub decision: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `from_client` or `to_client`.
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok`, `invalid` (kept the old config) or `failed` (could not start it).
    pub result: &'static str,
}

/// Durations by `L`, in seconds: 1 ms to about 4.6 hours.
#[derive(Debug)]
pub struct Durations<L>(pub Family<L, Histogram, fn() -> Histogram>);

impl<L: Clone + std::hash::Hash + Eq> Default for Durations<L> {
    fn default() -> Self {
        Durations(Family::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 4.0, 12))
        }))
    }
}

/// Holds a gauge one higher while it lives.
pub struct Held(Gauge);

impl Held {
    pub fn new(gauge: &Gauge) -> Held {
        gauge.inc();
        Held(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A module request's outcome: how the cache served it, and the status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleLabels {
    /// `hit`, `miss`, `joined`, `revalidating`, `stale`, `negative`, or `none`.
    pub cache: &'static str,
    pub status: u16,
}

/// A package request of any ecosystem: which, how the cache served it,
/// and the status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PackageLabels {
    /// `go`, `pypi` or `npm`.
    pub ecosystem: &'static str,
    /// As [`ModuleLabels::cache`].
    pub cache: &'static str,
    pub status: u16,
}

/// One mirror's answer to one fetch.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorLabels {
    pub mirror: String,
    /// `ok`, `not_found` or `failed`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorLabel {
    pub mirror: String,
}

/// The newest security events kept for the status page.
const EVENTS_KEPT: usize = 20;

/// When the process started (the status page's uptime: a reload does not
/// reset it).
#[derive(Debug)]
pub struct Since(pub std::time::Instant);

impl Default for Since {
    fn default() -> Self {
        Since(std::time::Instant::now())
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    pub started: Since,
    /// The newest security events (time, what), newest last.
    pub events: std::sync::Mutex<std::collections::VecDeque<(std::time::SystemTime, String)>>,
    /// Requests received (CONNECT included).
    pub requests: Counter,
    /// Requests refused by policy (403).
    pub denied: Counter,
    /// CONNECT tunnels established.
    pub tunnels: Counter,
    /// Requests forwarded upstream (absolute-form).
    pub forwarded: Counter,
    /// Tunnels or forwards that went through the parent proxy.
    pub via_parent: Counter,
    /// Module requests (intercepted and GOPROXY endpoint) by cache outcome and status.
    pub module_requests: Family<ModuleLabels, Counter>,
    /// Package requests of every ecosystem (Go's counted in both).
    pub package_requests: Family<PackageLabels, Counter>,
    /// Fetches from each mirror, by result.
    pub mirror_requests: Family<MirrorLabels, Counter>,
    /// Times each mirror was demoted (failed, 429/503, refused bytes).
    pub mirror_demotions: Family<MirrorLabel, Counter>,
    /// Downloads whose bytes failed their checksum check (security events).
    pub verification_failures: Counter,
    /// Access log lines by kind, decision and status.
    pub handled: Family<HandledLabels, Counter>,
    /// Bytes to and from clients (request and tunnel payload).
    pub bytes: Family<DirectionLabel, Counter>,
    /// How long requests and tunnels took.
    pub durations: Durations<KindLabel>,
    /// How long each mirror took to send a response head.
    pub mirror_durations: Durations<MirrorLabel>,
    /// Client connections open now (tunnels included).
    pub connections: Gauge,
    /// `proxy.max_connections` of the config in use.
    pub connections_max: Gauge,
    /// Tunnels open now (byte tunnels and intercepted connections).
    pub tunnels_open: Gauge,
    /// Module file bytes served from the cache (hits, stale copies).
    pub cache_bytes_served: Counter,
    /// Module file bytes no mirror had to send again (from the cache, or
    /// joined to another client's download).
    pub cache_bytes_saved: Counter,
    /// Cache entries removed to stay under `cache.max_size`.
    pub cache_evictions: Counter,
    /// Module file downloads in flight (fetching, checking or storing).
    pub cache_downloads: Gauge,
    /// 1 while the cache stores files, 0 while storing fails (disk full).
    pub cache_storing: Gauge,
    /// 1 while the shared tier's bucket answers, 0 while it does not (and
    /// when there is none).
    pub cache_shared_up: Gauge,
    /// Leaf certificates minted for intercepted hosts.
    pub leaves_minted: Counter,
    /// Config reloads by result.
    pub reloads: Family<ResultLabel, Counter>,
    /// Files offered to the shared tier's bucket, by what became of them.
    pub cache_shared_uploads: Family<ResultLabel, Counter>,
    /// Unix time of the CA certificate's expiry (0: no CA loaded).
    pub ca_expiry: Gauge,
    /// The last reload: when, and its result.
    pub last_reload: std::sync::Mutex<Option<(std::time::SystemTime, String)>>,
}

impl Stats {
    /// Registers every counter (they stay shared: the registry holds clones).
    pub fn register(&self, registry: &mut Registry) {
        let counters = [
            (
                "requests",
                "Requests received, CONNECT included",
                &self.requests,
            ),
            ("denied", "Requests refused by policy", &self.denied),
            ("tunnels", "Tunnels established", &self.tunnels),
            ("forwarded", "Requests forwarded upstream", &self.forwarded),
            (
                "via_parent",
                "Tunnels and forwards through the parent proxy",
                &self.via_parent,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        let more = [
            (
                "verification_failures",
                "Downloads whose bytes failed their checksum check",
                &self.verification_failures,
            ),
            (
                "cache_bytes_served",
                "Module file bytes served from the cache",
                &self.cache_bytes_served,
            ),
            (
                "cache_bytes_saved",
                "Module file bytes no mirror had to send again (cache or joined download)",
                &self.cache_bytes_saved,
            ),
            (
                "cache_evictions",
                "Cache entries removed to stay under cache.max_size",
                &self.cache_evictions,
            ),
            (
                "leaf_certificates_minted",
                "Leaf certificates minted for intercepted hosts",
                &self.leaves_minted,
            ),
        ];
        for (name, help, counter) in more {
            registry.register(name, help, counter.clone());
        }
        self.register_gauges(registry);
        self.register_families(registry);
    }

    /// The gauges.
    fn register_gauges(&self, registry: &mut Registry) {
        let gauges = [
            (
                "connections_open",
                "Client connections open now, tunnels included",
                &self.connections,
            ),
            (
                "connections_max",
                "proxy.max_connections of the config in use",
                &self.connections_max,
            ),
            ("tunnels_open", "Tunnels open now", &self.tunnels_open),
            (
                "cache_storing",
                "1 while the cache stores files; 0 while storing fails (a full disk) and files are served without being kept",
                &self.cache_storing,
            ),
            (
                "cache_shared_up",
                "1 while the shared tier's bucket (cache.shared) answers; 0 while it fails and files come from this gateway and the mirrors, or when there is none",
                &self.cache_shared_up,
            ),
            (
                "cache_downloads_in_flight",
                "Module file downloads in flight: fetching, checking or storing",
                &self.cache_downloads,
            ),
            (
                "ca_expiry_timestamp_seconds",
                "When the local CA certificate expires (Unix time)",
                &self.ca_expiry,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
    }

    /// The metrics with labels.
    fn register_families(&self, registry: &mut Registry) {
        registry.register(
            "module_requests",
            "Module requests by cache outcome and status",
            self.module_requests.clone(),
        );
        registry.register(
            "package_requests",
            "Package requests by ecosystem (go, pypi, npm), cache outcome and status",
            self.package_requests.clone(),
        );
        registry.register(
            "mirror_requests",
            "Fetches from each mirror by result",
            self.mirror_requests.clone(),
        );
        registry.register(
            "mirror_demotions",
            "Times each mirror was demoted",
            self.mirror_demotions.clone(),
        );
        registry.register(
            "handled",
            "Requests, module requests and tunnels by decision and status",
            self.handled.clone(),
        );
        registry.register(
            "client_bytes",
            "Bytes from and to clients",
            self.bytes.clone(),
        );
        registry.register(
            "mirror_response_seconds",
            "Time to each mirror's response head",
            self.mirror_durations.0.clone(),
        );
        registry.register(
            "duration_seconds",
            "How long requests and tunnels took",
            self.durations.0.clone(),
        );
        // Every result from zero, so the first failure shows as an increase.
        for result in ["ok", "invalid", "failed"] {
            let _ = self.reloads.get_or_create(&ResultLabel { result });
        }
        registry.register("reloads", "Config reloads by result", self.reloads.clone());
        for result in crate::cache::shared::UPLOAD_RESULTS {
            let _ = self
                .cache_shared_uploads
                .get_or_create(&ResultLabel { result });
        }
        registry.register(
            "cache_shared_uploads",
            "Files stored from the mirrors and offered to the shared tier's bucket: created, existed (another gateway's copy was there), failed, or dropped (too many waiting)",
            self.cache_shared_uploads.clone(),
        );
    }

    /// Counts what an access log line records.
    pub fn served(&self, r: &Record<'_>) {
        let labels = HandledLabels {
            kind: r.kind.name(),
            decision: r.decision,
            status: r.status,
        };
        self.handled.get_or_create(&labels).inc();
        let direction = |direction| DirectionLabel { direction };
        self.bytes
            .get_or_create(&direction("from_client"))
            .inc_by(r.bytes_up);
        self.bytes
            .get_or_create(&direction("to_client"))
            .inc_by(r.bytes_down);
        let kind = KindLabel {
            kind: r.kind.name(),
        };
        self.durations
            .0
            .get_or_create(&kind)
            .observe(r.duration.as_secs_f64());
        if r.kind == Kind::Module {
            match r.cache {
                Some("hit" | "revalidating" | "stale") => {
                    self.cache_bytes_served.inc_by(r.bytes_down);
                    self.cache_bytes_saved.inc_by(r.bytes_down);
                }
                Some("joined") => {
                    self.cache_bytes_saved.inc_by(r.bytes_down);
                }
                _ => {}
            }
        }
    }

    /// A reload ended with `result`; `what` says so on the status page.
    pub fn reloaded(&self, result: &'static str, what: String) {
        self.reloads.get_or_create(&ResultLabel { result }).inc();
        *crate::cache::lock(&self.last_reload) = Some((std::time::SystemTime::now(), what));
    }

    /// Keeps a security event for the status page (the log has them all).
    pub fn security_event(&self, what: String) {
        let mut events = crate::cache::lock(&self.events);
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back((std::time::SystemTime::now(), what));
    }

    /// Package requests served 200, and how many of them from the cache.
    pub fn module_hits(&self) -> (u64, u64) {
        let count = |cache| {
            let labels = ModuleLabels { cache, status: 200 };
            self.module_requests.get_or_create(&labels).get()
        };
        let all = ["hit", "miss", "joined", "revalidating", "stale", "none"]
            .into_iter()
            .map(count)
            .sum();
        let cached = ["hit", "revalidating", "stale"]
            .into_iter()
            .map(count)
            .sum();
        (all, cached)
    }

    /// One fetch from `mirror` ended with `result`.
    pub fn mirror_result(&self, mirror: &str, result: &'static str) {
        let labels = MirrorLabels {
            mirror: mirror.to_string(),
            result,
        };
        self.mirror_requests.get_or_create(&labels).inc();
    }

    /// `mirror` sent a response head after `took`.
    pub fn mirror_answered(&self, mirror: &str, took: std::time::Duration) {
        let labels = MirrorLabel {
            mirror: mirror.to_string(),
        };
        let histogram = self.mirror_durations.0.get_or_create(&labels);
        histogram.observe(took.as_secs_f64());
    }

    pub fn demoted(&self, mirror: &str) {
        let labels = MirrorLabel {
            mirror: mirror.to_string(),
        };
        self.mirror_demotions.get_or_create(&labels).inc();
    }
}
