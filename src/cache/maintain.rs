//! `modgate cache stats | verify | prune`: the cache directory looked at and
//! kept by hand, without a running gateway (one may run meanwhile: entries
//! appear and go by rename, so both see whole files). Blocking.

use super::fresh::{Candidate, victims};
use super::index::{Totals, totals};
use super::key::Kind;
use super::store::{Store, sha256_of};
use crate::gomod::dirhash::check_file;
use crate::gomod::path::case_decode;
use crate::sumdb::lookup;

/// What `verify` found.
#[derive(Debug, Default)]
pub struct Verified {
    pub checked: u64,
    /// `(file, what is wrong)`.
    pub damaged: Vec<(String, String)>,
    /// Immutable files with no record to check against (copied in by hand).
    pub unrecorded: Vec<String>,
    /// `.mod`/`.zip` files checked against the go.sum lines of a cached
    /// (proved when stored) checksum database lookup.
    pub summed: u64,
}

pub fn stats(store: &Store) -> Totals {
    totals(store.scan().into_iter().map(|s| (s.kind, s.size)))
}

/// Re-hashes every immutable file against the size and SHA-256 recorded
/// when it was stored, and every `.mod`/`.zip` against the go.sum lines of
/// its cached checksum database lookup.
pub fn verify(store: &Store) -> Verified {
    let mut report = Verified::default();
    for link in store.links() {
        let problem = "a symbolic link: never served or followed; remove it".to_string();
        report.damaged.push((link, problem));
    }
    let records = store.records();
    for entry in store.scan().into_iter().filter(|s| s.kind.immutable()) {
        if matches!(entry.kind, Kind::Mod | Kind::Zip)
            && let Some(sum) = go_sum_of(store, &entry.file)
        {
            report.summed += 1;
            if let Err(problem) =
                check_file(&store.path(&entry.file), &sum, entry.kind == Kind::Mod)
            {
                report.damaged.push((
                    entry.file.clone(),
                    format!("against the checksum database: {problem}"),
                ));
            }
        }
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

/// The `h1:` hash a cached lookup gives for a cached `.mod`/`.zip` file.
fn go_sum_of(store: &Store, file: &str) -> Option<String> {
    let (module, name) = file.rsplit_once("/@v/")?;
    let (version, ext) = name.rsplit_once('.')?;
    let (path, real_version) = (case_decode(module)?, case_decode(version)?);
    let databases = std::fs::read_dir(store.root().join("sumdb")).ok()?;
    databases.flatten().find_map(|db| {
        let answer =
            std::fs::read(db.path().join("lookup").join(format!("{module}@{version}"))).ok()?;
        let parsed = lookup::parse(&answer).ok()?;
        lookup::hash_of(parsed.record, &path, &real_version, ext == "mod")
    })
}

/// Removes the least recently used files until the cache holds at most
/// `to` bytes; returns how many files and bytes went.
pub fn prune(store: &Store, to: u64) -> (u64, u64) {
    let scanned = store.scan();
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
