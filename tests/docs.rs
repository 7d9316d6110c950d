//! The README's configuration table says what the embedded default config
//! says: every default written as a TOML value is the value of that key in
//! `config/modgate.toml` (which is the embedded default), so the two cannot
//! drift apart.

use std::path::Path;

fn repo(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap()
}

/// `(key, default)` of each table row whose default is one TOML value in
/// backticks (prose defaults such as "none" or "loopback + RFC 1918" are
/// not compared).
fn literal_defaults(readme: &str) -> Vec<(String, toml::Value)> {
    readme
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let key = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let default = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            if !key.contains('.') || default.contains('`') {
                return None;
            }
            let value = format!("v = {default}").parse::<toml::Table>().ok()?;
            Some((key.to_string(), value["v"].clone()))
        })
        .collect()
}

#[test]
fn the_readme_defaults_are_the_embedded_defaults() {
    let readme = repo("README.md");
    let config: toml::Table = repo("config/modgate.toml").parse().unwrap();
    let rows = literal_defaults(&readme);
    assert!(rows.len() > 20, "the table was not found: {rows:?}");
    for (key, default) in rows {
        let (section, name) = key.split_once('.').unwrap();
        let written = config
            .get(section)
            .and_then(|s| s.get(name))
            .unwrap_or_else(|| {
                panic!("README gives {key} = {default}; config/modgate.toml does not set it")
            });
        assert_eq!(
            written, &default,
            "{key}: README and config/modgate.toml differ"
        );
    }
}

/// Every option of every command says what it does in `--help` (a bare
/// `--config <CONFIG>` told an admin nothing).
#[test]
fn every_option_has_help() {
    let commands: &[&[&str]] = &[
        &["run"],
        &["reload"],
        &["check"],
        &["ca", "init"],
        &["ca", "show"],
        &["ca", "bundle"],
        &["cache", "stats"],
        &["cache", "verify"],
        &["cache", "prune"],
        &["cache", "warm"],
        &["env"],
        &["doctor"],
        &["explain"],
    ];
    for command in commands {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_modgate"))
            .args(*command)
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command:?}: {help}");
        let options = help.split("Options:").nth(1).unwrap_or("");
        for line in options.lines().filter(|l| l.trim_start().starts_with('-')) {
            // "  -x, --name <VALUE>  Text": the text after two spaces or more.
            let text = line
                .trim()
                .split("  ")
                .skip(1)
                .any(|part| !part.trim().is_empty());
            assert!(text, "{command:?}: an option without help: {line:?}");
        }
    }
}

/// The cache core knows no ecosystem: nothing under src/cache/ names one
/// (Go's modules and checksum databases live in src/gomod/ and src/sumdb/,
/// and reach the cache through its `Ecosystem`, `Source` and `Checker`).
#[test]
fn the_cache_core_imports_no_ecosystem() {
    let mut files = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cache")];
    let mut offending = Vec::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = !line.trim_start().starts_with("//");
            if code
                && ["gomod::", "sumdb::", "pypi::", "npm::"]
                    .iter()
                    .any(|e| line.contains(e))
            {
                offending.push(format!("{}:{}: {line}", path.display(), n + 1));
            }
        }
    }
    assert!(offending.is_empty(), "{}", offending.join("\n"));
}
