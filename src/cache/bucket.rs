//! Looking after the shared tier's bucket (`modgate cache … --shared`):
//! what it holds, removing what is older than an age (nothing prunes the
//! bucket by itself), and re-checking every `.mod` and `.zip` in it
//! against the checksum database lookups it also holds. Reads through
//! [`Storage`]; nothing here assumes a directory.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::TryStreamExt;

use super::index::{Totals, totals};
use super::key::{Kind, key_of_file};
use super::storage::{Listed, Storage, StorageError};
use crate::gomod::dirhash;
use crate::gomod::path::case_decode;
use crate::sumdb::lookup;

/// The largest file `verify` reads into memory (a zip's own limit).
const MAX_READ: u64 = 500 << 20;

/// Objects and bytes by kind (files that are not module or checksum
/// database requests, such as leases and the fleet's head, are left out).
pub async fn stats(storage: &dyn Storage) -> Result<Totals, StorageError> {
    let listed = storage.list("").await?;
    Ok(totals(listed.iter().filter_map(|l| {
        Some((key_of_file(&l.name)?.kind, l.size))
    })))
}

/// Removes the module and checksum database files last written before
/// `older_than` ago (never the fleet's signed head: it is not one of
/// them); returns how many files and bytes went.
pub async fn prune_older(
    storage: &dyn Storage,
    older_than: Duration,
) -> Result<(u64, u64), StorageError> {
    let cutoff = SystemTime::now()
        .checked_sub(older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let old: Vec<Listed> = storage
        .list("")
        .await?
        .into_iter()
        .filter(|l| key_of_file(&l.name).is_some() && l.modified < cutoff)
        .collect();
    let mut removed = (0, 0);
    for listed in old {
        storage.delete(&listed.name).await?;
        removed.0 += 1;
        removed.1 += listed.size;
    }
    Ok(removed)
}

/// What `verify` found: files checked, and the damaged with why.
#[derive(Debug, Default)]
pub struct Checked {
    pub checked: u64,
    /// `.mod`/`.zip` files with no lookup in the bucket to check against.
    pub unchecked: u64,
    pub damaged: Vec<(String, String)>,
}

/// Re-hashes every `.mod` and `.zip` in the bucket against the go.sum line
/// of its checksum database lookup in the bucket (the lookup was proved
/// when the gateway that wrote it stored it).
pub async fn verify(storage: &dyn Storage) -> Result<Checked, StorageError> {
    let listed = storage.list("").await?;
    let lookups: Vec<&str> = listed
        .iter()
        .map(|l| l.name.as_str())
        .filter(|n| key_of_file(n).is_some_and(|k| k.kind == Kind::Lookup))
        .collect();
    let mut report = Checked::default();
    for file in &listed {
        let kind = key_of_file(&file.name).map(|k| k.kind);
        if !matches!(kind, Some(Kind::Mod | Kind::Zip)) {
            continue;
        }
        let Some(sum) = go_sum_of(storage, &lookups, &file.name).await? else {
            report.unchecked += 1;
            continue;
        };
        report.checked += 1;
        if file.size > MAX_READ {
            report.damaged.push((
                file.name.clone(),
                format!("{} bytes: larger than a module zip may be", file.size),
            ));
            continue;
        }
        let content = read(storage, &file.name).await?;
        let got = match kind {
            Some(Kind::Mod) => Ok(dirhash::hash_go_mod(&content)),
            _ => dirhash::hash_zip_bytes(&content, MAX_READ).map_err(|e| e.to_string()),
        };
        if let Err(problem) = got.and_then(|got| dirhash::compare(&got, &sum)) {
            report.damaged.push((
                file.name.clone(),
                format!("against the checksum database: {problem}"),
            ));
        }
    }
    Ok(report)
}

/// The `h1:` hash the bucket's lookup gives for its `.mod`/`.zip` `file`.
async fn go_sum_of(
    storage: &dyn Storage,
    lookups: &[&str],
    file: &str,
) -> Result<Option<String>, StorageError> {
    let Some((module, name)) = file.rsplit_once("/@v/") else {
        return Ok(None);
    };
    let Some((version, ext)) = name.rsplit_once('.') else {
        return Ok(None);
    };
    let (Some(path), Some(real_version)) = (case_decode(module), case_decode(version)) else {
        return Ok(None);
    };
    let suffix = format!("/lookup/{module}@{version}");
    let Some(lookup_name) = lookups.iter().find(|n| n.ends_with(&suffix)) else {
        return Ok(None);
    };
    let answer = read(storage, lookup_name).await?;
    let Ok(parsed) = lookup::parse(&answer) else {
        return Ok(None);
    };
    Ok(lookup::hash_of(
        parsed.record,
        &path,
        &real_version,
        ext == "mod",
    ))
}

async fn read(storage: &dyn Storage, name: &str) -> Result<Bytes, StorageError> {
    let Some(object) = storage.get(name, None).await? else {
        return Ok(Bytes::new());
    };
    let chunks: Vec<Bytes> = object.body.try_collect().await?;
    Ok(chunks.concat().into())
}
