//! Counters shared by the whole process, kept as Prometheus metrics
//! (`prometheus-client`) so `/metrics` on the admin listener shows them as
//! they are; tests read them directly.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

#[derive(Debug, Default)]
pub struct Stats {
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
    }
}
