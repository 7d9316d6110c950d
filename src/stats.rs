//! Counters shared by the whole process (read by tests and, later, /metrics).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

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
