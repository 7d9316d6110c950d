//! A PyPI file is checked against the sha256 its index page gave (which
//! names it in the cache tree): hashed as it streams, judged before it is
//! stored or its last bytes reach a client. A mismatch is the mirror's
//! fault, a security event, and the next mirror is tried.

use std::sync::Arc;

use aws_lc_rs::digest;

use super::tree::{file_parts, kind};
use crate::cache::flight::MakeCheck;
use crate::cache::key::Key;
use crate::cache::{Cache, Checker};

pub struct Hashes;

impl Checker for Hashes {
    fn check_for(&self, _: &Cache, key: &Key) -> Option<MakeCheck> {
        if key.kind != kind::FILE {
            return None;
        }
        let (_, want, _) = file_parts(key)?;
        let want = want.to_string();
        Some(Arc::new(move || {
            crate::indexed::hash_check(&digest::SHA256, want.clone(), "its index page")
        }))
    }
}
