//! Go's files in the cache tree: which module requests the cache keeps,
//! where in the GOPROXY tree each one lives, and which of them never
//! change. Pure.
//!
//! The tree is the one `GOPROXY=file://<dir>` reads: `<module>/@v/list`,
//! `<module>/@v/<version>.{info,mod,zip}`, `<module>/@latest` (module paths
//! case-encoded as the go command sends them), and a checksum database
//! under `sumdb/<name>/{lookup,tile,latest}`.

use crate::cache::key::{Ecosystem, Key, Kind, Upstream};

/// Go's kinds of file.
pub mod kind {
    use crate::cache::key::Kind;

    const JSON: &str = "application/json";
    const TEXT: &str = "text/plain; charset=utf-8";
    /// The go command's own limits: a go.mod (and any other file) at most
    /// 16 MiB, a module zip at most 500 MiB.
    const SMALL: u64 = 16 << 20;

    const fn go(name: &'static str, immutable: bool, content_type: &'static str) -> Kind {
        Kind {
            ecosystem: "go",
            name,
            immutable,
            limit: SMALL,
            content_type,
            archive: false,
        }
    }

    /// `@v/<canonical>.info`.
    pub const INFO: Kind = go("info", true, JSON);
    /// `@v/<canonical>.mod`.
    pub const MOD: Kind = go("mod", true, TEXT);
    /// `@v/<canonical>.zip`.
    pub const ZIP: Kind = Kind {
        limit: 500 << 20,
        archive: true,
        ..go("zip", true, "application/zip")
    };
    /// `@v/list`.
    pub const LIST: Kind = go("list", false, TEXT);
    /// `@latest`.
    pub const LATEST: Kind = go("latest", false, JSON);
    /// `@v/<query>.info` for a query that is not a canonical version (a branch, `v1`).
    pub const QUERY: Kind = go("query", false, JSON);
    /// A checksum database's `lookup/<module>@<version>`.
    pub const LOOKUP: Kind = go("lookup", true, TEXT);
    /// A checksum database's `tile/…` (full or partial).
    pub const TILE: Kind = go("tile", true, "application/octet-stream");
    /// A checksum database's `latest` signed tree head.
    pub const SUMDB_LATEST: Kind = go("sumdb_latest", false, TEXT);

    pub const ALL: [Kind; 9] = [
        INFO,
        MOD,
        ZIP,
        LIST,
        LATEST,
        QUERY,
        LOOKUP,
        TILE,
        SUMDB_LATEST,
    ];
}

/// Where upstream a Go key is fetched from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoUpstream<'a> {
    /// The module proxy mirrors; the suffix is the request path.
    Proxy,
    /// The checksum database mirrors of database `db`; the suffix is the
    /// path inside the database (`/lookup/…`).
    Sumdb(&'a str),
}

const PROXY: &str = "proxy";
const SUMDB: &str = "sumdb:";

impl<'a> GoUpstream<'a> {
    pub fn of(upstream: &'a Upstream) -> Self {
        match upstream.as_str().strip_prefix(SUMDB) {
            Some(db) => GoUpstream::Sumdb(db),
            None => GoUpstream::Proxy,
        }
    }

    fn upstream(self) -> Upstream {
        match self {
            GoUpstream::Proxy => Upstream::new(PROXY),
            GoUpstream::Sumdb(db) => Upstream::new(&format!("{SUMDB}{db}")),
        }
    }
}

/// The Go ecosystem's name in the cache ([`Kind::ecosystem`]).
pub const GO: &str = "go";

/// Go modules, as the cache sees them.
pub struct Go;

impl Ecosystem for Go {
    fn name(&self) -> &'static str {
        GO
    }

    fn kinds(&self) -> &'static [Kind] {
        &kind::ALL
    }

    fn key_of_file(&self, file: &str) -> Option<Key> {
        key_of_file(file)
    }
}

/// The key for a module proxy request path (`/<module>/@v/…`), or `None`
/// when the request is not cached (a query string, a non-canonical `.mod`
/// or `.zip`, a path the tree cannot hold).
pub fn proxy_key(path: &str) -> Option<Key> {
    let file = tree_path(path)?;
    let kind = if let Some(module) = file.strip_suffix("/@latest") {
        module_path(module)?;
        kind::LATEST
    } else {
        let (module, file_name) = file.rsplit_once("/@v/")?;
        module_path(module)?;
        version_file_kind(file_name)?
    };
    Some(Key {
        suffix: format!("/{file}"),
        file,
        kind,
        upstream: GoUpstream::Proxy.upstream(),
        companion: None,
    })
}

