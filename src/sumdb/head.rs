//! Signed tree heads: a note whose text is `go.sum database tree\nN\nHASH\n`,
//! signed by the database's verifier key.

use signed_note::{Note, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash};

use super::SumdbError;

/// The first line of every checksum database tree head.
const ORIGIN: &str = "go.sum database tree";

/// A verified tree head.
#[derive(Clone, Debug, PartialEq)]
pub struct Head {
    pub size: u64,
    pub hash: Hash,
    /// The signed note as received: what is stored and shown.
    pub signed: Vec<u8>,
}

impl Head {
    /// `size/hash`, as log lines name a head.
    pub fn name(&self) -> String {
        format!("{}/{}", self.size, self.hash)
    }
}

/// The database's key, parsed once.
pub struct Key {
    text: String,
}

impl Key {
    pub fn parse(text: &str) -> Result<Key, SumdbError> {
        StandardVerifier::new(text).map_err(|e| SumdbError::Note(format!("verifier key: {e}")))?;
        Ok(Key {
            text: text.to_string(),
        })
    }

    /// The key's name (`sum.golang.org`).
    pub fn name(&self) -> &str {
        self.text.split('+').next().unwrap_or_default()
    }

    /// Checks `signed` is a tree head signed by this key.
    pub fn verify(&self, signed: &[u8]) -> Result<Head, SumdbError> {
        let verifier = StandardVerifier::new(&self.text)
            .map_err(|e| SumdbError::Note(format!("verifier key: {e}")))?;
        let note = Note::from_bytes(signed).map_err(|e| SumdbError::Note(e.to_string()))?;
        note.verify(&VerifierList::new(vec![Box::new(verifier)]))
            .map_err(|e| match e {
                signed_note::NoteError::UnverifiedNote => SumdbError::Unsigned {
                    key: self.name().to_string(),
                },
                other => SumdbError::Note(other.to_string()),
            })?;
        let tree =
            Checkpoint::from_bytes(note.text()).map_err(|e| SumdbError::Tree(e.to_string()))?;
        if tree.origin() != ORIGIN || !tree.extension().is_empty() {
            return Err(SumdbError::Tree(format!(
                "not a checksum database tree ({:?})",
                tree.origin()
            )));
        }
        Ok(Head {
            size: tree.size(),
            hash: *tree.hash(),
            signed: signed.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sumdb::proof::tests::vector;

    fn key() -> Key {
        Key::parse(std::str::from_utf8(&vector("key")).unwrap()).unwrap()
    }

    #[test]
    fn verifies_heads_made_by_x_mod() {
        let head = key().verify(&vector("latest-300")).unwrap();
        assert_eq!(head.size, 300);
        assert_eq!(key().verify(&vector("latest-100")).unwrap().size, 100);
        assert_eq!(key().name(), "sum.test");
    }

    #[test]
    fn refuses_another_key() {
        let other = Key::parse(std::str::from_utf8(&vector("other-key")).unwrap()).unwrap();
        assert_eq!(
            other.verify(&vector("latest-300")),
            Err(SumdbError::Unsigned {
                key: "sum.test".into()
            })
        );
    }

    #[test]
    fn refuses_a_flipped_bit() {
        let signed = vector("latest-300");
        for at in [23, 26, 40, signed.len() - 10] {
            let mut bad = signed.clone();
            bad[at] ^= 1;
            assert!(key().verify(&bad).is_err(), "bit flipped at {at}");
        }
    }

    #[test]
    fn refuses_garbage() {
        for bad in [&b""[..], b"\n", b"go.sum database tree\n1\n", &[0xff; 64]] {
            assert!(key().verify(bad).is_err());
        }
        assert!(Key::parse("sum.golang.org+nothex+AAAA").is_err());
    }
}
