//! Go module request paths, as the one decision a module request gets: a
//! path is parsed into its typed form (a module proxy file, or a checksum
//! database lookup, tile or latest) or refused; the private check runs on
//! the typed module path, and a mirror is only ever asked for the path
//! built back from the typed form. Pure.

use http::StatusCode;

use super::tree::{GoUpstream, kind, proxy_key, sumdb_key};
use crate::cache::key::Key;

/// What modgate does with one module request: the single decision the
/// gomod handler acts on and `modgate explain` prints.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// modgate answers itself; no mirror is asked.
    Own(Own),
    /// Fetched through the cache from the mirrors, by the typed request's key.
    Fetch(Key),
}

/// A request modgate answers itself.
#[derive(Debug, PartialEq, Eq)]
pub enum Own {
    /// Not a module proxy or checksum database path (400).
    Invalid(&'static str),
    /// The module matches `gomod.private` (403), sent nowhere.
    Private { module: String, pattern: String },
    /// `/sumdb/<name>/supported` for a database modgate serves: 200.
    Supported,
    /// A checksum database modgate does not serve: 404, so the go command
    /// asks it directly.
    NotServed(&'static str),
}

impl Plan {
    /// A word for logs and `explain`.
    pub fn name(&self) -> &'static str {
        match self {
            Plan::Own(Own::Invalid(_)) => "invalid",
            Plan::Own(Own::Private { .. }) => "private",
            Plan::Own(Own::Supported) => "supported",
            Plan::Own(Own::NotServed(_)) => "not_served",
            Plan::Fetch(key) if GoUpstream::of(&key.upstream) == GoUpstream::Proxy => {
                "proxy_mirrors"
            }
            Plan::Fetch(_) => "sumdb_mirrors",
        }
    }
}

impl Own {
    /// The status and `text/plain` body: the one place they are decided,
    /// for the running proxy and `explain` alike.
    pub fn answer(&self) -> (StatusCode, String) {
        match self {
            Own::Invalid(reason) => (StatusCode::BAD_REQUEST, format!("modgate: {reason}\n")),
            // 403, not 404: the go command stops and shows this, where a
            // 404 would send it on to `direct` and show only that error.
            Own::Private { module, pattern } => (
                StatusCode::FORBIDDEN,
                format!(
                    "modgate: {module} is private (gomod.private {pattern:?}): never sent to a mirror; set GOPRIVATE={pattern} so the go command fetches it itself\n"
                ),
            ),
            Own::Supported => (StatusCode::OK, String::new()),
            Own::NotServed(reason) => (StatusCode::NOT_FOUND, format!("modgate: {reason}\n")),
        }
    }
}

/// Plans `path` (with its query, as received) arriving for `host` (a proxy
/// or a sumdb host).
pub fn plan(
    host: &str,
    path: &str,
    sumdb_hosts: &[String],
    private: &crate::rules::Private,
) -> Plan {
    let key = match typed(host, path, sumdb_hosts) {
        Ok(key) => key,
        Err(own) => return Plan::Own(own),
    };
    let Some(module) = module_of(&key) else {
        return Plan::Fetch(key);
    };
    let Some(module) = case_decode(module) else {
        return Plan::Own(Own::Invalid("bad !-escape in module path"));
    };
    match private.find(&module) {
        Some(pattern) => Plan::Own(Own::Private {
            pattern: pattern.to_string(),
            module,
        }),
        None => Plan::Fetch(key),
    }
}

/// Parses `path` on a proxy host, or on the host of a checksum database,
/// into the key of the file it asks for.
fn typed(host: &str, path: &str, sumdb_names: &[String]) -> Result<Key, Own> {
    const NOT_SUMDB: Own = Own::Invalid("not a checksum database path (lookup, tile or latest)");
    if path.contains('?') {
        return Err(Own::Invalid(
            "a query string is not part of the module proxy protocol",
        ));
    }
    if sumdb_names.iter().any(|h| h == host) {
        return sumdb_key(host, path).ok_or(NOT_SUMDB);
    }
    let Some(rest) = path.strip_prefix("/sumdb/") else {
        return proxy_key(path).ok_or(Own::Invalid(
            "not a module proxy path (<module>/@v/list, <module>/@v/<version>.info|mod|zip or <module>/@latest)",
        ));
    };
    let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(db) = sumdb_names.iter().find(|n| *n == name) else {
        return Err(Own::NotServed("checksum database not served by this proxy"));
    };
    if tail == "supported" {
        return Err(Own::Supported);
    }
    sumdb_key(db, &format!("/{tail}")).ok_or(NOT_SUMDB)
}

/// The module a typed request is about (as the tree holds it: upper case
/// `!`-encoded): a proxy file's, or a checksum database lookup's.
fn module_of(key: &Key) -> Option<&str> {
    match key.kind {
        kind::LOOKUP => {
            let lookup = key.suffix.strip_prefix("/lookup/")?;
            Some(lookup.rsplit_once('@').map_or(lookup, |(m, _)| m))
        }
        kind::TILE | kind::SUMDB_LATEST => None,
        kind::LATEST => key.file.strip_suffix("/@latest"),
        _ => key.file.rsplit_once("/@v/").map(|(m, _)| m),
    }
}

/// `X` -> `!x`: how the go command writes a module path or version in a URL.
pub fn case_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        if c.is_ascii_uppercase() {
            out.push('!');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `!x` -> `X` (the go command's case-encoding); upper case or a lone `!` is invalid.
pub fn case_decode(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '!' => {
                let next = chars.next().filter(char::is_ascii_lowercase)?;
                out.push(next.to_ascii_uppercase());
            }
            c if c.is_ascii_uppercase() => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Private;

    fn plan_of(host: &str, path: &str, private: &str) -> Plan {
        let names = vec!["sum.golang.org".to_string()];
        plan(host, path, &names, &Private::parse(private).unwrap())
    }

    fn suffix(host: &str, path: &str) -> Option<String> {
        match plan_of(host, path, "") {
            Plan::Fetch(key) => Some(key.suffix),
            _ => None,
        }
    }

    #[test]
    fn plans_each_kind_of_path() {
        let p = "proxy.golang.org";
        assert_eq!(
            plan_of(p, "/sumdb/sum.golang.org/supported", ""),
            Plan::Own(Own::Supported)
        );
        assert!(matches!(
            plan_of(p, "/sumdb/other.db/supported", ""),
            Plan::Own(Own::NotServed(_))
        ));
        assert_eq!(
            suffix(p, "/sumdb/sum.golang.org/lookup/x.example/m@v1.0.0").as_deref(),
            Some("/lookup/x.example/m@v1.0.0")
        );
        assert_eq!(
            suffix("sum.golang.org", "/tile/8/0/001").as_deref(),
            Some("/tile/8/0/001")
        );
        assert_eq!(
            suffix(p, "/github.com/%21acme/b/@v/list").as_deref(),
            Some("/github.com/!acme/b/@v/list")
        );
        assert_eq!(
            plan_of(p, "/github.com/a/b/@v/list", "").name(),
            "proxy_mirrors"
        );
        assert_eq!(
            plan_of("sum.golang.org", "/latest", "").name(),
            "sumdb_mirrors"
        );
    }

    /// Paths that would reach another path on a mirror's host, or slip past
    /// the private guard, are refused (400) and sent nowhere.
    #[test]
    fn escaping_paths_are_refused() {
        let p = "proxy.golang.org";
        for path in [
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/..%2fsecret.txt",
            "/%2e%2e%2fcorp.example.com/secret/@v/list",
            "//x/@v/list",
            "/./x/@v/list",
            "/x/../corp.example.com/secret/@v/list",
            "/x/./m/@v/list",
            "/x/m/@v/list?x=1",
            "/x/m/@v/list?",
            "/x/m/@v/v1.0.0.zip/../../../y",
            "/x/m/@v/%2e%2e%2f%2e%2e%2fy.info",
            "/sumdb/sum.golang.org/../../x",
            "/sumdb/sum.golang.org/lookup/../x@v1.0.0",
            "/sumdb/sum.golang.org/tile/8/0/../../x",
            "/sumdb/sum.golang.org/latest?x",
            "/",
            "/healthz",
        ] {
            let plan = plan_of(p, path, "corp.example.com");
            let Plan::Own(own @ Own::Invalid(_)) = &plan else {
                panic!("{path}: {plan:?}");
            };
            assert_eq!(own.answer().0, StatusCode::BAD_REQUEST, "{path}");
        }
        for path in [
            "/../x",
            "/lookup/x/../../y@v1.0.0",
            "//latest",
            "/supported",
        ] {
            let plan = plan_of("sum.golang.org", path, "");
            assert!(
                matches!(plan, Plan::Own(Own::Invalid(_))),
                "{path}: {plan:?}"
            );
        }
    }

    #[test]
    fn the_private_check_runs_on_the_typed_module() {
        let private = "git.corp.example/*,Corp.example";
        for (host, path) in [
            ("proxy.golang.org", "/git.corp.example/team/@v/list"),
            ("proxy.golang.org", "/git.corp.example/team/sub/@latest"),
            ("proxy.golang.org", "/git.corp.example/%74eam/@v/v1.0.0.zip"),
            ("proxy.golang.org", "/!corp.example/m/@v/v1.0.0.mod"),
            ("proxy.golang.org", "/%21corp.example/@v/list"),
            (
                "proxy.golang.org",
                "/sumdb/sum.golang.org/lookup/git.corp.example/a@v1.2.3",
            ),
            ("sum.golang.org", "/lookup/git.corp.example/a/b@v1.2.3"),
        ] {
            let plan = plan_of(host, path, private);
            let Plan::Own(own @ Own::Private { .. }) = &plan else {
                panic!("{path}: {plan:?}");
            };
            assert_eq!(own.answer().0, StatusCode::FORBIDDEN);
        }
        assert!(matches!(
            plan_of("proxy.golang.org", "/github.com/Acme/x/@v/list", ""),
            Plan::Own(Own::Invalid(_))
        ));
        assert!(matches!(
            plan_of("proxy.golang.org", "/github.com/!/x/@v/list", ""),
            Plan::Own(Own::Invalid(_))
        ));
        assert!(matches!(
            plan_of("proxy.golang.org", "/github.com/%zz/x/@v/list", ""),
            Plan::Own(Own::Invalid(_))
        ));
    }
}
