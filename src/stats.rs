//! Counters shared by the whole process, kept as Prometheus metrics
//! (`prometheus-client`) so `/metrics` on the admin listener shows them as
//! they are; tests read them directly.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// A module request's outcome: how the cache served it, and the status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleLabels {
    /// `hit`, `miss`, `joined`, `revalidating`, `stale`, `negative`, or `none`.
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

#[derive(Debug, Default)]
pub struct Stats {
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
    /// Fetches from each mirror, by result.
    pub mirror_requests: Family<MirrorLabels, Counter>,
    /// Times each mirror was demoted (failed, 429/503, refused bytes).
    pub mirror_demotions: Family<MirrorLabel, Counter>,
    /// Downloads whose bytes failed their checksum check (security events).
    pub verification_failures: Counter,
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
        registry.register(
            "verification_failures",
            "Downloads whose bytes failed their checksum check",
            self.verification_failures.clone(),
        );
        registry.register(
            "module_requests",
            "Module requests by cache outcome and status",
            self.module_requests.clone(),
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
    }

    /// Keeps a security event for the status page (the log has them all).
    pub fn security_event(&self, what: String) {
        let mut events = crate::cache::lock(&self.events);
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back((std::time::SystemTime::now(), what));
    }

    /// Module requests served 200, and how many of them from the cache.
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

    pub fn demoted(&self, mirror: &str) {
        let labels = MirrorLabel {
            mirror: mirror.to_string(),
        };
        self.mirror_demotions.get_or_create(&labels).inc();
    }
}
