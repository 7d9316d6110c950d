//! GOPRIVATE-syntax module patterns: comma-separated globs; a glob with N
//! slashes matches the first N+1 elements of the module path with
//! path.Match semantics (`*` never crosses `/`); case-sensitive. Pure.

#[derive(Clone, Debug, Default)]
pub struct Private {
    globs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern {0:?}: unclosed '[' or trailing '\\'")]
pub struct PatternError(pub String);

impl Private {
    pub fn parse(text: &str) -> Result<Private, Vec<PatternError>> {
        let globs: Vec<String> = text
            .split(',')
            .map(|g| g.trim().trim_end_matches('/'))
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect();
        let errors: Vec<PatternError> = globs
            .iter()
            .filter(|g| glob_match(g, "").is_none())
            .map(|g| PatternError(g.clone()))
            .collect();
        if errors.is_empty() {
            Ok(Private { globs })
        } else {
            Err(errors)
        }
    }

    /// The office's own domains, from `upstream.no_proxy` (names with a
    /// dot, `localhost` aside): each as itself and `*.<domain>`, so module
    /// paths under them never go to a public mirror.
    pub fn office_domains(no_proxy: &super::NoProxy) -> Private {
        let globs = no_proxy
            .rules()
            .filter_map(|(rule, _)| match rule {
                super::no_proxy::Rule::Domain(domain) => Some(domain),
                _ => None,
            })
            .filter(|domain| domain.contains('.') && !domain.ends_with("localhost"))
            .flat_map(|domain| [domain.to_string(), format!("*.{domain}")])
            .collect();
        Private { globs }
    }

    /// The patterns, as written.
    pub fn globs(&self) -> &[String] {
        &self.globs
    }

    /// The pattern matching `module`, if any.
    pub fn find(&self, module: &str) -> Option<&str> {
        self.globs.iter().map(String::as_str).find(|glob| {
            let elements = glob.matches('/').count() + 1;
            let mut parts = module.split('/');
            let prefix: Vec<&str> = parts.by_ref().take(elements).collect();
            prefix.len() == elements && glob_match(glob, &prefix.join("/")) == Some(true)
        })
    }
}

/// path.Match: `*` (no `/`), `?`, `[class]` with ranges and `^`, `\` escapes.
/// `None` for a malformed pattern.
fn glob_match(pattern: &str, name: &str) -> Option<bool> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Validate the whole pattern first, as path.Match reports bad patterns.
    let mut i = 0;
    while i < p.len() {
        i = match p[i] {
            '[' => class_end(&p, i)?,
            '\\' if i + 1 >= p.len() => return None,
            '\\' => i + 2,
            _ => i + 1,
        };
    }
    Some(match_from(&p, &n))
}

fn match_from(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len())
            .take_while(|&k| k == 0 || n[k - 1] != '/')
            .any(|k| match_from(&p[1..], &n[k..])),
        Some(_) if n.is_empty() => false,
        Some('?') => n[0] != '/' && match_from(&p[1..], &n[1..]),
        Some('[') => {
            let end = class_end(p, 0).unwrap_or(p.len());
            n[0] != '/' && class_matches(&p[1..end - 1], n[0]) && match_from(&p[end..], &n[1..])
        }
        Some('\\') => p.get(1) == Some(&n[0]) && match_from(&p[2..], &n[1..]),
        Some(c) => *c == n[0] && match_from(&p[1..], &n[1..]),
    }
}

/// Index just past the `]` closing the class that starts at `start`.
fn class_end(p: &[char], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if p.get(i) == Some(&'^') {
        i += 1;
    }
    let first = i;
    while i < p.len() {
        match p[i] {
            ']' if i > first => return Some(i + 1),
            '\\' => i += 2,
            _ => i += 1,
        }
    }
    None
}

fn class_matches(class: &[char], c: char) -> bool {
    let (negated, class) = match class.first() {
        Some('^') => (true, &class[1..]),
        _ => (false, class),
    };
    let mut i = 0;
    let mut found = false;
    while i < class.len() {
        let (lo, next) = unescape(class, i);
        if class.get(next) == Some(&'-') && next + 1 < class.len() {
            let (hi, after) = unescape(class, next + 1);
            found |= lo <= c && c <= hi;
            i = after;
        } else {
            found |= lo == c;
            i = next;
        }
    }
    found != negated
}

fn unescape(class: &[char], i: usize) -> (char, usize) {
    match class[i] {
        '\\' if i + 1 < class.len() => (class[i + 1], i + 2),
        c => (c, i + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_office_domains_are_private() {
        let no_proxy = crate::rules::NoProxy::parse(
            "localhost,127.0.0.0/8,::1,.corp.example,git.internal.example:8443,*.lab.example,intranet",
        )
        .unwrap();
        let private = Private::office_domains(&no_proxy);
        for module in [
            "corp.example/team/m",
            "git.corp.example/team/m",
            "git.internal.example/a",
            "x.lab.example/b",
        ] {
            assert!(private.find(module).is_some(), "{module}");
        }
        for module in [
            "github.com/a/b",
            "badcorp.example/x",
            "localhost/x",
            "intranet/x",
        ] {
            assert!(private.find(module).is_none(), "{module}");
        }
    }
    use proptest::prelude::*;

    #[test]
    fn goprivate_semantics() {
        let p = Private::parse(
            "git.corp.example/*, *.internal, github.com/acme/secret, rsc.io/[a-c]?x",
        )
        .unwrap();
        assert_eq!(p.find("git.corp.example/team"), Some("git.corp.example/*"));
        assert_eq!(
            p.find("git.corp.example/team/sub/v2"),
            Some("git.corp.example/*")
        );
        assert_eq!(p.find("git.corp.example"), None, "needs two elements");
        assert_eq!(p.find("foo.internal/x"), Some("*.internal"));
        assert_eq!(p.find("a.b.internal"), Some("*.internal"));
        assert_eq!(
            p.find("github.com/acme/secret/v2"),
            Some("github.com/acme/secret")
        );
        assert_eq!(p.find("github.com/acme/public"), None);
        assert_eq!(p.find("github.com/Acme/secret"), None, "case-sensitive");
        assert_eq!(p.find("rsc.io/bzx/y"), Some("rsc.io/[a-c]?x"));
        assert_eq!(p.find("rsc.io/dzx"), None);
        assert_eq!(p.find("notgit.corp.example/team"), None);
    }

    #[test]
    fn bad_patterns() {
        assert!(Private::parse("ok/*, bad[").is_err());
        assert!(Private::parse("").unwrap().find("x").is_none());
    }

    proptest! {
        #[test]
        fn never_panics(pattern in "[a-z*?\\[\\]\\\\^/.-]{0,24}", module in "[a-z/.-]{0,32}") {
            if let Ok(p) = Private::parse(&pattern) {
                let _ = p.find(&module);
            }
        }
    }
}
