//! Python packages through the gateway: a project's index page from the
//! healthiest PyPI mirror, its file links rewritten to come back through
//! modgate, each file checked against the sha256 its page gave before it
//! is stored or its last bytes are released, all kept in the cache.

mod check;
mod handler;

pub use handler::Pypi;
pub mod page;
pub mod tree;
pub mod warm;

use crate::cache::key::Key;

/// Each of `links` (on the page at `url`): its sha256 and absolute URL.
pub fn locations(url: &str, links: &[page::Link]) -> Vec<(String, String)> {
    (links.iter())
        .filter_map(|link| {
            let at = page::resolve(url, &link.href)?.into_owned();
            Some((link.sha256.clone(), at))
        })
        .collect()
}

/// PyPI as its mirrors serve it: a project's page lists its files by sha256.
pub struct Index;

impl crate::indexed::Index for Index {
    fn index_url(&self, base: &str, project: &str) -> String {
        format!("{base}/simple/{project}/")
    }

    fn locations(&self, url: &str, document: &str) -> Vec<(String, String)> {
        let (links, _) = page::links(document).unwrap_or_default();
        locations(url, &links)
    }

    fn file_of<'a>(&self, key: &'a Key) -> Option<(&'a str, &'a str)> {
        let (project, sha256, _) = tree::file_parts(key)?;
        Some((project, sha256))
    }

    fn package_of<'a>(&self, key: &'a Key) -> &'a str {
        key.suffix.trim_matches('/').trim_start_matches("simple/")
    }

    fn describe(&self, file: &str) -> String {
        let filename = file.rsplit('/').next().unwrap_or(file);
        match tree::name_and_version(filename) {
            Some((name, version)) => format!("{name} {version} ({filename})"),
            None => filename.to_string(),
        }
    }
}
