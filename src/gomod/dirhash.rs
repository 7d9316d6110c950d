//! The go command's `h1:` hashes (golang.org/x/mod/sumdb/dirhash Hash1):
//! SHA-256 over the lines `<hex sha256 of the file>  <name>\n` of every file,
//! sorted by name, in standard base64. A module zip hashes its entries by
//! their full names (`HashZip`); a go.mod hashes as the one file `go.mod`.

use std::io::{Cursor, Read, Seek};
use std::path::Path;

use aws_lc_rs::digest;

use crate::sha256::to_array;
pub use crate::sha256::{hex, stream as sha256_stream};
use base64::Engine;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("cannot read the zip: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("cannot read the zip: {0}")]
    Io(#[from] std::io::Error),
    #[error("file name with a newline in the zip")]
    BadName,
    #[error(
        "the zip holds more than {UNZIPPED_LIMIT} bytes uncompressed, more than the go command accepts"
    )]
    TooLarge,
}

/// The most a module zip may hold uncompressed (the go command's limit):
/// a mirror sending a compression bomb is cut there, not inflated.
pub const UNZIPPED_LIMIT: u64 = 500 << 20;

/// `h1:` of named file hashes (the names need not be sorted).
pub fn hash1(mut files: Vec<(String, [u8; 32])>) -> String {
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut summary = digest::Context::new(&digest::SHA256);
    for (name, sha) in &files {
        summary.update(format!("{}  {name}\n", hex(sha)).as_bytes());
    }
    let sum = summary.finish();
    format!(
        "h1:{}",
        base64::engine::general_purpose::STANDARD.encode(sum.as_ref())
    )
}

/// The hash go.sum records for a go.mod file (`<module> <version>/go.mod h1:…`).
pub fn hash_go_mod(content: &[u8]) -> String {
    hash1(vec![("go.mod".to_string(), sha256(content))])
}

/// The hash go.sum records for a module zip (`<module> <version> h1:…`).
pub fn hash_zip(path: &Path) -> Result<String, HashError> {
    hash_zip_within(path, UNZIPPED_LIMIT)
}

/// `hash_zip`, refusing more than `limit` bytes uncompressed.
fn hash_zip_within(path: &Path, limit: u64) -> Result<String, HashError> {
    hash_archive(std::fs::File::open(path)?, limit)
}

/// The `h1:` of the zip `reader` reads, refusing more than `limit` bytes
/// uncompressed.
fn hash_archive(reader: impl Read + Seek, limit: u64) -> Result<String, HashError> {
    let mut archive = zip::ZipArchive::new(reader)?;
    let mut files = Vec::with_capacity(archive.len());
    let mut left = limit;
    for i in 0..archive.len() {
        let entry = archive.by_index(i)?;
        let name = entry.name()?.to_string();
        if name.contains('\n') {
            return Err(HashError::BadName);
        }
        let mut counted = Read::take(entry, left + 1);
        let sha = sha256_stream(&mut counted)?;
        let read = left + 1 - counted.limit();
        left = left.checked_sub(read).ok_or(HashError::TooLarge)?;
        files.push((name, sha));
    }
    Ok(hash1(files))
}

/// Checks that the file at `path` (a module zip, or with `go_mod` a
/// go.mod) has the `h1:` hash `expected`; the error names both hashes.
pub fn check_file(path: &Path, expected: &str, go_mod: bool) -> Result<(), String> {
    let got = if go_mod {
        hash_go_mod(&std::fs::read(path).map_err(|e| e.to_string())?)
    } else {
        hash_zip(path).map_err(|e| e.to_string())?
    };
    compare(&got, expected)
}

/// The `h1:` of a zip in memory, refusing more than `limit` bytes uncompressed.
pub fn hash_zip_bytes(content: &[u8], limit: u64) -> Result<String, HashError> {
    hash_archive(Cursor::new(content), limit)
}

/// `Ok` when the hashes are the same; the error names both.
pub fn compare(got: &str, expected: &str) -> Result<(), String> {
    if got == expected {
        Ok(())
    } else {
        Err(format!("hash mismatch: expected {expected}, got {got}"))
    }
}

fn sha256(content: &[u8]) -> [u8; 32] {
    to_array(digest::digest(&digest::SHA256, content))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zip that inflates past the limit is refused, not hashed whole.
    #[test]
    fn a_compression_bomb_is_cut_at_the_limit() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.zip");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let zeros = vec![0u8; 1 << 20];
        for (name, mib) in [("m@v1.0.0/a", 3), ("m@v1.0.0/b", 2)] {
            zip.start_file(name, options).unwrap();
            for _ in 0..mib {
                zip.write_all(&zeros).unwrap();
            }
        }
        zip.finish().unwrap();
        assert!(
            std::fs::metadata(&path).unwrap().len() < 64 << 10,
            "a bomb is small"
        );
        assert!(matches!(
            hash_zip_within(&path, 4 << 20),
            Err(HashError::TooLarge)
        ));
        assert!(
            hash_zip_within(&path, 5 << 20).is_ok(),
            "exactly the limit is fine"
        );
    }

    /// Vectors from the go command: go.sum lines of published modules.
    #[test]
    fn go_mod_hashes_match_the_go_command() {
        // rsc.io/quote v1.5.2/go.mod h1:LzX7hefJvL54yjefDEDHNONDjII0t9xZLPXsUe+TKr0=
        assert_eq!(
            hash_go_mod(b"module \"rsc.io/quote\"\n\nrequire \"rsc.io/sampler\" v1.3.0\n"),
            "h1:LzX7hefJvL54yjefDEDHNONDjII0t9xZLPXsUe+TKr0="
        );
    }
}
