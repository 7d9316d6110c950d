//! npm's files in the cache tree: a package's packument (as the mirror
//! served it) at `npm/packuments/<name>.json`, kept for
//! `cache.mutable_ttl`; each tarball at `npm/tarballs/<name>/<hash>/<file>`,
//! kept forever: named by the hash its packument gave (`sha512-<hex>`, or
//! `sha1-<hex>` for a version with only a shasum), which is also what it
//! is checked against. Scoped names keep their `@scope/`. Pure.

use crate::cache::key::{Ecosystem, Key, Kind, Upstream};

/// The npm ecosystem's name in the cache ([`Kind::ecosystem`]).
pub const NPM: &str = "npm";

pub mod kind {
    use crate::cache::key::Kind;

    /// A package's packument, as a mirror served it.
    pub const PACKUMENT: Kind = Kind {
        ecosystem: super::NPM,
        name: "packument",
        immutable: false,
        limit: 256 << 20,
        content_type: "application/json",
        archive: false,
    };
    /// A version's tarball.
    pub const TARBALL: Kind = Kind {
        ecosystem: super::NPM,
        name: "tarball",
        immutable: true,
        limit: 2 << 30,
        content_type: "application/octet-stream",
        archive: true,
    };
    pub const ALL: [Kind; 2] = [PACKUMENT, TARBALL];
}

/// npm packages, as the cache sees them.
pub struct Npm;

impl Ecosystem for Npm {
    fn name(&self) -> &'static str {
        NPM
    }

    fn kinds(&self) -> &'static [Kind] {
        &kind::ALL
    }

    fn key_of_file(&self, file: &str) -> Option<Key> {
        let rest = file.strip_prefix("npm/")?;
        if let Some(name) = rest
            .strip_prefix("packuments/")
            .and_then(|r| r.strip_suffix(".json"))
        {
            return packument_key(name);
        }
        let (name, hash, tarball) = split_tarball(rest.strip_prefix("tarballs/")?)?;
        tarball_key(name, hash, tarball)
    }
}

/// Whether `name` is an npm package name: `name` or `@scope/name`, of
/// URL-safe characters, neither part starting with `.` or `_`.
pub fn valid_name(name: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && !p.starts_with('_')
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    };
    let plain = match name.strip_prefix('@') {
        Some(scoped) => match scoped.split_once('/') {
            Some((scope, rest)) if part(scope) => rest,
            _ => return false,
        },
        None => name,
    };
    name.len() <= 214 && part(plain)
}

/// The key of `name`'s packument.
pub fn packument_key(name: &str) -> Option<Key> {
    valid_name(name).then(|| Key {
        file: format!("npm/packuments/{name}.json"),
        kind: kind::PACKUMENT,
        upstream: Upstream::new(NPM),
        suffix: format!("/{}", name.replace('/', "%2f")),
        companion: None,
    })
}

/// Whether `hash` is `sha512-<128 hex>` or `sha1-<40 hex>`.
fn valid_hash(hash: &str) -> bool {
    let hex = |h: &str, n: usize| {
        h.len() == n
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match hash.split_once('-') {
        Some(("sha512", h)) => hex(h, 128),
        Some(("sha1", h)) => hex(h, 40),
        _ => false,
    }
}

/// The key of `name`'s tarball `file` whose packument gave `hash`.
pub fn tarball_key(name: &str, hash: &str, file: &str) -> Option<Key> {
    let safe_file = file.len() <= 255
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+".contains(&b));
    (valid_name(name) && valid_hash(hash) && safe_file).then(|| Key {
        file: format!("npm/tarballs/{name}/{hash}/{file}"),
        kind: kind::TARBALL,
        upstream: Upstream::new(NPM),
        suffix: String::new(),
        companion: None,
    })
}

/// `(name, hash, file)` of `<name>/<hash>/<file>` (the name may be scoped).
pub fn split_tarball(path: &str) -> Option<(&str, &str, &str)> {
    let (rest, file) = path.rsplit_once('/')?;
    let (name, hash) = rest.rsplit_once('/')?;
    Some((name, hash, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys() {
        assert!(valid_name("left-pad") && valid_name("@corp/lib") && valid_name("JSONStream"));
        assert!(!valid_name("@corp") && !valid_name("../x") && !valid_name(".x"));
        assert!(!valid_name("@corp/../x") && !valid_name("a/b"));
        let key = packument_key("@corp/lib").unwrap();
        assert_eq!(key.suffix, "/@corp%2flib");
        assert_eq!(Npm.key_of_file(&key.file), Some(key));
        let hash = format!("sha512-{}", "ab".repeat(64));
        let tarball = tarball_key("@corp/lib", &hash, "lib-1.0.0.tgz").unwrap();
        assert_eq!(Npm.key_of_file(&tarball.file), Some(tarball));
        assert_eq!(tarball_key("x", "sha512-00", "x.tgz"), None);
        assert_eq!(tarball_key("x", &hash, "../x.tgz"), None);
        assert!(tarball_key("x", &format!("sha1-{}", "0".repeat(40)), "x-1.tgz").is_some());
    }
}
