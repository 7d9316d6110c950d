//! Record and tree proofs from tiles, as the go command checks them: the
//! tiles are authenticated against the signed tree hash as they are read
//! (`tlog_tiles::TileHashReader`), then the proof is checked. The tiles a
//! proof needs and does not have yet are named, for the edge to fetch.

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use tlog_tiles::{
    Error, Tile, TileHashReader, TileReader, check_record, check_tree, prove_record, prove_tree,
    record_hash,
};

use super::SumdbError;
use super::head::Head;

/// The tile height of the Go checksum database.
pub const HEIGHT: u8 = 8;

/// A proof's result when it could be computed, or the tiles it still needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Proof {
    Holds,
    /// Fetch these tile paths (`tile/8/0/x001/234.p/5`), then try again.
    Needs(Vec<String>),
}

/// Tile data at hand, by path; which were asked for and missing, and which
/// were authenticated against a signed tree (safe to keep).
#[derive(Default)]
pub struct Tiles {
    data: HashMap<String, Vec<u8>>,
    missing: RefCell<Vec<String>>,
    authenticated: RefCell<Vec<String>>,
}

impl Tiles {
    pub fn insert(&mut self, path: String, data: Vec<u8>) {
        self.data.insert(path, data);
    }

    /// Paths of tiles proved to belong to a signed tree.
    pub fn authenticated(&self) -> Vec<String> {
        self.authenticated.borrow().clone()
    }
}

impl TileReader for Tiles {
    fn height(&self) -> u8 {
        HEIGHT
    }

    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, Error> {
        let mut missing = self.missing.borrow_mut();
        let found: Vec<Vec<u8>> = tiles
            .iter()
            .filter_map(|tile| {
                let path = tile.path();
                let data = self.data.get(&path).cloned();
                if data.is_none() {
                    missing.push(path);
                }
                data
            })
            .collect();
        if missing.is_empty() {
            Ok(found)
        } else {
            Err(Error::InvalidTile)
        }
    }

    fn save_tiles(&self, tiles: &[Tile], _data: &[Vec<u8>]) {
        self.authenticated
            .borrow_mut()
            .extend(tiles.iter().map(Tile::path));
    }
}

/// Proves that record `id` with content `record` is in the tree `head`.
pub fn record_in(head: &Head, id: u64, record: &[u8], tiles: &Tiles) -> Result<Proof, SumdbError> {
    let not_in = |reason: String| SumdbError::NotInTree {
        id,
        size: head.size,
        reason,
    };
    if id >= head.size {
        return Err(not_in("the record number is past the tree".into()));
    }
    let reader = TileHashReader::new(head.size, head.hash, tiles);
    let proved = guarded(|| prove_record(head.size, id, &reader));
    let proof = match settle(proved, tiles)? {
        Settled::Needs(paths) => return Ok(Proof::Needs(paths)),
        Settled::Got(proof) => proof,
    };
    check_record(&proof, head.size, head.hash, id, record_hash(record))
        .map_err(|e| not_in(e.to_string()))?;
    Ok(Proof::Holds)
}

/// Proves that `old` and `new` are heads of one history: the smaller tree
/// is a prefix of the larger. `tiles` are the larger tree's.
pub fn consistent(old: &Head, new: &Head, tiles: &Tiles) -> Result<Proof, SumdbError> {
    let fork = || SumdbError::Fork {
        old_size: old.size,
        old_hash: old.hash.to_string(),
        new_size: new.size,
        new_hash: new.hash.to_string(),
    };
    if old.size == new.size {
        return if old.hash == new.hash {
            Ok(Proof::Holds)
        } else {
            Err(fork())
        };
    }
    let (small, large) = if old.size < new.size {
        (old, new)
    } else {
        (new, old)
    };
    if small.size == 0 {
        return Ok(Proof::Holds);
    }
    let reader = TileHashReader::new(large.size, large.hash, tiles);
    let proved = guarded(|| prove_tree(large.size, small.size, &reader));
    let proof = match settle(proved, tiles)? {
        Settled::Needs(paths) => return Ok(Proof::Needs(paths)),
        Settled::Got(proof) => proof,
    };
    check_tree(&proof, large.size, large.hash, small.size, small.hash).map_err(|_| fork())?;
    Ok(Proof::Holds)
}

enum Settled<T> {
    Got(T),
    Needs(Vec<String>),
}

/// A proof computed, or the tiles it lacked, or why the tiles are bad.
fn settle<T>(proved: Result<T, Error>, tiles: &Tiles) -> Result<Settled<T>, SumdbError> {
    let missing = std::mem::take(&mut *tiles.missing.borrow_mut());
    match proved {
        Ok(proof) => Ok(Settled::Got(proof)),
        Err(_) if !missing.is_empty() => Ok(Settled::Needs(missing)),
        Err(e) => Err(SumdbError::Tiles(e.to_string())),
    }
}

