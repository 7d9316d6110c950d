//! Go's own re-checks of the files it stored (`modgate cache verify`, of
//! the directory and of the shared tier's bucket): every `.mod` and `.zip`
//! against the go.sum line of the checksum database lookup stored beside
//! it (proved when it was stored).

use std::sync::Arc;

use super::dirhash::{self, check_file};
use super::path::case_decode;
use super::tree::{Go, key_of_file, kind};
use crate::cache::bucket::read as read_object;
use crate::cache::key::Ecosystems;
use crate::cache::storage::{Storage, StorageError};
use crate::cache::store::Store;
use crate::sumdb::lookup;

/// The largest file the bucket's check reads into memory (a zip's own limit).
const MAX_READ: u64 = 500 << 20;

/// What a check found: files checked, those with no lookup to check
/// against, and the damaged with why.
#[derive(Debug, Default)]
pub struct Checked {
    pub checked: u64,
    pub unchecked: u64,
    pub damaged: Vec<(String, String)>,
}

/// Every `.mod` and `.zip` in the cache directory against its stored lookup.
pub fn local(store: &Store) -> Checked {
    let mut report = Checked::default();
    let go = Ecosystems::new(vec![Arc::new(Go)]);
    for entry in store.scan(&go) {
        if !matches!(entry.kind, kind::MOD | kind::ZIP) {
            continue;
        }
        let Some(sum) = stored_sum_of(store, &entry.file) else {
            report.unchecked += 1;
            continue;
        };
        report.checked += 1;
        let go_mod = entry.kind == kind::MOD;
        if let Err(problem) = check_file(&store.path(&entry.file), &sum, go_mod) {
            let why = format!("against the checksum database: {problem}");
            report.damaged.push((entry.file, why));
        }
    }
    report
}

/// The `h1:` hash a cached lookup gives for a cached `.mod`/`.zip` file.
fn stored_sum_of(store: &Store, file: &str) -> Option<String> {
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

/// Re-hashes every `.mod` and `.zip` in the bucket against the go.sum line
/// of its checksum database lookup in the bucket (the lookup was proved
/// when the gateway that wrote it stored it).
pub async fn bucket(storage: &dyn Storage) -> Result<Checked, StorageError> {
    let listed = storage.list("").await?;
    let lookups: Vec<&str> = listed
        .iter()
        .map(|l| l.name.as_str())
        .filter(|n| key_of_file(n).is_some_and(|k| k.kind == kind::LOOKUP))
        .collect();
    let mut report = Checked::default();
    for file in &listed {
        let kind = key_of_file(&file.name).map(|k| k.kind);
        if !matches!(kind, Some(kind::MOD | kind::ZIP)) {
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
        let content = read_object(storage, &file.name).await?;
        let got = match kind {
            Some(kind::MOD) => Ok(dirhash::hash_go_mod(&content)),
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
    let answer = read_object(storage, lookup_name).await?;
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
