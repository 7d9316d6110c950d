//! `modgate cache stats | verify | prune`: the cache directory looked at and
//! kept by hand, without a running gateway (one may run meanwhile: entries
//! appear and go by rename, so both see whole files). Blocking.

use super::fresh::{Candidate, victims};
use super::index::{Totals, totals};
use super::key::Ecosystems;
use super::store::{Store, sha256_of};

/// What `verify` found.
#[derive(Debug, Default)]
pub struct Verified {
    pub checked: u64,
    /// `(file, what is wrong)`.
    pub damaged: Vec<(String, String)>,
    /// Immutable files with no record to check against (copied in by hand).
    pub unrecorded: Vec<String>,
}

pub fn stats(store: &Store, ecosystems: &Ecosystems) -> Totals {
    let scanned = store.scan(ecosystems).into_iter();
    totals(scanned.map(|s| (s.kind, s.size)), &ecosystems.kinds())
}

/// Re-hashes every immutable file against the size and SHA-256 recorded
/// when it was stored (each ecosystem checks its files against its own
/// records too).
pub fn verify(store: &Store, ecosystems: &Ecosystems) -> Verified {
    let mut report = Verified::default();
    for link in store.links() {
        let problem = "a symbolic link: never served or followed; remove it".to_string();
        report.damaged.push((link, problem));
    }
    let records = store.records();
    for entry in (store.scan(ecosystems).into_iter()).filter(|s| s.kind.immutable()) {
        let Some(meta) = records.get(&entry.file) else {
            report.unrecorded.push(entry.file);
            continue;
        };
        report.checked += 1;
        let problem = if meta.size != entry.size {
            Some(format!("size {} but {} recorded", entry.size, meta.size))
        } else {
            match sha256_of(&store.path(&entry.file)) {
                Ok(sha) if sha == meta.sha256 => None,
                Ok(sha) => Some(format!("sha256 {sha} but {} recorded", meta.sha256)),
                Err(e) => Some(format!("cannot read: {e}")),
            }
        };
        if let Some(problem) = problem {
            report.damaged.push((entry.file, problem));
        }
    }
    report
}

/// Removes the least recently used files until the cache holds at most
/// `to` bytes; returns how many files and bytes went.
pub fn prune(store: &Store, ecosystems: &Ecosystems, to: u64) -> (u64, u64) {
    let scanned = store.scan(ecosystems);
    let total = scanned.iter().map(|s| s.size).sum();
    let candidates: Vec<Candidate<'_>> = scanned
        .iter()
        .map(|s| Candidate {
            file: &s.file,
            size: s.size,
            last_used: s.last_used,
            pinned: false,
        })
        .collect();
    let mut removed = (0, 0);
    for file in victims(&candidates, total, to) {
        let size = scanned
            .iter()
            .find(|s| s.file == file)
            .map_or(0, |s| s.size);
        if store.remove(file).is_ok() {
            removed.0 += 1;
            removed.1 += size;
        }
    }
    removed
}
