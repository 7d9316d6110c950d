//! The check a downloaded `.mod` or `.zip` must pass: its go.sum hash. A
//! zip kept in a file is walked as it is written, so once it is complete
//! only its central directory is left to read.

use std::sync::{Arc, Mutex};

use super::dirhash::{HashError, check_bytes, check_file, compare, hash_zip_bytes};
use super::zipstream::{ZipWalk, check_zip_passed};
use crate::cache::flight::{Check, Content, Refusal, Tap};
use crate::cache::lock;

/// Zips up to this size, inflating to at most `INLINE_UNZIPPED`, are
/// hashed on the async thread.
const INLINE: usize = 64 << 10;
const INLINE_UNZIPPED: u64 = 256 << 10;

/// The check of a module file (`go_mod`: a go.mod, else a zip) whose
/// go.sum hash `expected` gives (it may still be coming: a lookup started
/// with the download).
pub fn module_file<F>(expected: F, go_mod: bool) -> Check
where
    F: Future<Output = Result<String, Refusal>> + Send + 'static,
{
    let walk = Arc::new(Mutex::new((!go_mod).then(ZipWalk::default)));
    let tap = (!go_mod).then(|| {
        let walk = walk.clone();
        Box::new(move |bytes: &[u8]| {
            if let Some(walk) = lock(&walk).as_mut() {
                walk.feed(bytes);
            }
        }) as Tap
    });
    let verdict = move |content: Content| async move {
        let expected = expected.await?;
        let passed = lock(&walk).take().and_then(ZipWalk::finish);
        let checked = match content {
            // A go.mod, or a zip of a few small files, is hashed here at once:
            // less work than a trip to the blocking pool, which on a busy
            // gateway can wait milliseconds for a thread.
            Content::Memory(bytes) if go_mod => check_bytes(&bytes, &expected, true),
            Content::Memory(bytes) if let Some(got) = small_zip(&bytes) => {
                got.and_then(|got| compare(&got, &expected))
            }
            content => tokio::task::spawn_blocking(move || match content {
                Content::Memory(bytes) => check_bytes(&bytes, &expected, go_mod),
                Content::File(path) if go_mod => check_file(&path, &expected, true),
                Content::File(path) => check_zip_passed(&path, &expected, passed),
            })
            .await
            .map_err(|e| Refusal::Unchecked(e.to_string()))?,
        };
        checked.map_err(Refusal::Bad)
    };
    Check {
        tap,
        ..Check::new(verdict)
    }
}

/// The `h1:` of a small zip, hashed at once; `None` when it is too large
/// for that (it inflates to more), to be hashed off the async threads.
fn small_zip(content: &[u8]) -> Option<Result<String, String>> {
    if content.len() > INLINE {
        return None;
    }
    match hash_zip_bytes(content, INLINE_UNZIPPED) {
        Err(HashError::TooLarge) => None,
        hashed => Some(hashed.map_err(|e| e.to_string())),
    }
}
