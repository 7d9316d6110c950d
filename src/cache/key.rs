//! What the cache keeps, as the package ecosystems describe it. The cache
//! knows no ecosystem: a [`Key`] names a file in the tree, its [`Kind`]
//! says how the cache treats it (kept forever or for `mutable_ttl`, its
//! size limit, its content type), and its [`Upstream`] says which of the
//! ecosystem's mirror sets serves it, for the ecosystem's own source to
//! read. Only an [`Ecosystem`] makes keys. Pure.

use std::sync::Arc;

/// A kind of cached file, as its ecosystem defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kind {
    /// The ecosystem's name (`go`).
    pub ecosystem: &'static str,
    /// Its name for this kind (`zip`), in `/metrics` and `cache stats`.
    pub name: &'static str,
    /// Kept forever: its content never changes. Otherwise fresh for
    /// `cache.mutable_ttl`.
    pub immutable: bool,
    /// The most bytes such a file may have: a mirror sending more is
    /// lying, and the download is cut there.
    pub limit: u64,
    /// What it is served as.
    pub content_type: &'static str,
    /// A package archive (a module zip): too large to hold whole while it
    /// is checked (it streams, held back near its end), and read from the
    /// shared tier before the mirrors are asked.
    pub archive: bool,
}

impl Kind {
    pub fn immutable(self) -> bool {
        self.immutable
    }

    pub fn limit(self) -> u64 {
        self.limit
    }

    pub fn name(self) -> &'static str {
        self.name
    }
}

/// Which of an ecosystem's mirror sets a key is fetched from: a name only
/// that ecosystem reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Upstream(pub Arc<str>);

impl Upstream {
    pub fn new(name: &str) -> Self {
        Upstream(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One cacheable request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// The file's path inside the cache directory, `/`-separated, no leading `/`.
    pub file: String,
    pub kind: Kind,
    pub upstream: Upstream,
    /// Appended to a mirror's base URL.
    pub suffix: String,
    /// An empty file the tree must also hold for it to be served as it
    /// stands (a checksum database's `supported`), written to the shared
    /// tier once.
    pub companion: Option<String>,
}

/// What the cache asks of a package ecosystem (Go modules, …): the files
/// it owns in the tree. How its requests map to keys, how its files are
/// checked and where its mirrors are stay with the ecosystem.
pub trait Ecosystem: Send + Sync + 'static {
    /// Its name, as [`Kind::ecosystem`] gives it.
    fn name(&self) -> &'static str;

    /// Every kind of file it keeps, in the order `cache stats` lists them.
    fn kinds(&self) -> &'static [Kind];

    /// The key a file found in the tree stands for (the start-up scan,
    /// `modgate cache` commands); `None` when it is not one of its files.
    fn key_of_file(&self, file: &str) -> Option<Key>;
}

/// The ecosystems a cache holds files of.
#[derive(Clone, Default)]
pub struct Ecosystems(Vec<Arc<dyn Ecosystem>>);

impl Ecosystems {
    pub fn new(all: Vec<Arc<dyn Ecosystem>>) -> Self {
        Ecosystems(all)
    }

    /// The key a file in the tree stands for, by the first ecosystem that
    /// owns it.
    pub fn key_of_file(&self, file: &str) -> Option<Key> {
        self.0.iter().find_map(|e| e.key_of_file(file))
    }

    /// Every kind of every ecosystem.
    pub fn kinds(&self) -> Vec<Kind> {
        self.0
            .iter()
            .flat_map(|e| e.kinds().iter().copied())
            .collect()
    }
}

impl std::fmt::Debug for Ecosystems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|e| e.name()))
            .finish()
    }
}

/// Kinds and an ecosystem for the cache's own tests: `.zip` files are
/// archives, `.mod` files other immutable files, `list` files mutable.
#[cfg(test)]
pub mod testing {
    use super::*;

    const fn kind(name: &'static str, immutable: bool, archive: bool) -> Kind {
        Kind {
            ecosystem: "test",
            name,
            immutable,
            limit: 1 << 20,
            content_type: "application/octet-stream",
            archive,
        }
    }

    pub const ARCHIVE: Kind = kind("archive", true, true);
    pub const FILE: Kind = kind("file", true, false);
    pub const INDEX: Kind = kind("index", false, false);
    const ALL: [Kind; 3] = [ARCHIVE, FILE, INDEX];

    pub struct Test;

    impl Ecosystem for Test {
        fn name(&self) -> &'static str {
            "test"
        }

        fn kinds(&self) -> &'static [Kind] {
            &ALL
        }

        fn key_of_file(&self, file: &str) -> Option<Key> {
            let kind = match file.rsplit_once('.').map(|(_, ext)| ext) {
                Some("zip") => ARCHIVE,
                Some("mod") => FILE,
                _ if file.ends_with("/list") => INDEX,
                _ => return None,
            };
            Some(Key {
                file: file.to_string(),
                kind,
                upstream: Upstream::new("mirrors"),
                suffix: format!("/{file}"),
                companion: None,
            })
        }
    }

    pub fn ecosystems() -> Ecosystems {
        Ecosystems::new(vec![Arc::new(Test)])
    }
}
