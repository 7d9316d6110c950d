//! Go module request paths: which kind of request a path is, and which
//! module it names (decoded from `%21` and `!`-case-encoding). Pure.

/// What an intercepted request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/sumdb/<name>/supported` for a database modgate serves: 200.
    Supported,
    /// A module proxy request; the path is sent to mirrors unchanged.
    Proxy(&'a str),
    /// A request to checksum database `db`; `path` is appended to sumdb mirrors.
    Sumdb { db: &'a str, path: &'a str },
    /// Something modgate does not serve (404 with the reason).
    NotFound(&'static str),
}

/// What modgate does with one intercepted request: the single decision the
/// gomod handler acts on and `modgate explain` prints.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan<'a> {
    /// The path cannot be decoded (400).
    Invalid(&'static str),
    /// The module matches `gomod.private`: 403 from modgate, sent nowhere.
    Private { module: String, pattern: String },
    /// Served as the route says.
    Serve(Route<'a>),
}

impl Plan<'_> {
    /// A word for logs and `explain`.
    pub fn name(&self) -> &'static str {
        match self {
            Plan::Invalid(_) => "invalid",
            Plan::Private { .. } => "private",
            Plan::Serve(Route::Supported) => "supported",
            Plan::Serve(Route::NotFound(_)) => "not_served",
            Plan::Serve(Route::Proxy(_)) => "proxy_mirrors",
            Plan::Serve(Route::Sumdb { .. }) => "sumdb_mirrors",
        }
    }
}

/// Plans `path` arriving for `host` (a proxy or a sumdb host).
pub fn plan<'a>(
    host: &'a str,
    path: &'a str,
    sumdb_hosts: &[String],
    private: &crate::rules::Private,
) -> Plan<'a> {
    let on_sumdb = sumdb_hosts.iter().any(|h| h == host).then_some(host);
    let route = classify(on_sumdb, path, sumdb_hosts);
    match module_of(&route) {
        Err(reason) => Plan::Invalid(reason),
        Ok(Some(module)) => match private.find(&module) {
            Some(pattern) => Plan::Private {
                pattern: pattern.to_string(),
                module,
            },
            None => Plan::Serve(route),
        },
        Ok(None) => Plan::Serve(route),
    }
}

/// Classifies `path` (with query) arriving on a proxy host, or on the
/// host of checksum database `on_sumdb_host`.
pub fn classify<'a>(
    on_sumdb_host: Option<&'a str>,
    path: &'a str,
    sumdb_names: &[String],
) -> Route<'a> {
    if let Some(db) = on_sumdb_host {
        return Route::Sumdb { db, path };
    }
    let Some(rest) = path.strip_prefix("/sumdb/") else {
        return Route::Proxy(path);
    };
    let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if !sumdb_names.iter().any(|n| n == name) {
        return Route::NotFound("checksum database not served by this proxy");
    }
    if tail == "supported" {
        return Route::Supported;
    }
    Route::Sumdb {
        db: name,
        path: &path["/sumdb/".len() + name.len()..],
    }
}

/// The module a request is about, if it names one: `/<module>/@v/…`,
/// `/<module>/@latest` for the proxy protocol, `/lookup/<module>@<version>`
/// for a checksum database. `Err` for undecodable paths.
pub fn module_of(route: &Route<'_>) -> Result<Option<String>, &'static str> {
    let raw = match route {
        Route::Proxy(path) => {
            let path = path.split('?').next().unwrap_or_default();
            let path = path.strip_prefix('/').unwrap_or(path);
            match path.find("/@v/").or_else(|| path.find("/@latest")) {
                Some(end) => &path[..end],
                None => return Ok(None),
            }
        }
        Route::Sumdb { path, .. } => {
            let path = path.split('?').next().unwrap_or_default();
            match path.strip_prefix("/lookup/") {
                Some(lookup) => lookup.rsplit_once('@').map_or(lookup, |(m, _)| m),
                None => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    let unescaped = crate::percent::decode(raw)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or("bad %-escape in module path")?;
    case_decode(&unescaped)
        .map(Some)
        .ok_or("bad !-escape in module path")
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

    fn names() -> Vec<String> {
        vec!["sum.golang.org".to_string()]
    }

    #[test]
    fn classifies() {
        let n = names();
        assert_eq!(
            classify(None, "/sumdb/sum.golang.org/supported", &n),
            Route::Supported
        );
        assert_eq!(
            classify(None, "/sumdb/sum.golang.org/lookup/x@v1", &n),
            Route::Sumdb {
                db: "sum.golang.org",
                path: "/lookup/x@v1"
            }
        );
        assert_eq!(
            classify(Some("sum.golang.org"), "/tile/8/0/001", &n),
            Route::Sumdb {
                db: "sum.golang.org",
                path: "/tile/8/0/001"
            }
        );
        assert!(matches!(
            classify(None, "/sumdb/other.db/supported", &n),
            Route::NotFound(_)
        ));
        assert_eq!(
            classify(None, "/github.com/a/b/@v/list", &n),
            Route::Proxy("/github.com/a/b/@v/list")
        );
    }

    #[test]
    fn decodes_module_paths() {
        let m = |r: Route<'_>| module_of(&r).unwrap();
        assert_eq!(
            m(Route::Proxy("/github.com/!acme-!labs/x/@v/v1.0.0.zip")),
            Some("github.com/Acme-Labs/x".into())
        );
        assert_eq!(
            m(Route::Proxy("/github.com/%21acme/x/@v/list")),
            Some("github.com/Acme/x".into())
        );
        assert_eq!(
            m(Route::Proxy("/example.com/m/v2/@latest")),
            Some("example.com/m/v2".into())
        );
        assert_eq!(
            m(Route::Sumdb {
                db: "sum.golang.org",
                path: "/lookup/git.corp.example/a@v1.2.3"
            }),
            Some("git.corp.example/a".into())
        );
        assert_eq!(
            m(Route::Sumdb {
                db: "sum.golang.org",
                path: "/tile/8/0/x001"
            }),
            None
        );
        assert_eq!(
            m(Route::Sumdb {
                db: "sum.golang.org",
                path: "/latest"
            }),
            None
        );
        assert!(module_of(&Route::Proxy("/github.com/Acme/x/@v/list")).is_err());
        assert!(module_of(&Route::Proxy("/github.com/!/x/@v/list")).is_err());
        assert!(module_of(&Route::Proxy("/github.com/%zz/x/@v/list")).is_err());
    }
}
