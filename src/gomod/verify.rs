//! Checksum verification at the gateway: every public `.mod` and `.zip` is
//! checked against the go.sum lines the checksum database has for it
//! (looked up, signed head verified, record proved from tiles) before a
//! client has it whole and before it is stored; lookups and signed heads
//! are checked before they are stored or served. The newest verified head
//! is kept on disk, and every later head must be consistent with it. This
//! is the edge (fetching through the cache); the proofs are `crate::sumdb`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::check::module_file;
use super::path::{case_decode, case_encode};
use super::shared_head::SharedHead;
use super::tree::{GoUpstream, kind, sumdb_key};
use crate::cache::flight::{Check, MakeCheck, Refusal};
use crate::cache::key::{Key, Upstream};
use crate::cache::storage::Storage;
use crate::cache::{Cache, Checker, lock};
use crate::rules::Private;
use crate::sumdb::head::{Head, Key as DbKey};
use crate::sumdb::proof::{self, Proof, Tiles};
use crate::sumdb::{SumdbError, lookup};

/// Larger lookup answers or tiles are refused.
const MAX_ANSWER: usize = 64 << 10;

/// Rounds of fetching missing tiles for one proof (one is usually enough).
const PROOF_ROUNDS: usize = 4;

#[derive(Clone)]
pub struct Verifier {
    inner: Arc<State>,
}

struct State {
    key: DbKey,
    /// The database's name (the key's), as in `sumdb/<name>/…`.
    db: String,
    /// Modules never looked up: `gomod.private` and `gomod.nosumdb`.
    skip: Vec<Private>,
    /// The newest verified signed head, and where it is kept.
    head: Mutex<Option<Head>>,
    head_file: PathBuf,
    /// Held while the head is written to disk.
    writing: tokio::sync::Mutex<()>,
    /// The fleet's head in the shared tier's bucket, when there is one.
    shared: Option<SharedHead>,
}

/// Why a proof did not hold.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The database's answers are wrong (a security matter).
    #[error("{0}")]
    Refused(SumdbError),
    /// What the proof needs could not be fetched.
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("gomod.sumdb_key: {0}")]
    Key(SumdbError),
}