/// The key for a request to checksum database `db` (`/lookup/M@V`,
/// `/tile/…`, `/latest`), or `None` when it is not cached.
pub fn sumdb_key(db: &str, path: &str) -> Option<Key> {
    if !is_host_name(db) {
        return None;
    }
    let rest = tree_path(path)?;
    let kind = if rest == "latest" {
        kind::SUMDB_LATEST
    } else if let Some(lookup) = rest.strip_prefix("lookup/") {
        let (module, version) = lookup.rsplit_once('@')?;
        module_path(module)?;
        canonical(version)?;
        kind::LOOKUP
    } else if let Some(tile) = rest.strip_prefix("tile/") {
        tile_path(tile)?;
        kind::TILE
    } else {
        return None;
    };
    Some(Key {
        file: format!("sumdb/{db}/{rest}"),
        kind,
        upstream: GoUpstream::Sumdb(db).upstream(),
        suffix: format!("/{rest}"),
        companion: Some(format!("sumdb/{db}/supported")),
    })
}

/// The key a file found in the cache directory stands for (start-up scan,
/// `modgate cache` commands); `None` for anything else.
pub fn key_of_file(file: &str) -> Option<Key> {
    if let Some(rest) = file.strip_prefix("sumdb/") {
        let (db, path) = rest.split_once('/')?;
        return sumdb_key(db, &format!("/{path}"));
    }
    proxy_key(&format!("/{file}"))
}

/// The `.info`, `.mod` or `.zip` kind of `<version>.<ext>` or `list`.
fn version_file_kind(file_name: &str) -> Option<Kind> {
    if file_name == "list" {
        return Some(kind::LIST);
    }
    let (version, ext) = file_name.rsplit_once('.')?;
    let canonical = canonical(version).is_some();
    match ext {
        "info" if canonical => Some(kind::INFO),
        "info" if !version.is_empty() && !version.contains('/') => Some(kind::QUERY),
        "mod" if canonical => Some(kind::MOD),
        "zip" if canonical => Some(kind::ZIP),
        _ => None,
    }
}

/// `path` without its leading `/`, `%21` decoded, checked so that it can
/// only name a file inside the tree: no query, no empty, `.`-leading or
/// `..` element, and only the characters module paths, versions and tile
/// names use (upper case arrives `!`-encoded).
fn tree_path(path: &str) -> Option<String> {
    let path = path.strip_prefix('/')?;
    if path.contains('?') || path.len() > 1024 {
        return None;
    }
    let decoded = crate::percent::decode(path).and_then(|b| String::from_utf8(b).ok())?;
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._~!+@/".contains(c);
    let sound = decoded.chars().all(allowed)
        && decoded
            .split('/')
            .all(|element| !element.is_empty() && !element.starts_with('.'));
    sound.then_some(decoded)
}

/// A module path as the tree holds it: no `@`, and `!` only before a letter.
fn module_path(module: &str) -> Option<()> {
    let bytes = module.as_bytes();
    let escapes_ok = bytes
        .iter()
        .enumerate()
        .all(|(i, b)| *b != b'!' || bytes.get(i + 1).is_some_and(u8::is_ascii_lowercase));
    (!module.is_empty() && !module.contains('@') && escapes_ok).then_some(())
}

/// `tile/<H>/<L|data>/<N>[.p/<W>]`: numbers only, N in groups of which all
/// but the last are `x`-prefixed.
fn tile_path(tile: &str) -> Option<()> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let elements: Vec<&str> = tile.split('/').collect();
    let [height, level, rest @ ..] = elements.as_slice() else {
        return None;
    };
    let (groups, width) = match rest {
        [groups @ .., last_group, width] if last_group.ends_with(".p") => {
            let mut groups = groups.to_vec();
            groups.push(last_group.strip_suffix(".p")?);
            (groups, Some(*width))
        }
        _ => (rest.to_vec(), None),
    };
    let (last, leading) = groups.split_last()?;
    let ok = digits(height)
        && (digits(level) || *level == "data")
        && digits(last)
        && leading
            .iter()
            .all(|g| g.strip_prefix('x').is_some_and(digits))
        && width.is_none_or(digits);
    ok.then_some(())
}

