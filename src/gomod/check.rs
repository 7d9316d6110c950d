//! The check a downloaded `.mod` or `.zip` must pass: its go.sum hash. A
//! zip kept in a file is walked as it is written, so once it is complete
//! only its central directory is left to read.

use std::sync::{Arc, Mutex};

use super::dirhash::{check_bytes, check_file};
use super::zipstream::{ZipWalk, check_zip_passed};
use crate::cache::flight::{Check, Content, Refusal, Tap};
use crate::cache::lock;

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
            // A go.mod is a few hundred bytes: hashed here, at once.
            Content::Memory(bytes) if go_mod => check_bytes(&bytes, &expected, true),
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