impl Verifier {
    /// Reads the stored head from `cache_dir` (a head that no longer
    /// verifies is ignored, with a warning).
    pub fn new(
        key: &str,
        skip: Vec<Private>,
        cache_dir: &Path,
        shared: Option<(Arc<dyn Storage>, Duration)>,
    ) -> Result<Verifier, VerifyError> {
        let key = DbKey::parse(key).map_err(VerifyError::Key)?;
        let db = key.name().to_string();
        let head_file = cache_dir.join(".modgate").join(format!("{db}.head"));
        let head = match std::fs::read(&head_file) {
            Ok(signed) => match key.verify(&signed) {
                Ok(head) => Some(head),
                Err(e) => {
                    tracing::warn!(file = %head_file.display(), error = %e, "sumdb: stored signed head ignored");
                    None
                }
            },
            Err(_) => None,
        };
        if let Some(head) = &head {
            tracing::info!(db, head = %head.name(), "sumdb: stored signed head");
        }
        let shared = shared.map(|(storage, timeout)| SharedHead::new(storage, &db, timeout));
        Ok(Verifier {
            inner: Arc::new(State {
                key,
                db,
                skip,
                head: Mutex::new(head),
                shared,
                head_file,
                writing: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The go.sum hash the database has for `module@version`'s zip (or
    /// with `go_mod` its go.mod): from a verified lookup.
    async fn expected(
        &self,
        cache: &Cache,
        module: &str,
        version: &str,
        go_mod: bool,
    ) -> Result<String, Refusal> {
        let unchecked = |why: String| Refusal::Unchecked(why);
        let path = format!("/lookup/{}@{}", case_encode(module), case_encode(version));
        let key = sumdb_key(&self.inner.db, &path)
            .ok_or_else(|| unchecked(format!("cannot look up {module}@{version}")))?;
        let answer = cache.bytes(&key, MAX_ANSWER).await.map_err(|e| {
            unchecked(format!(
                "checksum database lookup of {module}@{version}: {e}"
            ))
        })?;
        let parsed = lookup::parse(&answer).map_err(|e| unchecked(e.to_string()))?;
        lookup::hash_of(parsed.record, module, version, go_mod).ok_or_else(|| {
            unchecked(format!(
                "the checksum database has no go.sum line for {module}@{version}"
            ))
        })
    }

    /// Checks a lookup answer for `module@version`: signed by the key, its
    /// head consistent with the stored one, its record proved in that head
    /// (both proofs from one set of tiles, fetched together).
    async fn lookup_holds(
        &self,
        cache: &Cache,
        answer: &[u8],
        module: &str,
        version: &str,
    ) -> Result<(), Refusal> {
        let bad = |e: SumdbError| Refusal::Bad(e.to_string());
        let parsed = lookup::parse(answer).map_err(bad)?;
        if lookup::hash_of(parsed.record, module, version, true).is_none() {
            return Err(Refusal::Bad(format!(
                "the record is not for {module}@{version}"
            )));
        }
        let head = self.inner.key.verify(parsed.head).map_err(bad)?;
        let stored = self.stored_for(cache, &head).await;
        let (id, record) = (parsed.id, parsed.record);
        let proved = self
            .prove(cache, |tiles| {
                let in_tree = proof::record_in(&head, id, record, tiles)?;
                let consistent = match &stored {
                    Some(stored) => proof::consistent(stored, &head, tiles)?,
                    None => Proof::Holds,
                };
                Ok(both(in_tree, consistent))
            })
            .await;
        self.settle_head(stored.as_ref(), &head, proved).await
    }

    /// Accepts `head` when it is consistent with the stored head; keeps it
    /// when it is newer.
    async fn accept(&self, cache: &Cache, head: &Head) -> Result<(), Refusal> {
        let stored = self.stored_for(cache, head).await;
        let proved = match &stored {
            Some(stored) => {
                self.prove(cache, |tiles| proof::consistent(stored, head, tiles))
                    .await
            }
            None => Ok(()),
        };
        self.settle_head(stored.as_ref(), head, proved).await
    }

    /// The head `seen` must be consistent with. When `seen` is the head
    /// this gateway holds (verified here already), nothing is new: the
    /// bucket is not asked, one round trip less for every lookup signed by
    /// a known head. Any other head is checked against the fleet's too.
    async fn stored_for(&self, cache: &Cache, seen: &Head) -> Option<Head> {
        let local = lock(&self.inner.head).clone();
        if local.as_ref() == Some(seen) {
            return local;
        }
        self.stored(cache).await
    }

    /// The head every new one must be consistent with: this gateway's,
    /// or the fleet's (the shared tier's) when that is newer and proved
    /// consistent with this gateway's (then kept here too). A fleet head
    /// that is not consistent with this gateway's is a security event;
    /// this gateway's is kept.
    async fn stored(&self, cache: &Cache) -> Option<Head> {
        let local = lock(&self.inner.head).clone();
        let Some(shared) = &self.inner.shared else {
            return local;
        };
        let Some((fleet, _)) = shared.read(&self.inner.key).await else {
            return local;
        };
        let proved = match &local {
            Some(own) if own.size >= fleet.size => return local,
            Some(own) => {
                self.prove(cache, |tiles| proof::consistent(own, &fleet, tiles))
                    .await
            }
            None => Ok(()),
        };
        match proved {
            Ok(()) => {
                self.keep(&fleet).await;
                Some(fleet)
            }
            Err(e) => {
                let own = local.as_ref().map(Head::name).unwrap_or_default();
                tracing::error!(security = true, db = %self.inner.db, stored = %own, fleet = %fleet.name(), reason = %e,
                    "sumdb: the fleet's signed head is not consistent with this gateway's, which is kept");
                local
            }
        }
    }

    /// Keeps `head` when its proofs held and it is newer than `stored`; a
    /// head that is not consistent with the stored one is a security event.
    async fn settle_head(
        &self,
        stored: Option<&Head>,
        head: &Head,
        proved: Result<(), Failure>,
    ) -> Result<(), Refusal> {
        match proved {
            Err(Failure::Refused(fork @ SumdbError::Fork { .. })) => {
                let stored = stored.map(Head::name).unwrap_or_default();
                tracing::error!(
                    security = true, db = %self.inner.db, %stored, seen = %head.name(),
                    reason = %fork, "sumdb: signed head refused (not consistent with the stored head, which is kept)"
                );
                Err(Refusal::Bad(fork.to_string()))
            }
            Err(Failure::Refused(bad)) => Err(Refusal::Bad(bad.to_string())),
            Err(Failure::Unavailable(why)) => Err(Refusal::Unchecked(why)),
            Ok(()) => {
                self.keep(head).await;
                Ok(())
            }
        }
    }

    /// Stores `head` when it is newer than the stored one: in memory at
    /// once, then on disk (one writer at a time, always the newest).
    async fn keep(&self, head: &Head) {
        {
            let mut stored = lock(&self.inner.head);
            if stored.as_ref().is_some_and(|s| s.size >= head.size) {
                return;
            }
            *stored = Some(head.clone());
        }
        let _writing = self.inner.writing.lock().await;
        let Some(newest) = lock(&self.inner.head).clone() else {
            return;
        };
        let file = self.inner.head_file.clone();
        let signed = newest.signed.clone();
        let written = tokio::task::spawn_blocking(move || write_atomically(&file, &signed)).await;
        if let Ok(Err(e)) | Err(e) = written.map_err(std::io::Error::other) {
            tracing::warn!(error = %e, "sumdb: cannot store the signed head");
        }
        if let Some(shared) = &self.inner.shared {
            shared.advance(&self.inner.key, &newest).await;
        }
    }

    /// Runs `attempt` until it holds, fetching the tiles it needs through the cache.
    async fn prove(
        &self,
        cache: &Cache,
        attempt: impl Fn(&Tiles) -> Result<Proof, SumdbError>,
    ) -> Result<(), Failure> {
        let mut tiles = Tiles::default();
        let mut fetched = Vec::new();
        for _ in 0..PROOF_ROUNDS {
            let proved = match attempt(&tiles) {
                Ok(proved) => proved,
                Err(refused) => {
                    // A tile may be the wrong one: none of them is kept, so
                    // the next proof fetches them again.
                    if matches!(refused, SumdbError::Tiles(_) | SumdbError::NotInTree { .. }) {
                        self.forget_tiles(cache, &fetched).await;
                    }
                    return Err(Failure::Refused(refused));
                }
            };
            match proved {
                Proof::Holds => return Ok(()),
                Proof::Needs(paths) => {
                    let fetches = paths.iter().map(|path| self.tile(cache, path));
                    for (path, data) in paths
                        .iter()
                        .zip(futures_util::future::join_all(fetches).await)
                    {
                        tiles.insert(path.clone(), data.map_err(Failure::Unavailable)?.to_vec());
                        fetched.push(path.clone());
                    }
                }
            }
        }
        Err(Failure::Unavailable("the proof still lacks tiles".into()))
    }

    async fn forget_tiles(&self, cache: &Cache, paths: &[String]) {
        for path in paths {
            if let Some(key) = sumdb_key(&self.inner.db, &format!("/{path}")) {
                cache.forget(&key).await;
            }
        }
    }

    async fn tile(&self, cache: &Cache, path: &str) -> Result<bytes::Bytes, String> {
        let key = sumdb_key(&self.inner.db, &format!("/{path}"))
            .ok_or_else(|| format!("bad tile path {path}"))?;
        cache
            .bytes(&key, MAX_ANSWER)
            .await
            .map_err(|e| format!("tile {path}: {e}"))
    }

    /// Whether `module` is looked up at all.
    fn looked_up(&self, module: &str) -> bool {
        self.inner.skip.iter().all(|p| p.find(module).is_none())
    }
}

impl Checker for Verifier {
    fn check_for(&self, cache: &Cache, key: &Key) -> Option<MakeCheck> {
        match key.kind {
            kind::INFO => {
                // No go.sum line covers a .info: it must at least name the
                // version asked for.
                let (_, version) = module_version(&key.file)?;
                Some(Arc::new(move || {
                    let version = version.clone();
                    Check::new(move |content| async move {
                        info_names(&content.bytes().await?, &version).map_err(Refusal::Bad)
                    })
                }))
            }
            kind::MOD | kind::ZIP => {
                let (module, version) = module_version(&key.file)?;
                if !self.looked_up(&module) {
                    return None;
                }
                let go_mod = key.kind == kind::MOD;
                Some(self.file_check(cache, module, version, go_mod))
            }
            kind::LOOKUP if self.own(&key.upstream) => {
                let lookup = key.file.rsplit_once("/lookup/")?.1;
                let (module, version) = lookup.rsplit_once('@')?;
                let (module, version) = (case_decode(module)?, case_decode(version)?);
                let (me, cache) = (self.clone(), cache.clone());
                Some(Arc::new(move || {
                    let (me, cache) = (me.clone(), cache.clone());
                    let (module, version) = (module.clone(), version.clone());
                    Check::new(move |content| async move {
                        let answer = content.bytes().await?;
                        me.lookup_holds(&cache, &answer, &module, &version).await
                    })
                }))
            }
            kind::SUMDB_LATEST if self.own(&key.upstream) => {
                let (me, cache) = (self.clone(), cache.clone());
                Some(Arc::new(move || {
                    let (me, cache) = (me.clone(), cache.clone());
                    Check::new(move |content| async move {
                        let signed = content.bytes().await?;
                        let head = me
                            .inner
                            .key
                            .verify(&signed)
                            .map_err(|e| Refusal::Bad(e.to_string()))?;
                        me.accept(&cache, &head).await
                    })
                }))
            }
            _ => None,
        }
    }
}

impl Verifier {
    /// The check of a module file: its lookup starts with the download.
    fn file_check(
        &self,
        cache: &Cache,
        module: String,
        version: String,
        go_mod: bool,
    ) -> MakeCheck {
        let (me, cache) = (self.clone(), cache.clone());
        Arc::new(move || {
            let (me, cache) = (me.clone(), cache.clone());
            let (module, version) = (module.clone(), version.clone());
            let expected =
                tokio::spawn(async move { me.expected(&cache, &module, &version, go_mod).await });
            let expected = async move {
                expected
                    .await
                    .map_err(|e| Refusal::Unchecked(e.to_string()))?
            };
            module_file(expected, go_mod)
        })
    }

    /// Whether `upstream` is this verifier's database.
    fn own(&self, upstream: &Upstream) -> bool {
        GoUpstream::of(upstream) == GoUpstream::Sumdb(&self.inner.db)
    }
}

/// Both proofs: they hold when both do; the tiles either lacks, together.
fn both(a: Proof, b: Proof) -> Proof {
    match (a, b) {
        (Proof::Holds, Proof::Holds) => Proof::Holds,
        (Proof::Needs(mut x), Proof::Needs(y)) => {
            x.extend(y.into_iter().filter(|p| !x.contains(p)).collect::<Vec<_>>());
            Proof::Needs(x)
        }
        (Proof::Needs(x), _) | (_, Proof::Needs(x)) => Proof::Needs(x),
    }
}

/// Checks a `.info` answer is JSON naming `version` as its `Version`.
fn info_names(info: &[u8], version: &str) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Info {
        #[serde(rename = "Version")]
        version: String,
    }
    let info: Info =
        serde_json::from_slice(info).map_err(|e| format!("not a version's .info: {e}"))?;
    if info.version == version {
        Ok(())
    } else {
        Err(format!("a .info for {}, not {version}", info.version))
    }
}

/// `(module, version)` of a cached `.info`/`.mod`/`.zip` file path.
fn module_version(file: &str) -> Option<(String, String)> {
    let (module, name) = file.rsplit_once("/@v/")?;
    let version = name.rsplit_once('.')?.0;
    Some((case_decode(module)?, case_decode(version)?))
}

fn write_atomically(file: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temp = file.with_extension(format!("head.{}", std::process::id()));
    let mut out = std::fs::File::create(&temp)?;
    out.write_all(data)?;
    out.sync_all()?;
    std::fs::rename(&temp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_info_must_name_its_version() {
        let info = br#"{"Version":"v1.2.0","Time":"2026-01-02T03:04:05Z"}"#;
        assert_eq!(info_names(info, "v1.2.0"), Ok(()));
        assert!(info_names(info, "v1.2.1").is_err());
        assert!(info_names(b"<html>", "v1.2.0").is_err());
        assert!(info_names(br#"{"Time":"x"}"#, "v1.2.0").is_err());
    }

    #[test]
    fn module_and_version_of_a_file() {
        assert_eq!(
            module_version("example.com/!acme/!lib/@v/v1.0.0-!r!c1.zip"),
            Some(("example.com/Acme/Lib".into(), "v1.0.0-RC1".into()))
        );
        assert_eq!(module_version("example.com/m/@v/list"), None);
    }
}
