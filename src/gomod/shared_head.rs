//! One checksum database tree head for a fleet: the newest verified
//! signed head lives in the shared tier's bucket (`sumdb/<db>/modgate-head`)
//! and moves forward only by compare-and-swap. A gateway reads it before
//! it verifies, adopts it once it is proved consistent with its own, and
//! publishes each newer head it verified; so a history forked from what
//! any gateway of the fleet verified is refused by every one of them,
//! restarts included. The bucket failing leaves each gateway on its own
//! head, as without a fleet.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;

use crate::cache::storage::{Storage, Swapped, Version};
use crate::sumdb::head::{Head, Key};

/// Tries at moving the head forward against other gateways doing the same.
const SWAP_TRIES: usize = 5;
/// The largest head object read.
const MAX_HEAD: usize = 16 << 10;

pub struct SharedHead {
    storage: Arc<dyn Storage>,
    name: String,
    timeout: Duration,
}

impl SharedHead {
    pub fn new(storage: Arc<dyn Storage>, db: &str, timeout: Duration) -> SharedHead {
        SharedHead {
            storage,
            name: format!("sumdb/{db}/modgate-head"),
            timeout,
        }
    }

    /// The bucket's head, verified by `key`, and its version; `None` when
    /// there is none, the bucket does not answer in time, or it does not
    /// verify (logged: someone wrote the bucket who should not have).
    pub async fn read(&self, key: &Key) -> Option<(Head, Version)> {
        let read = async {
            let object = self.storage.get(&self.name, None).await.ok()??;
            if object.size > MAX_HEAD as u64 {
                return None;
            }
            let version = object.version;
            let chunks: Vec<Bytes> = object.body.try_collect().await.ok()?;
            Some((chunks.concat(), version))
        };
        let (signed, version) = tokio::time::timeout(self.timeout, read).await.ok()??;
        match key.verify(&signed) {
            Ok(head) => Some((head, version)),
            Err(e) => {
                tracing::error!(security = true, bucket = %self.storage.describe(), object = %self.name, error = %e,
                    "sumdb: the shared signed head does not verify; ignored");
                None
            }
        }
    }

    /// Moves the bucket's head forward to `head`, unless it already is at
    /// or past it. Bounded; a bucket that does not answer is left as it is.
    pub async fn advance(&self, key: &Key, head: &Head) {
        for _ in 0..SWAP_TRIES {
            let current = self.read(key).await;
            if current
                .as_ref()
                .is_some_and(|(now, _)| now.size >= head.size)
            {
                return;
            }
            let expected = current.map(|(_, version)| version);
            let data = Bytes::from(head.signed.clone());
            let swap = self.storage.swap(&self.name, expected.as_ref(), data);
            match tokio::time::timeout(self.timeout, swap).await {
                Ok(Ok(Swapped::Done(_))) => return,
                Ok(Ok(Swapped::Conflict)) => continue,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "sumdb: cannot move the shared signed head");
                    return;
                }
                Err(_) => return,
            }
        }
    }
}
