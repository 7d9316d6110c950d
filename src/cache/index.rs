//! What the cache holds, in memory: each file's size and last use, the total,
//! and which files are being streamed (pinned). Filled by a scan of the tree
//! at start-up; eviction waits until that scan is in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use super::fresh::{Candidate, victims};
use super::key::Kind;
use super::store::Scanned;

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Slot>,
    pins: HashMap<String, u32>,
    total: u64,
    /// Bytes in downloads' temporary files: they take disk space too.
    temp: u64,
    loaded: bool,
}

#[derive(Clone, Copy)]
struct Slot {
    kind: Kind,
    size: u64,
    /// Milliseconds since the Unix epoch.
    last_used: u64,
    /// When the file's atime was last set (what a restart knows of its use).
    touched: u64,
}

/// A file's atime is refreshed at most this often (milliseconds).
const TOUCH_EVERY: u64 = 3_600_000;

/// Entries and bytes, in all and per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub entries: u64,
    pub bytes: u64,
    pub per_kind: Vec<(Kind, u64, u64)>,
}

pub struct Index {
    inner: Mutex<Inner>,
    max_size: u64,
    /// Every kind the cache's ecosystems keep, for the totals.
    kinds: Vec<Kind>,
}

/// Keeps a file from eviction while it is streamed; released on drop.
pub struct Pin {
    index: Arc<Index>,
    file: String,
}

impl Index {
    pub fn new(max_size: u64, kinds: Vec<Kind>) -> Index {
        Index {
            inner: Mutex::new(Inner::default()),
            max_size,
            kinds,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds what the start-up scan found (entries recorded since are newer and kept).
    pub fn load(&self, scanned: Vec<Scanned>) {
        let mut inner = self.lock();
        for s in scanned {
            if !inner.entries.contains_key(&s.file) {
                inner.total += s.size;
                let last_used = s.last_used.saturating_mul(1000);
                let slot = Slot {
                    kind: s.kind,
                    size: s.size,
                    last_used,
                    touched: last_used,
                };
                inner.entries.insert(s.file, slot);
            }
        }
        inner.loaded = true;
    }

    /// Records a file just stored.
    pub fn record(&self, file: &str, kind: Kind, size: u64) {
        let mut inner = self.lock();
        let now = now_millis();
        let slot = Slot {
            kind,
            size,
            last_used: now,
            touched: now,
        };
        if let Some(old) = inner.entries.insert(file.to_string(), slot) {
            inner.total -= old.size;
        }
        inner.total += size;
    }

    /// Records a file just served; `true` when its atime should be set
    /// (not done within the last hour).
    pub fn used(&self, file: &str, kind: Kind, size: u64) -> bool {
        let mut inner = self.lock();
        let now = now_millis();
        match inner.entries.get_mut(file) {
            Some(slot) => {
                slot.last_used = now;
                let stale = now.saturating_sub(slot.touched) > TOUCH_EVERY;
                if stale {
                    slot.touched = now;
                }
                stale
            }
            None => {
                let slot = Slot {
                    kind,
                    size,
                    last_used: now,
                    touched: now,
                };
                inner.entries.insert(file.to_string(), slot);
                inner.total += size;
                true
            }
        }
    }

    pub fn pin(self: &Arc<Self>, file: &str) -> Pin {
        *self.lock().pins.entry(file.to_string()).or_default() += 1;
        Pin {
            index: self.clone(),
            file: file.to_string(),
        }
    }

    /// The files to remove now to get under `max_size` (taken out of the
    /// index); none before the start-up scan is in.
    pub fn evict(&self) -> Vec<String> {
        let mut inner = self.lock();
        let total = inner.total + inner.temp;
        if !inner.loaded || total <= self.max_size {
            return Vec::new();
        }
        let candidates: Vec<Candidate<'_>> = inner
            .entries
            .iter()
            .map(|(file, slot)| Candidate {
                file,
                size: slot.size,
                last_used: slot.last_used,
                pinned: inner.pins.contains_key(file),
            })
            .collect();
        let chosen: Vec<String> = victims(&candidates, total, self.max_size)
            .into_iter()
            .map(str::to_string)
            .collect();
        for file in &chosen {
            if let Some(old) = inner.entries.remove(file) {
                inner.total -= old.size;
            }
        }
        chosen
    }

    /// `bytes` more were written to a download's temporary file.
    pub fn temp_grew(&self, bytes: u64) {
        self.lock().temp += bytes;
    }

    /// A temporary file of `bytes` was stored or removed.
    pub fn temp_gone(&self, bytes: u64) {
        let mut inner = self.lock();
        inner.temp = inner.temp.saturating_sub(bytes);
    }

    pub fn totals(&self) -> Totals {
        let inner = self.lock();
        totals(
            inner.entries.values().map(|s| (s.kind, s.size)),
            &self.kinds,
        )
    }

    /// Takes `file` out of the index (it is being removed).
    pub fn forget(&self, file: &str) {
        let mut inner = self.lock();
        if let Some(old) = inner.entries.remove(file) {
            inner.total -= old.size;
        }
    }
}

/// Sums `(kind, size)` pairs, per kind in the order of `kinds` (each
/// listed, none or not).
pub fn totals(items: impl Iterator<Item = (Kind, u64)>, kinds: &[Kind]) -> Totals {
    let mut per_kind: Vec<(Kind, u64, u64)> = kinds.iter().map(|k| (*k, 0, 0)).collect();
    let mut all = Totals::default();
    for (kind, size) in items {
        all.entries += 1;
        all.bytes += size;
        if let Some(row) = per_kind.iter_mut().find(|row| row.0 == kind) {
            row.1 += 1;
            row.2 += size;
        }
    }
    all.per_kind = per_kind;
    all
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut inner = self.index.lock();
        if let Some(count) = inner.pins.get_mut(&self.file) {
            *count -= 1;
            if *count == 0 {
                inner.pins.remove(&self.file);
            }
        }
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::testing::{ARCHIVE, FILE};

    #[test]
    fn eviction_waits_for_the_scan_and_spares_pinned_files() {
        let index = Arc::new(Index::new(100, vec![ARCHIVE, FILE]));
        index.record("a", ARCHIVE, 80);
        index.record("b", ARCHIVE, 80);
        assert!(index.evict().is_empty(), "scan not in yet");
        index.load(vec![Scanned {
            file: "old".into(),
            kind: FILE,
            size: 10,
            last_used: 1,
        }]);
        let pin = index.pin("a");
        assert_eq!(index.evict(), ["old", "b"]);
        assert_eq!(index.totals().bytes, 80);
        drop(pin);
        index.record("c", FILE, 30);
        assert_eq!(index.evict(), ["a"]);
        assert_eq!(index.totals().entries, 1);
    }

    /// Downloads' temporary files take space too: stored files make room.
    #[test]
    fn temporary_files_count_toward_the_size() {
        let index = Index::new(100, vec![ARCHIVE, FILE]);
        index.load(Vec::new());
        index.record("a", ARCHIVE, 60);
        assert!(index.evict().is_empty());
        index.temp_grew(50);
        assert_eq!(index.evict(), ["a"]);
        index.temp_gone(50);
        index.record("b", ARCHIVE, 60);
        assert!(index.evict().is_empty());
    }
}
