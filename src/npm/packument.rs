//! A packument as a mirror serves it, read for its tarballs' hashes and
//! locations, and as modgate serves it back: every `dist.tarball`
//! rewritten to come back through modgate
//! (`<base>/-/files/<name>/<hash>/<file>`), whole or abbreviated (npm's
//! `application/vnd.npm.install-v1+json`) as the client asks. A version
//! with neither `dist.integrity` (sha512) nor `dist.shasum` is left out:
//! modgate could not check its tarball. Pure.

use base64::Engine;
use serde_json::{Map, Value};

/// The media type of an abbreviated packument.
pub const ABBREVIATED: &str = "application/vnd.npm.install-v1+json";

/// The fields an abbreviated packument keeps of each version.
const VERSION_FIELDS: [&str; 15] = [
    "name",
    "version",
    "dependencies",
    "optionalDependencies",
    "peerDependencies",
    "peerDependenciesMeta",
    "bundleDependencies",
    "bin",
    "directories",
    "dist",
    "engines",
    "os",
    "cpu",
    "deprecated",
    "hasInstallScript",
];

/// `sha512-<hex>` from `dist.integrity`, else `sha1-<hex>` from `dist.shasum`.
pub fn hash_of(dist: &Value) -> Option<String> {
    let sha512 = dist["integrity"]
        .as_str()
        .and_then(|i| i.split_whitespace().find_map(|h| h.strip_prefix("sha512-")))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .filter(|raw| raw.len() == 64);
    if let Some(raw) = sha512 {
        return Some(format!("sha512-{}", crate::sha256::hex(&raw)));
    }
    let sha1 = dist["shasum"].as_str()?.to_ascii_lowercase();
    (sha1.len() == 40 && sha1.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("sha1-{sha1}"))
}

/// The tarball's file name: the last element of its URL.
fn file_of(tarball: &str) -> Option<&str> {
    let path = tarball.split(['?', '#']).next()?;
    path.rsplit('/').next().filter(|f| !f.is_empty())
}

/// Each version's tarball: `(hash, URL at the mirror)`.
pub fn locations(doc: &Value) -> Vec<(String, String)> {
    let Some(versions) = doc["versions"].as_object() else {
        return Vec::new();
    };
    versions
        .values()
        .filter_map(|v| {
            let url = v["dist"]["tarball"].as_str()?;
            Some((hash_of(&v["dist"])?, url.to_string()))
        })
        .collect()
}

/// `doc` (of package `name`) as modgate serves it: tarballs at `base`
/// (`http://gateway:3128/npm`, or `https://registry.npmjs.org`
/// intercepted), versions it cannot check left out, abbreviated when asked.
pub fn served(mut doc: Value, name: &str, base: &str, abbreviated: bool) -> Value {
    if let Some(versions) = doc.get_mut("versions").and_then(Value::as_object_mut) {
        versions.retain(|_, version| rewrite(version, name, base));
    }
    if let Some(all) = doc.as_object_mut() {
        all.remove("_attachments");
    }
    if abbreviated { abbreviate(&doc) } else { doc }
}

/// Points `version`'s tarball at modgate; `false` when it has no hash or
/// no usable file name.
fn rewrite(version: &mut Value, name: &str, base: &str) -> bool {
    let dist = &mut version["dist"];
    let (Some(hash), Some(file)) = (hash_of(dist), dist["tarball"].as_str().and_then(file_of))
    else {
        return false;
    };
    if super::tree::tarball_key(name, &hash, file).is_none() {
        return false;
    }
    dist["tarball"] = Value::String(format!("{base}/-/files/{name}/{hash}/{file}"));
    true
}

fn abbreviate(doc: &Value) -> Value {
    let mut versions = Map::new();
    for (number, version) in doc["versions"].as_object().into_iter().flatten() {
        let kept: Map<String, Value> = VERSION_FIELDS
            .iter()
            .filter_map(|f| Some((f.to_string(), version.get(*f)?.clone())))
            .collect();
        versions.insert(number.clone(), Value::Object(kept));
    }
    let mut out = Map::new();
    for field in ["name", "dist-tags", "modified"] {
        if let Some(value) = doc.get(field) {
            out.insert(field.into(), value.clone());
        }
    }
    out.insert("versions".into(), Value::Object(versions));
    Value::Object(out)
}

/// Whether a client's `Accept` asks for the abbreviated form.
pub fn wants_abbreviated(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains(ABBREVIATED))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        serde_json::json!({
            "name": "@corp/lib",
            "dist-tags": {"latest": "1.0.0"},
            "readme": "long",
            "_attachments": {"x": 1},
            "versions": {
                "1.0.0": {
                    "name": "@corp/lib", "version": "1.0.0", "readme": "r",
                    "dependencies": {"plain": "^2"},
                    "dist": {
                        "integrity": "sha512-2JfWtNkHwD51SSVrk4NYECUVpfFSDqjVZ6DleOX4p6KD0W0StQ+ZN/taiWf4UciSmZifhz9HAtkCF2YqanhMzA==",
                        "shasum": "d57eaa860ae3f8c982775e76ae7c342a01dc2974",
                        "tarball": "http://127.0.0.1:4873/@corp/lib/-/lib-1.0.0.tgz"
                    }
                },
                "0.9.0": {"dist": {"shasum": "D57EAA860AE3F8C982775E76AE7C342A01DC2974", "tarball": "https://m.example/lib-0.9.0.tgz"}},
                "0.1.0": {"dist": {"tarball": "https://m.example/lib-0.1.0.tgz"}}
            }
        })
    }

    #[test]
    fn tarballs_come_back_through_modgate() {
        let served = served(doc(), "@corp/lib", "http://gw:3128/npm", false);
        let tarball = served["versions"]["1.0.0"]["dist"]["tarball"]
            .as_str()
            .unwrap();
        assert!(
            tarball.starts_with("http://gw:3128/npm/-/files/@corp/lib/sha512-d897d6b4"),
            "{tarball}"
        );
        assert!(tarball.ends_with("/lib-1.0.0.tgz"));
        let old = served["versions"]["0.9.0"]["dist"]["tarball"]
            .as_str()
            .unwrap();
        assert!(
            old.contains("/sha1-d57eaa860ae3f8c982775e76ae7c342a01dc2974/lib-0.9.0.tgz"),
            "{old}"
        );
        assert!(
            served["versions"].get("0.1.0").is_none(),
            "no hash: left out"
        );
        assert!(served.get("_attachments").is_none());
        assert_eq!(locations(&doc()).len(), 2);
    }

    #[test]
    fn abbreviated_keeps_what_installs_need() {
        let short = served(doc(), "@corp/lib", "https://registry.npmjs.org", true);
        assert!(short.get("readme").is_none());
        let version = &short["versions"]["1.0.0"];
        assert!(version.get("readme").is_none());
        assert_eq!(version["dependencies"]["plain"], "^2");
        assert!(version["dist"]["integrity"].is_string());
        assert!(wants_abbreviated(Some(
            "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
        )));
        assert!(!wants_abbreviated(Some("application/json")));
    }
}
