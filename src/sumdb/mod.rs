//! Checksum database verification, pure: signed tree heads ([`head`]),
//! lookup answers and their go.sum lines ([`lookup`]), and record and tree
//! proofs from tiles ([`proof`]), on golang.org/x/mod/sumdb's formats
//! through the `signed_note` and `tlog_tiles` crates. Fetching lookups and
//! tiles is the handler's edge; nothing here does I/O.

pub mod head;
pub mod lookup;
pub mod proof;

/// Why a checksum database answer was refused. Every variant is the
/// database's (or its mirror's) fault, never the client's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SumdbError {
    #[error("signed tree head: {0}")]
    Note(String),
    #[error("signed tree head is not signed by {key}")]
    Unsigned { key: String },
    #[error("signed tree head text: {0}")]
    Tree(String),
    #[error("lookup answer: {0}")]
    Lookup(String),
    #[error("record {id} is not in the signed tree of size {size}: {reason}")]
    NotInTree { id: u64, size: u64, reason: String },
    #[error(
        "tree of size {new_size} ({new_hash}) is not consistent with the stored tree of size {old_size} ({old_hash})"
    )]
    Fork {
        old_size: u64,
        old_hash: String,
        new_size: u64,
        new_hash: String,
    },
    #[error("tiles do not match the signed tree: {0}")]
    Tiles(String),
}
