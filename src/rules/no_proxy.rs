//! The NO_PROXY-syntax host matcher, used by `upstream.no_proxy` and
//! `intercept.bypass`. Compiled once from the config text; matching is pure.
//!
//! Syntax: entries separated by commas and/or whitespace, case-insensitive,
//! trailing dot ignored. `example.com`, `.example.com` and `*.example.com`
//! match the apex and every subdomain on a label boundary. `*` matches
//! everything. IP literals (IPv6 with or without brackets) and CIDRs match
//! IP-literal hosts only; names are never resolved. `host:port` restricts an
//! entry to that port.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// A compiled NO_PROXY list.
#[derive(Clone, Debug, Default)]
pub struct NoProxy {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
struct Entry {
    pattern: Pattern,
    port: Option<u16>,
    /// The entry as written, for `modgate explain` and logs.
    text: String,
}

#[derive(Clone, Debug)]
enum Pattern {
    Everything,
    /// Lower-case domain without leading `.`/`*.` or trailing dot.
    Domain(String),
    Net(IpNet),
}

/// What one entry matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule<'a> {
    Everything,
    /// The domain (lower case, no leading `.`/`*.`, no trailing dot) and
    /// every subdomain, on a label boundary.
    Domain(&'a str),
    /// IP-literal hosts in this network (a literal entry is a /32 or /128).
    Net(IpNet),
}

/// An entry of a NO_PROXY list that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid entry {entry:?}: {reason}")]
pub struct NoProxyError {
    pub entry: String,
    pub reason: &'static str,
}

impl NoProxy {
    /// Compiles a NO_PROXY string; every invalid entry is reported.
    pub fn parse(text: &str) -> Result<Self, Vec<NoProxyError>> {
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        for raw in text.split(|c: char| c == ',' || c.is_whitespace()) {
            if raw.is_empty() {
                continue;
            }
            match parse_entry(raw) {
                Ok(entry) => entries.push(entry),
                Err(reason) => errors.push(NoProxyError {
                    entry: raw.to_string(),
                    reason,
                }),
            }
        }
        if errors.is_empty() {
            Ok(NoProxy { entries })
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry as it matches (for the PAC file, which must match the same).
    pub fn rules(&self) -> impl Iterator<Item = (Rule<'_>, Option<u16>)> {
        self.entries.iter().map(|entry| {
            let rule = match &entry.pattern {
                Pattern::Everything => Rule::Everything,
                Pattern::Domain(domain) => Rule::Domain(domain),
                Pattern::Net(net) => Rule::Net(*net),
            };
            (rule, entry.port)
        })
    }

    /// Returns the entry (as written) that matches `host:port`, if any.
    /// `host` may be a name, an IP literal, or a bracketed IPv6 literal.
    pub fn find(&self, host: &str, port: u16) -> Option<&str> {
        let host = normalize_host(host);
        let ip = host.parse::<IpAddr>().ok();
        self.entries
            .iter()
            .find(|entry| entry.port.is_none_or(|p| p == port) && entry.matches(&host, ip))
            .map(|entry| entry.text.as_str())
    }

    pub fn matches(&self, host: &str, port: u16) -> bool {
        self.find(host, port).is_some()
    }
}

impl fmt::Display for NoProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<&str> = self.entries.iter().map(|e| e.text.as_str()).collect();
        f.write_str(&texts.join(","))
    }
}

impl Entry {
    fn matches(&self, host: &str, ip: Option<IpAddr>) -> bool {
        match (&self.pattern, ip) {
            (Pattern::Everything, _) => true,
            (Pattern::Net(net), Some(ip)) => net.contains(&ip),
            (Pattern::Domain(domain), None) => {
                host == domain
                    || (host.len() > domain.len()
                        && host.ends_with(domain.as_str())
                        && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
            }
            _ => false,
        }
    }
}

/// Lower-cases, strips brackets around IPv6 literals and one trailing dot.
fn normalize_host(host: &str) -> String {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    host.to_ascii_lowercase()
}

fn parse_entry(raw: &str) -> Result<Entry, &'static str> {
    let text = raw.to_string();
    let lower = raw.to_ascii_lowercase();
    if lower == "*" {
        return Ok(Entry {
            pattern: Pattern::Everything,
            port: None,
            text,
        });
    }
    let (host, port) = split_port(&lower)?;
    let pattern = parse_pattern(host)?;
    Ok(Entry {
        pattern,
        port,
        text,
    })
}

/// Splits an optional `:port`. A bare IPv6 literal (several colons, no
/// brackets) has no port; `[v6]:port` and `name:port` do.
fn split_port(entry: &str) -> Result<(&str, Option<u16>), &'static str> {
    if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or("unclosed '['")?;
        return match after {
            "" => Ok((inside, None)),
            _ => {
                let port = after.strip_prefix(':').ok_or("junk after ']'")?;
                Ok((inside, Some(parse_port(port)?)))
            }
        };
    }
    match entry.matches(':').count() {
        0 => Ok((entry, None)),
        1 => {
            let (host, port) = entry.split_once(':').ok_or("bad port")?;
            Ok((host, Some(parse_port(port)?)))
        }
        _ => Ok((entry, None)),
    }
}

fn parse_port(port: &str) -> Result<u16, &'static str> {
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err("port must be a number from 1 to 65535"),
    }
}

fn parse_pattern(host: &str) -> Result<Pattern, &'static str> {
    if host.contains('/') {
        let net: IpNet = host.parse().map_err(|_| "invalid CIDR")?;
        return Ok(Pattern::Net(net.trunc()));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Pattern::Net(IpNet::from(ip)));
    }
    let domain = host
        .strip_prefix("*.")
        .or_else(|| host.strip_prefix('.'))
        .unwrap_or(host);
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return Err("empty host name");
    }
    let valid = domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !valid || domain.contains("..") || domain.starts_with('.') {
        return Err("not a host name, IP address or CIDR");
    }
    Ok(Pattern::Domain(domain.to_string()))
}

#[cfg(test)]
mod tests;
