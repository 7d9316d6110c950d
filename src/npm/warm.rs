//! `modgate cache warm package-lock.json`: every tarball a lockfile names
//! (lockfile v2/v3 `packages`, or v1 `dependencies`), checked against its
//! `integrity`. Pure.

use serde_json::Value;

use crate::cache::key::Key;

/// The tarball keys of a lockfile, and the entries it could not use
/// (`name: why`); linked and bundled packages are passed over.
pub fn parse_lock(text: &str) -> Result<(Vec<Key>, Vec<String>), String> {
    let lock: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let mut entries = Vec::new();
    if let Some(packages) = lock["packages"].as_object() {
        for (path, entry) in packages {
            if let Some((_, name)) = path.rsplit_once("node_modules/") {
                entries.push((name.to_string(), entry));
            }
        }
    } else {
        v1(&lock["dependencies"], &mut entries);
    }
    let mut keys = Vec::new();
    let mut bad = Vec::new();
    for (name, entry) in entries {
        if entry["link"].as_bool() == Some(true) || entry["bundled"].as_bool() == Some(true) {
            continue;
        }
        match key(&name, entry) {
            Some(key) if !keys.contains(&key) => keys.push(key),
            Some(_) => {}
            None => bad.push(format!("{name}: no resolved tarball with an integrity")),
        }
    }
    Ok((keys, bad))
}

/// Lockfile v1's nested `dependencies`.
fn v1<'a>(dependencies: &'a Value, into: &mut Vec<(String, &'a Value)>) {
    for (name, entry) in dependencies.as_object().into_iter().flatten() {
        into.push((name.clone(), entry));
        v1(&entry["dependencies"], into);
    }
}

fn key(name: &str, entry: &Value) -> Option<Key> {
    let hash = super::packument::hash_of(&serde_json::json!({
        "integrity": entry["integrity"],
    }))?;
    let resolved = entry["resolved"].as_str()?;
    let file = resolved.split(['?', '#']).next()?.rsplit('/').next()?;
    super::tree::tarball_key(name, &hash, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTEGRITY: &str = "sha512-2JfWtNkHwD51SSVrk4NYECUVpfFSDqjVZ6DleOX4p6KD0W0StQ+ZN/taiWf4UciSmZifhz9HAtkCF2YqanhMzA==";

    #[test]
    fn lockfiles_v3_and_v1() {
        let v3 = format!(
            r#"{{"lockfileVersion":3,"packages":{{"":{{"name":"app"}},
            "node_modules/@corp/lib":{{"version":"1.0.0","resolved":"https://r/@corp/lib/-/lib-1.0.0.tgz","integrity":"{INTEGRITY}"}},
            "node_modules/@corp/lib/node_modules/dep":{{"version":"2.0.0","resolved":"https://r/dep/-/dep-2.0.0.tgz","integrity":"{INTEGRITY}"}},
            "node_modules/local":{{"link":true}},
            "node_modules/odd":{{"version":"1.0.0"}}}}}}"#
        );
        let (keys, bad) = parse_lock(&v3).unwrap();
        let files: Vec<&str> = keys.iter().map(|k| k.file.as_str()).collect();
        assert_eq!(files.len(), 2);
        assert!(files[0].starts_with("npm/tarballs/@corp/lib/sha512-d897d6b4"));
        assert!(files[1].ends_with("/dep-2.0.0.tgz"));
        assert_eq!(bad, ["odd: no resolved tarball with an integrity"]);
        let v1 = format!(
            r#"{{"lockfileVersion":1,"dependencies":{{"a":{{"version":"1.0.0","resolved":"https://r/a/-/a-1.0.0.tgz","integrity":"{INTEGRITY}","dependencies":{{"b":{{"resolved":"https://r/b/-/b-1.0.0.tgz","integrity":"{INTEGRITY}"}}}}}}}}}}"#
        );
        assert_eq!(parse_lock(&v1).unwrap().0.len(), 2);
        assert!(parse_lock("not json").is_err());
    }
}
