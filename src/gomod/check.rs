//! The check a downloaded `.mod` or `.zip` must pass: its go.sum hash. A
//! zip is walked as it arrives (beside the writer, off the async threads),
//! so once it is complete only its central directory is left to read.

use std::sync::{Arc, Mutex};

use super::dirhash::{HashError, check_file, compare, hash_go_mod, hash_zip_bytes};
use super::zipstream::{ZipWalk, hash_bytes_passed, hash_zip_passed};
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
            Content::Memory(bytes) if go_mod => compare(&hash_go_mod(&bytes), &expected),
            Content::Memory(bytes) if let Some(got) = small_zip(&bytes) => {
                got.and_then(|got| compare(&got, &expected))
            }
            content => tokio::task::spawn_blocking(move || {
                let got = match content {
                    Content::File(path) if go_mod => return check_file(&path, &expected, true),
                    Content::Memory(zip) => hash_bytes_passed(&zip, passed),
                    Content::File(path) => hash_zip_passed(&path, passed),
                };
                compare(&got.map_err(|e| e.to_string())?, &expected)
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use bytes::Bytes;

    use super::*;
    use crate::gomod::dirhash::hash_zip;

    /// A module zip as the go command makes them: deflated entries, each
    /// followed by a data descriptor; about 2 MiB, too large to check inline.
    fn go_zip() -> Vec<u8> {
        let mut zip = zip::ZipWriter::new_stream(Vec::new());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("m@v1.0.0/go.mod", options).unwrap();
        zip.write_all(b"module m\n").unwrap();
        zip.start_file("m@v1.0.0/data.bin", options).unwrap();
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 97) as u8).collect();
        zip.write_all(&data).unwrap();
        zip.finish().unwrap().into_inner()
    }

    /// Runs a zip check the way a flight does: the tap sees the bytes in
    /// pieces, then the verdict judges the complete content.
    async fn run(zip: &[u8], expected: &str, in_file: bool) -> Result<(), Refusal> {
        let expected = expected.to_string();
        let Check { tap, verdict } = module_file(async { Ok(expected) }, false);
        let mut tap = tap.expect("a zip is walked");
        zip.chunks(64 << 10).for_each(&mut tap);
        let dir = tempfile::tempdir().unwrap();
        let content = if in_file {
            let path = dir.path().join("m.zip");
            std::fs::write(&path, zip).unwrap();
            Content::File(path)
        } else {
            Content::Memory(Bytes::copy_from_slice(zip))
        };
        verdict(content).await
    }

    /// Once walked, a complete zip's check reads its central directory,
    /// not every byte again: a zip whose data is damaged after the walk saw
    /// it (its directory intact) still passes, which it would not if the
    /// check hashed it whole.
    #[tokio::test]
    async fn a_walked_zip_is_not_hashed_a_second_time() {
        let zip = go_zip();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.zip");
        std::fs::write(&path, &zip).unwrap();
        let right = hash_zip(&path).unwrap();
        let Check { tap, verdict } = module_file(async move { Ok(right) }, false);
        zip.chunks(64 << 10).for_each(tap.expect("a zip is walked"));
        let mut damaged = zip.clone();
        damaged[zip.len() / 2] ^= 0xff;
        std::fs::write(&path, &damaged).unwrap();
        assert!(hash_zip(&path).is_err(), "hashed whole, the damage shows");
        assert!(verdict(Content::File(path)).await.is_ok());
    }

    #[tokio::test]
    async fn a_walked_zip_passes_with_its_hash_and_fails_with_another() {
        let zip = go_zip();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.zip");
        std::fs::write(&path, &zip).unwrap();
        let right = hash_zip(&path).unwrap();
        let wrong = "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        for in_file in [true, false] {
            assert!(run(&zip, &right, in_file).await.is_ok(), "file: {in_file}");
            let refused = run(&zip, wrong, in_file).await;
            assert!(
                matches!(&refused, Err(Refusal::Bad(why)) if why.contains("hash mismatch")),
                "file: {in_file}: {refused:?}"
            );
        }
    }
}