/// A host name (a checksum database's name): lower-case labels.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// `Some` when `version` (as sent: upper case `!`-encoded) is a canonical
/// semantic version the go command uses for immutable files:
/// `vMAJOR.MINOR.PATCH[-prerelease][+incompatible]`, no leading zeros.
pub fn canonical(version: &str) -> Option<()> {
    let version = version.replace('!', "");
    let rest = version.strip_prefix('v')?;
    let rest = rest.strip_suffix("+incompatible").unwrap_or(rest);
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let number = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
    };
    let mut parts = core.split('.');
    let core_ok = (0..3).all(|_| parts.next().is_some_and(number)) && parts.next().is_none();
    let pre_ok = pre.is_none_or(|pre| {
        pre.split('.').all(|id| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && (!id.bytes().all(|b| b.is_ascii_digit()) || number(id))
        })
    });
    (core_ok && pre_ok).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(path: &str) -> Option<Kind> {
        proxy_key(path).map(|k| k.kind)
    }

    #[test]
    fn proxy_requests() {
        let table: &[(&str, Option<Kind>)] = &[
            ("/example.com/!acme/lib/@v/v1.0.0.zip", Some(kind::ZIP)),
            ("/example.com/%21acme/lib/@v/v1.0.0.mod", Some(kind::MOD)),
            ("/example.com/m/@v/v1.0.0.info", Some(kind::INFO)),
            ("/example.com/m/@v/v2.0.0+incompatible.zip", Some(kind::ZIP)),
            (
                "/example.com/m/@v/v0.0.0-20260102030405-abcdefabcdef.mod",
                Some(kind::MOD),
            ),
            ("/example.com/m/@v/v1.0.0-!r!c.1.info", Some(kind::INFO)),
            ("/example.com/m/@v/master.info", Some(kind::QUERY)),
            ("/example.com/m/@v/v1.info", Some(kind::QUERY)),
            ("/example.com/m/@v/list", Some(kind::LIST)),
            ("/example.com/m/@latest", Some(kind::LATEST)),
            ("/example.com/m/@v/v1.zip", None),
            ("/example.com/m/@v/v01.0.0.mod", None),
            ("/example.com/m/@v/v1.0.0.tar", None),
            ("/example.com/m/@v/list?x=1", None),
            ("/example.com/../etc/@v/list", None),
            ("/example.com/.modgate/@v/list", None),
            ("/example.com//m/@v/list", None),
            ("/example.com/Acme/@v/list", None),
            ("/example.com/%2e%2e/@v/list", None),
            ("/example.com/m/@v/", None),
            ("/@v/list", None),
            ("/example.com/a@b/@v/list", None),
            ("/example.com/m!/@v/list", None),
            ("/healthz", None),
        ];
        for (path, want) in table {
            assert_eq!(kind(path), *want, "{path}");
        }
        let key = proxy_key("/example.com/%21acme/@v/v1.0.0.zip").unwrap();
        assert_eq!(key.file, "example.com/!acme/@v/v1.0.0.zip");
        assert_eq!(key.suffix, "/example.com/!acme/@v/v1.0.0.zip");
    }

    #[test]
    fn sumdb_requests() {
        let k = |p: &str| sumdb_key("sum.golang.org", p).map(|k| (k.kind, k.file));
        assert_eq!(
            k("/lookup/example.com/!acme@v1.0.0"),
            Some((
                kind::LOOKUP,
                "sumdb/sum.golang.org/lookup/example.com/!acme@v1.0.0".into()
            ))
        );
        assert_eq!(k("/latest").map(|x| x.0), Some(kind::SUMDB_LATEST));
        assert_eq!(k("/tile/8/0/001").map(|x| x.0), Some(kind::TILE));
        assert_eq!(k("/tile/8/1/x001/234.p/5").map(|x| x.0), Some(kind::TILE));
        assert_eq!(k("/tile/8/data/x002/003").map(|x| x.0), Some(kind::TILE));
        assert_eq!(k("/tile/8/0/x001"), None);
        assert_eq!(k("/tile/8/a/001"), None);
        assert_eq!(k("/lookup/example.com/m@master"), None);
        assert_eq!(k("/supported"), None);
        assert_eq!(k("/lookup/../x@v1.0.0"), None);
        assert_eq!(sumdb_key("Sum.example", "/latest"), None);
        assert_eq!(sumdb_key("a/b", "/latest"), None);
    }

    #[test]
    fn files_map_back_to_their_keys() {
        for path in [
            "example.com/!acme/@v/v1.0.0.zip",
            "example.com/m/@v/list",
            "example.com/m/@latest",
            "sumdb/sum.golang.org/tile/8/0/001",
            "sumdb/sum.golang.org/latest",
        ] {
            assert_eq!(key_of_file(path).unwrap().file, path);
        }
        assert_eq!(key_of_file(".modgate/meta/x"), None);
        assert_eq!(key_of_file("sumdb/sum.golang.org/supported"), None);
    }

    #[test]
    fn immutability() {
        let kept: Vec<&str> = kind::ALL
            .iter()
            .filter(|k| k.immutable())
            .map(|k| k.name())
            .collect();
        assert_eq!(kept, ["info", "mod", "zip", "lookup", "tile"]);
    }
}
