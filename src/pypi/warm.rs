//! `modgate cache warm requirements.txt`: the files a requirements file in
//! pip's hash-checking form names (`name==version --hash=sha256:…`), found
//! on the project's page and checked against those hashes. Parsing is pure.

use crate::cache::Cache;
use crate::cache::key::Key;

/// One pinned requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// Normalized.
    pub project: String,
    pub version: String,
    /// Lower-case hex.
    pub hashes: Vec<String>,
}

/// The requirements of `text`, and the lines it could not use
/// (`line number: text`): a requirement that is not `name==version`, or
/// has no `--hash=sha256:`. Options (`-r`, `--index-url`) and comments
/// are passed over.
pub fn parse_requirements(text: &str) -> (Vec<Requirement>, Vec<String>) {
    let mut found = Vec::new();
    let mut bad = Vec::new();
    let mut logical = String::new();
    let mut first = 0;
    for (number, line) in text.lines().enumerate() {
        if logical.is_empty() {
            first = number + 1;
        }
        let line = match line.find(" #") {
            Some(at) => &line[..at],
            None if line.trim_start().starts_with('#') => "",
            None => line,
        };
        match line.trim_end().strip_suffix('\\') {
            Some(part) => {
                logical.push_str(part);
                logical.push(' ');
                continue;
            }
            None => logical.push_str(line),
        }
        let whole = std::mem::take(&mut logical);
        let whole = whole.trim();
        if whole.is_empty() || whole.starts_with('-') {
            continue;
        }
        match requirement(whole) {
            Some(req) => found.push(req),
            None => bad.push(format!("{first}: {whole}")),
        }
    }
    (found, bad)
}

fn requirement(line: &str) -> Option<Requirement> {
    let mut words = line.split_whitespace();
    let spec = words.next()?;
    let spec = spec.split(';').next()?;
    let (name, version) = spec.split_once("==")?;
    let name = name.split('[').next()?;
    let hashes: Vec<String> = words
        .filter_map(|w| w.strip_prefix("--hash=sha256:"))
        .map(str::to_ascii_lowercase)
        .collect();
    if hashes.is_empty() || version.is_empty() {
        return None;
    }
    Some(Requirement {
        project: super::tree::normalize(name)?,
        version: version.to_string(),
        hashes,
    })
}

/// The keys of `requirement`'s files: those its project's page (through
/// `cache`) lists with one of its hashes.
pub async fn keys(cache: &Cache, requirement: &Requirement) -> Result<Vec<Key>, String> {
    let project = &requirement.project;
    let page = super::tree::page_key(project).ok_or("not a project name")?;
    let text = cache.bytes(&page, 64 << 20).await?;
    let (links, _) = super::page::links(&String::from_utf8_lossy(&text))?;
    let keys: Vec<Key> = links
        .iter()
        .filter(|l| requirement.hashes.contains(&l.sha256))
        .filter_map(|l| super::tree::file_key(project, &l.sha256, &l.filename))
        .collect();
    if keys.is_empty() {
        return Err(format!(
            "{project}'s page lists no file with the hashes given for {}",
            requirement.version
        ));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_checking_requirements() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let text = format!(
            "# pinned\n--index-url https://x/simple\nAlpha_Pkg[extra]==1.0 ; python_version >= \"3\" \\\n    --hash=sha256:{a} \\\n    --hash=sha256:{b}\nbeta==2.0 --hash=sha256:{a}  # trailing\ngamma>=3\ndelta==1.0\n"
        );
        let (found, bad) = parse_requirements(&text);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].project, "alpha-pkg");
        assert_eq!(found[0].version, "1.0");
        assert_eq!(found[0].hashes, [a.clone(), "b".repeat(64)]);
        assert_eq!(found[1].project, "beta");
        assert_eq!(bad, ["7: gamma>=3", "8: delta==1.0"]);
    }
}
