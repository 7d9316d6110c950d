//! `modgate cache warm`: fills the cache from a go.sum (each `.mod` and
//! `.zip` it names, checked against its `h1:` hash before it is stored) or a
//! vendor/modules.txt (no hashes to check). Parsing is pure.

use std::sync::Arc;

use super::check::module_file;
use super::path::case_encode;
use super::tree::proxy_key;
use crate::cache::flight::{Check, MakeCheck, Refusal};
use crate::cache::key::Key;
use crate::cache::{Cache, How};

/// One file to fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub module: String,
    pub version: String,
    pub zip: bool,
    /// The `h1:` hash the file must have, when the list gives one.
    pub hash: Option<String>,
}

impl Want {
    pub fn describe(&self) -> String {
        let ext = if self.zip { "zip" } else { "mod" };
        format!("{}@{}.{ext}", self.module, self.version)
    }

    pub fn key(&self) -> Option<Key> {
        let ext = if self.zip { "zip" } else { "mod" };
        proxy_key(&format!(
            "/{}/@v/{}.{ext}",
            case_encode(&self.module),
            case_encode(&self.version)
        ))
    }
}

/// The files a go.sum or modules.txt names, and the lines it could not read
/// (`line number: text`).
pub fn parse_list(text: &str) -> (Vec<Want>, Vec<String>) {
    let modules_txt = text.lines().any(|l| l.starts_with("# "));
    let mut wants = Vec::new();
    let mut bad = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        let parsed = if modules_txt {
            modules_txt_line(line)
        } else {
            go_sum_line(line)
        };
        match parsed {
            Some(found) => wants.extend(found),
            None => bad.push(format!("{}: {line}", number + 1)),
        }
    }
    (wants, bad)
}

/// `<module> <version>[/go.mod] h1:<hash>`; blank lines give nothing.
fn go_sum_line(line: &str) -> Option<Vec<Want>> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [] => Some(Vec::new()),
        [module, version, hash] if hash.starts_with("h1:") => {
            let (version, zip) = match version.strip_suffix("/go.mod") {
                Some(v) => (v, false),
                None => (*version, true),
            };
            Some(vec![Want {
                module: module.to_string(),
                version: version.to_string(),
                zip,
                hash: Some(hash.to_string()),
            }])
        }
        _ => None,
    }
}

/// `# <module> <version> [=> <replacement> <version>]`: the module (or its
/// replacement) as a `.mod` and a `.zip`; a local replacement, `##`
/// annotations and package lines give nothing.
fn modules_txt_line(line: &str) -> Option<Vec<Want>> {
    let Some(rest) = line.strip_prefix("# ") else {
        return Some(Vec::new());
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    let (module, version) = match words.as_slice() {
        [_, "=>", _] | [_, _, "=>", _] => return Some(Vec::new()),
        [_, "=>", module, version] | [_, _, "=>", module, version] | [module, version] => {
            (*module, *version)
        }
        _ => return None,
    };
    Some(
        [false, true]
            .into_iter()
            .map(|zip| Want {
                module: module.to_string(),
                version: version.to_string(),
                zip,
                hash: None,
            })
            .collect(),
    )
}

/// Fetches one file into the cache through the mirrors; `Ok` says whether
/// it was there already.
pub async fn fetch(cache: &Cache, want: &Want) -> Result<How, String> {
    let key = want
        .key()
        .ok_or_else(|| "not a module version the cache can hold".to_string())?;
    cache.fill(&key, check(want)).await
}

/// The check of `want`'s file: against its go.sum hash, when the list gave one.
pub fn check(want: &Want) -> MakeCheck {
    let (expected, go_mod) = (want.hash.clone(), !want.zip);
    Arc::new(move || {
        let Some(expected) = expected.clone() else {
            return Check::new(|_| async { Ok(()) });
        };
        let Check { tap, verdict } = module_file(async { Ok(expected) }, go_mod);
        Check {
            tap,
            ..Check::new(move |content| async move {
                verdict(content).await.map_err(|refused| match refused {
                    Refusal::Bad(why) => Refusal::Bad(why.replace("expected", "go.sum has")),
                    unchecked => unchecked,
                })
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_sum() {
        let text =
            "example.com/A v1.0.0 h1:abc=\nexample.com/A v1.0.0/go.mod h1:def=\n\nbroken line\n";
        let (wants, bad) = parse_list(text);
        assert_eq!(wants.len(), 2);
        assert!(wants[0].zip && !wants[1].zip);
        assert_eq!(wants[1].hash.as_deref(), Some("h1:def="));
        assert_eq!(wants[0].key().unwrap().file, "example.com/!a/@v/v1.0.0.zip");
        assert_eq!(bad, ["4: broken line"]);
    }

    #[test]
    fn modules_txt() {
        let text = "# example.com/a v1.2.0\n## explicit; go 1.21\nexample.com/a\n# example.com/b v1.0.0 => example.com/c v1.1.0\n# example.com/d => ../d\n";
        let (wants, bad) = parse_list(text);
        assert!(bad.is_empty());
        let names: Vec<String> = wants.iter().map(Want::describe).collect();
        assert_eq!(
            names,
            [
                "example.com/a@v1.2.0.mod",
                "example.com/a@v1.2.0.zip",
                "example.com/c@v1.1.0.mod",
                "example.com/c@v1.1.0.zip"
            ]
        );
    }
}