/// Runs a proof computation; a panic inside the tile code (malformed
/// input it did not expect) becomes an error, never a lost connection.
fn guarded<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(Err(Error::BadMath))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sumdb::head::Key;
    use crate::sumdb::lookup;

    /// A file of the vectors golang.org/x/mod/sumdb made (tests/tools/sumdbvectors).
    pub fn vector(name: &str) -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sumdb/");
        std::fs::read(format!("{path}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn key() -> Key {
        Key::parse(std::str::from_utf8(&vector("key")).unwrap()).unwrap()
    }

    /// Every tile of `prefix` (the honest tree or `fork/`).
    fn tiles(prefix: &str) -> Tiles {
        let mut tiles = Tiles::default();
        for path in [
            "tile/8/0/000",
            "tile/8/0/000.p/100",
            "tile/8/0/001.p/44",
            "tile/8/1/000.p/1",
        ] {
            let file = format!(
                "{}{prefix}{path}",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sumdb/")
            );
            if let Ok(data) = std::fs::read(file) {
                tiles.insert(path.to_string(), data);
            }
        }
        tiles
    }

    /// Proves until no tile is missing, fetching from `source`.
    fn prove(
        source: &Tiles,
        f: impl Fn(&Tiles) -> Result<Proof, SumdbError>,
    ) -> Result<Proof, SumdbError> {
        let mut have = Tiles::default();
        for _ in 0..4 {
            match f(&have)? {
                Proof::Holds => return Ok(Proof::Holds),
                Proof::Needs(paths) => {
                    for path in paths {
                        match source.data.get(&path) {
                            Some(data) => have.insert(path, data.clone()),
                            None => return Err(SumdbError::Tiles(format!("no {path}"))),
                        }
                    }
                }
            }
        }
        panic!("still missing tiles after 4 rounds");
    }

    #[test]
    fn proves_records_made_by_x_mod() {
        let source = tiles("");
        for (module, id) in [
            ("m000", 0),
            ("m005", 5),
            ("m099", 99),
            ("m256", 256),
            ("m299", 299),
        ] {
            let answer = vector(&format!("lookup/example.com/{module}@v1.0.0"));
            let lookup = lookup::parse(&answer).unwrap();
            assert_eq!(lookup.id, id);
            let head = key().verify(lookup.head).unwrap();
            let proved = prove(&source, |t| record_in(&head, lookup.id, lookup.record, t));
            assert_eq!(proved, Ok(Proof::Holds), "{module}");
        }
    }

    #[test]
    fn needs_then_authenticates_tiles() {
        let head = key().verify(&vector("latest-300")).unwrap();
        let answer = vector("lookup/example.com/m256@v1.0.0");
        let lookup = lookup::parse(&answer).unwrap();
        let mut have = Tiles::default();
        let Ok(Proof::Needs(paths)) = record_in(&head, 256, lookup.record, &have) else {
            panic!("tiles should be needed")
        };
        assert!(
            paths.contains(&"tile/8/0/001.p/44".to_string()),
            "{paths:?}"
        );
        let source = tiles("");
        for path in paths {
            have.insert(path.clone(), source.data[&path].clone());
        }
        assert_eq!(
            record_in(&head, 256, lookup.record, &have),
            Ok(Proof::Holds)
        );
        assert!(
            have.authenticated()
                .contains(&"tile/8/0/001.p/44".to_string())
        );
    }

    #[test]
    fn refuses_a_record_not_in_the_tree() {
        let source = tiles("");
        let answer = vector("lookup/example.com/m005@v1.0.0");
        let lookup = lookup::parse(&answer).unwrap();
        let head = key().verify(lookup.head).unwrap();
        let mut record = lookup.record.to_vec();
        record[20] ^= 1;
        let claimed = prove(&source, |t| record_in(&head, 5, &record, t));
        assert!(
            matches!(claimed, Err(SumdbError::NotInTree { .. })),
            "{claimed:?}"
        );
        let elsewhere = prove(&source, |t| record_in(&head, 6, lookup.record, t));
        assert!(matches!(elsewhere, Err(SumdbError::NotInTree { .. })));
        let past = record_in(&head, 300, lookup.record, &source);
        assert!(matches!(past, Err(SumdbError::NotInTree { .. })));
    }

    #[test]
    fn refuses_bad_tiles() {
        let answer = vector("lookup/example.com/m005@v1.0.0");
        let lookup = lookup::parse(&answer).unwrap();
        let head = key().verify(lookup.head).unwrap();
        for (path, damage) in [
            ("tile/8/0/000", "flip"),
            ("tile/8/0/000", "truncate"),
            ("tile/8/0/001.p/44", "flip"),
        ] {
            let mut source = tiles("");
            let data = source.data.get_mut(path).unwrap();
            match damage {
                "flip" => data[40] ^= 1,
                _ => data.truncate(data.len() - 32),
            }
            let proved = prove(&source, |t| record_in(&head, 5, lookup.record, t));
            // Refused either as tiles that do not hash to the signed tree,
            // or as a proof (made of their hashes) that does not hold.
            assert!(
                matches!(
                    proved,
                    Err(SumdbError::Tiles(_) | SumdbError::NotInTree { .. })
                ),
                "{path} {damage}: {proved:?}"
            );
        }
    }

    #[test]
    fn heads_of_one_history_are_consistent() {
        let old = key().verify(&vector("latest-100")).unwrap();
        let new = key().verify(&vector("latest-300")).unwrap();
        let source = tiles("");
        assert_eq!(
            prove(&source, |t| consistent(&old, &new, t)),
            Ok(Proof::Holds)
        );
        // A smaller head seen after a larger one is checked the same way.
        assert_eq!(
            prove(&source, |t| consistent(&new, &old, t)),
            Ok(Proof::Holds)
        );
        assert_eq!(consistent(&new, &new, &Tiles::default()), Ok(Proof::Holds));
    }

    #[test]
    fn a_fork_is_refused() {
        let stored = key().verify(&vector("latest-100")).unwrap();
        let forked = key().verify(&vector("fork/latest-300")).unwrap();
        let same_size = key().verify(&vector("latest-300")).unwrap();
        let fork_tiles = tiles("fork/");
        let proved = prove(&fork_tiles, |t| consistent(&stored, &forked, t));
        assert!(
            matches!(
                proved,
                Err(SumdbError::Fork {
                    old_size: 100,
                    new_size: 300,
                    ..
                })
            ),
            "{proved:?}"
        );
        assert!(matches!(
            consistent(&same_size, &forked, &Tiles::default()),
            Err(SumdbError::Fork { .. })
        ));
    }
}
