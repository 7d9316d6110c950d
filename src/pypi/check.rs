//! A PyPI file is checked against the sha256 its index page gave (which
//! names it in the cache tree): hashed as it streams, judged before it is
//! stored or its last bytes reach a client. A mismatch is the mirror's
//! fault, a security event, and the next mirror is tried.

use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;

use super::tree::{file_parts, kind};
use crate::cache::flight::{Check, MakeCheck, Refusal};
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
        Some(Arc::new(move || sha256_check(want.clone())))
    }
}

fn sha256_check(want: String) -> Check {
    let running = Arc::new(Mutex::new(Some(digest::Context::new(&digest::SHA256))));
    let tapped = running.clone();
    let tap = Box::new(move |bytes: &[u8]| {
        if let Ok(mut context) = tapped.lock()
            && let Some(context) = context.as_mut()
        {
            context.update(bytes);
        }
    });
    let verdict = Box::new(move |_| {
        let got = running.lock().ok().and_then(|mut c| c.take());
        Box::pin(async move {
            let got = got.ok_or_else(|| Refusal::Unchecked("the file was not hashed".into()))?;
            let got = crate::sha256::hex(got.finish().as_ref());
            if got == want {
                Ok(())
            } else {
                Err(Refusal::Bad(format!(
                    "sha256 {got}, but its index page gave {want}"
                )))
            }
        })
            as std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Refusal>> + Send>>
    });
    Check {
        tap: Some(tap),
        verdict,
    }
}
