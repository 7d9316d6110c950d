//! Looking after the shared tier's bucket (`modgate cache … --shared`):
//! what it holds, and removing what is older than an age (nothing prunes
//! the bucket by itself). Each ecosystem re-checks its own files in it.
//! Reads through [`Storage`]; nothing here assumes a directory.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::TryStreamExt;

use super::index::{Totals, totals};
use super::key::Ecosystems;
use super::storage::{Listed, Storage, StorageError};

/// Objects and bytes by kind (files no ecosystem owns, such as leases and
/// the fleet's head, are left out).
pub async fn stats(storage: &dyn Storage, ecosystems: &Ecosystems) -> Result<Totals, StorageError> {
    let listed = storage.list("").await?;
    let owned = listed
        .iter()
        .filter_map(|l| Some((ecosystems.key_of_file(&l.name)?.kind, l.size)));
    Ok(totals(owned, &ecosystems.kinds()))
}

/// Removes the ecosystems' files last written before `older_than` ago
/// (never the fleet's signed head: it is not one of them); returns how
/// many files and bytes went.
pub async fn prune_older(
    storage: &dyn Storage,
    ecosystems: &Ecosystems,
    older_than: Duration,
) -> Result<(u64, u64), StorageError> {
    let cutoff = SystemTime::now()
        .checked_sub(older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let old: Vec<Listed> = storage
        .list("")
        .await?
        .into_iter()
        .filter(|l| ecosystems.key_of_file(&l.name).is_some() && l.modified < cutoff)
        .collect();
    let mut removed = (0, 0);
    for listed in old {
        storage.delete(&listed.name).await?;
        removed.0 += 1;
        removed.1 += listed.size;
    }
    Ok(removed)
}

/// The whole of object `name` (empty when it is gone).
pub async fn read(storage: &dyn Storage, name: &str) -> Result<Bytes, StorageError> {
    let Some(object) = storage.get(name, None).await? else {
        return Ok(Bytes::new());
    };
    let chunks: Vec<Bytes> = object.body.try_collect().await?;
    Ok(chunks.concat().into())
}
