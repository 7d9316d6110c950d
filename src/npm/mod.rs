//! npm packages through the gateway: a package's packument from the
//! healthiest npm mirror, every tarball URL rewritten to come back through
//! modgate, each tarball checked against the `dist.integrity` (sha512) or
//! `dist.shasum` its packument gave before it is stored or its last bytes
//! are released, all kept in the cache.

mod handler;
pub mod packument;
pub mod tree;
pub mod warm;

pub use handler::Npm;

use std::sync::Arc;

use aws_lc_rs::digest;

use crate::cache::flight::MakeCheck;
use crate::cache::key::Key;
use crate::cache::{Cache, Checker};

/// npm as its mirrors serve it: a packument lists each version's tarball
/// with its hash.
pub struct Index;

impl crate::indexed::Index for Index {
    fn index_url(&self, base: &str, name: &str) -> String {
        format!("{base}/{}", name.replace('/', "%2f"))
    }

    fn locations(&self, _: &str, document: &str) -> Vec<(String, String)> {
        serde_json::from_str(document)
            .map(|doc| packument::locations(&doc))
            .unwrap_or_default()
    }

    fn file_of<'a>(&self, key: &'a Key) -> Option<(&'a str, &'a str)> {
        let path = key.file.strip_prefix("npm/tarballs/")?;
        let (name, hash, _) = tree::split_tarball(path)?;
        Some((name, hash))
    }

    fn package_of<'a>(&self, key: &'a Key) -> &'a str {
        let file = key
            .file
            .strip_prefix("npm/packuments/")
            .unwrap_or(&key.file);
        file.strip_suffix(".json").unwrap_or(file)
    }

    fn describe(&self, file: &str) -> String {
        let path = file.strip_prefix("npm/tarballs/").unwrap_or(file);
        match tree::split_tarball(path) {
            Some((name, _, tarball)) => {
                let base = name.rsplit('/').next().unwrap_or(name);
                let version = tarball
                    .strip_prefix(&format!("{base}-"))
                    .and_then(|v| v.strip_suffix(".tgz"))
                    .unwrap_or("?");
                format!("{name} {version} ({tarball})")
            }
            None => file.to_string(),
        }
    }
}

/// Tarballs are checked against their packument's hash.
pub struct Hashes;

impl Checker for Hashes {
    fn check_for(&self, _: &Cache, key: &Key) -> Option<MakeCheck> {
        let path = key.file.strip_prefix("npm/tarballs/")?;
        let (_, hash, _) = tree::split_tarball(path)?;
        let (algorithm, want) = match hash.split_once('-')? {
            ("sha512", hex) => (&digest::SHA512, hex.to_string()),
            ("sha1", hex) => (&digest::SHA1_FOR_LEGACY_USE_ONLY, hex.to_string()),
            _ => return None,
        };
        Some(Arc::new(move || {
            crate::indexed::hash_check(algorithm, want.clone(), "its packument")
        }))
    }
}
