//! PyPI's files in the cache tree: a project's index page (as the mirror
//! served it, PEP 503 HTML) at `pypi/simple/<project>/index.html`, kept for
//! `cache.mutable_ttl`; each distribution file at
//! `pypi/files/<project>/<sha256>/<filename>`, kept forever: named by the
//! hash its index page gave, which is also what it is checked against.
//! Pure.

use crate::cache::key::{Ecosystem, Key, Kind, Upstream};

/// The PyPI ecosystem's name in the cache ([`Kind::ecosystem`]).
pub const PYPI: &str = "pypi";

/// Python packages, as the cache sees them.
pub struct Pypi;

pub mod kind {
    use crate::cache::key::Kind;

    /// A project's index page, as a mirror served it.
    pub const PAGE: Kind = Kind {
        ecosystem: super::PYPI,
        name: "page",
        immutable: false,
        limit: 64 << 20,
        content_type: "text/html; charset=utf-8",
        archive: false,
    };
    /// A wheel or an sdist (the largest wheels are a few GiB).
    pub const FILE: Kind = Kind {
        ecosystem: super::PYPI,
        name: "file",
        immutable: true,
        limit: 8 << 30,
        content_type: "application/octet-stream",
        archive: true,
    };
    pub const ALL: [Kind; 2] = [PAGE, FILE];
}

impl Ecosystem for Pypi {
    fn name(&self) -> &'static str {
        PYPI
    }

    fn kinds(&self) -> &'static [Kind] {
        &kind::ALL
    }

    fn key_of_file(&self, file: &str) -> Option<Key> {
        let rest = file.strip_prefix("pypi/")?;
        if let Some(project) = rest
            .strip_prefix("simple/")
            .and_then(|r| r.strip_suffix("/index.html"))
        {
            return page_key(project);
        }
        let mut parts = rest.strip_prefix("files/")?.split('/');
        let (project, sha256, filename) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        file_key(project, sha256, filename)
    }
}

/// PEP 503's normalized name: lower case, each run of `-`, `_` and `.` one `-`.
/// `None` for what cannot be a project name.
pub fn normalize(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        return None;
    }
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = if "-_.".contains(c) {
            '-'
        } else {
            c.to_ascii_lowercase()
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    let out = out.trim_matches('-').to_string();
    (!out.is_empty()).then_some(out)
}

/// The key of `project`'s index page (`project` normalized).
pub fn page_key(project: &str) -> Option<Key> {
    (normalize(project)? == project).then(|| Key {
        file: format!("pypi/simple/{project}/index.html"),
        kind: kind::PAGE,
        upstream: Upstream::new(PYPI),
        suffix: format!("/simple/{project}/"),
        companion: None,
    })
}

/// The key of a file of `project` whose index page gave it `sha256`.
pub fn file_key(project: &str, sha256: &str, filename: &str) -> Option<Key> {
    let hex = sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let safe_name = filename.len() <= 255
        && !filename.starts_with('.')
        && filename
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+!~".contains(&b));
    (hex && safe_name && normalize(project)? == project).then(|| Key {
        file: format!("pypi/files/{project}/{sha256}/{filename}"),
        kind: kind::FILE,
        upstream: Upstream::new(PYPI),
        suffix: String::new(),
        companion: None,
    })
}

/// The distribution and version a file name says: `<name>-<version>-…whl`
/// for a wheel, `<name>-<version>.<archive>` for an sdist.
pub fn name_and_version(filename: &str) -> Option<(&str, &str)> {
    if let Some(stem) = filename.strip_suffix(".whl") {
        let mut parts = stem.split('-');
        return Some((parts.next()?, parts.next()?));
    }
    let stem = [".tar.gz", ".tar.bz2", ".zip", ".tgz"]
        .iter()
        .find_map(|ext| filename.strip_suffix(ext))?;
    stem.rsplit_once('-')
}

/// `(project, sha256, filename)` of a file key.
pub fn file_parts(key: &Key) -> Option<(&str, &str, &str)> {
    let mut parts = key.file.strip_prefix("pypi/files/")?.split('/');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_as_pep_503_says() {
        assert_eq!(normalize("Foo.Bar__baz").as_deref(), Some("foo-bar-baz"));
        assert_eq!(
            normalize("zope.interface").as_deref(),
            Some("zope-interface")
        );
        assert_eq!(normalize("../etc"), None);
        assert_eq!(normalize("a/b"), None);
        assert_eq!(normalize(""), None);
        assert_eq!(normalize("---"), None);
    }

    #[test]
    fn file_names_say_name_and_version() {
        assert_eq!(
            name_and_version("alpha-1.0-py3-none-any.whl"),
            Some(("alpha", "1.0"))
        );
        assert_eq!(
            name_and_version("zope.interface-6.0.tar.gz"),
            Some(("zope.interface", "6.0"))
        );
        assert_eq!(name_and_version("my-pkg-2.1.zip"), Some(("my-pkg", "2.1")));
        assert_eq!(name_and_version("README"), None);
    }

    #[test]
    fn files_map_back_to_their_keys() {
        let sha = "a".repeat(64);
        let file = file_key("alpha", &sha, "alpha-1.0-py3-none-any.whl").unwrap();
        assert_eq!(Pypi.key_of_file(&file.file), Some(file.clone()));
        assert_eq!(
            file_parts(&file),
            Some(("alpha", sha.as_str(), "alpha-1.0-py3-none-any.whl"))
        );
        let page = page_key("alpha").unwrap();
        assert_eq!(Pypi.key_of_file(&page.file), Some(page));
        assert_eq!(page_key("Alpha"), None, "only the normalized name");
        assert_eq!(file_key("alpha", "ABC", "x.whl"), None);
        assert_eq!(file_key("alpha", &sha, "../x.whl"), None);
        assert_eq!(file_key("alpha", &sha, ".x"), None);
        assert_eq!(Pypi.key_of_file("pypi/files/alpha/x/y/z"), None);
        assert_eq!(Pypi.key_of_file("example.com/m/@v/list"), None);
    }
}
