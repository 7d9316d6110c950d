//! Where a request wants to go: a host (name or IP literal) and a port,
//! parsed from an authority (`host:port`, `[v6]:port`). Pure.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// Lower-case DNS name without trailing dot.
    Name(String),
    Ip(IpAddr),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("target has no port")]
    MissingPort,
    #[error("not a port (digits, 1-65535)")]
    BadPort,
    #[error("invalid host name")]
    BadHost,
}

impl Target {
    /// Parses `host:port`; when the port is absent, `default_port` is used, or
    /// `MissingPort` is returned if there is none (CONNECT).
    pub fn parse(authority: &str, default_port: Option<u16>) -> Result<Self, TargetError> {
        let (host, port) = split_authority(authority)?;
        let port = match port {
            // Digits only: `+80` parses as a u16 but is no port.
            Some(text) if text.bytes().all(|b| b.is_ascii_digit()) => match text.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(TargetError::BadPort),
            },
            Some(_) => return Err(TargetError::BadPort),
            None => default_port.ok_or(TargetError::MissingPort)?,
        };
        Ok(Target {
            host: Host::parse(host)?,
            port,
        })
    }
}

impl Host {
    pub fn parse(text: &str) -> Result<Self, TargetError> {
        let unbracketed = text
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        let name = text.strip_suffix('.').unwrap_or(text);
        // `127.1`, `0x7f.1`, `2130706433`: what resolvers accept as IPv4
        // (inet_aton) is an address, never a name to look up.
        if let Some(ip) = loose_ipv4(name) {
            return Ok(Host::Ip(IpAddr::V4(ip)));
        }
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && !name.starts_with('.')
            && !name.contains("..");
        if !valid {
            return Err(TargetError::BadHost);
        }
        Ok(Host::Name(name.to_ascii_lowercase()))
    }
}

/// The inet_aton forms of an IPv4 address: one to four dot-separated parts,
/// each decimal, `0x` hex or `0`-led octal, the last filling the remaining
/// bytes. `None` when `text` is not entirely such a number.
fn loose_ipv4(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let numbers: Vec<u64> = parts
        .iter()
        .map(|p| loose_number(p))
        .collect::<Option<_>>()?;
    let (last, leading) = numbers.split_last()?;
    if leading.iter().any(|n| *n > 255) {
        return None;
    }
    let last_bits = 8 * (4 - leading.len() as u32);
    if *last >= 1u64 << last_bits {
        return None;
    }
    let high = leading
        .iter()
        .enumerate()
        .fold(0u64, |acc, (i, n)| acc | (n << (24 - 8 * i as u32)));
    u32::try_from(high | last).ok().map(Ipv4Addr::from)
}

fn loose_number(part: &str) -> Option<u64> {
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() && radix == 16 {
        return Some(0);
    }
    if digits.is_empty() || digits.len() > 12 || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// `url` with any `user:pass@` in its authority replaced by `***@`, for
/// logs and answers: credentials are never shown.
pub fn mask_userinfo(url: &str) -> std::borrow::Cow<'_, str> {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[after_scheme..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..after_scheme], &rest[at..]).into(),
        None => url.into(),
    }
}

fn split_authority(authority: &str) -> Result<(&str, Option<&str>), TargetError> {
    if authority.starts_with('[') {
        let close = authority.find(']').ok_or(TargetError::BadHost)?;
        let (host, rest) = authority.split_at(close + 1);
        return match rest {
            "" => Ok((host, None)),
            _ => rest
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or(TargetError::BadHost),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => Ok((authority, None)),
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((authority, None)),
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_authorities() {
        let t = Target::parse("Example.COM.:8443", None).unwrap();
        assert_eq!(t.host, Host::Name("example.com".into()));
        assert_eq!(t.port, 8443);
        let t = Target::parse("[::1]:443", None).unwrap();
        assert_eq!(t.to_string(), "[::1]:443");
        let t = Target::parse("10.0.0.1", Some(80)).unwrap();
        assert_eq!(t.to_string(), "10.0.0.1:80");
        assert_eq!(
            Target::parse("example.com", None),
            Err(TargetError::MissingPort)
        );
        assert_eq!(
            Target::parse("example.com:0", None),
            Err(TargetError::BadPort)
        );
        assert_eq!(
            Target::parse("example.com:x", None),
            Err(TargetError::BadPort)
        );
        assert_eq!(Target::parse("exa mple:1", None), Err(TargetError::BadHost));
        assert_eq!(Target::parse("[::1", None), Err(TargetError::BadHost));
        assert_eq!(Target::parse(":443", None), Err(TargetError::BadHost));
    }

    #[test]
    fn userinfo_is_masked() {
        assert_eq!(mask_userinfo("http://u:p@h:1/a@b"), "http://***@h:1/a@b");
        assert_eq!(mask_userinfo("https://h/x@y"), "https://h/x@y");
        assert_eq!(mask_userinfo("h:443"), "h:443");
        assert_eq!(mask_userinfo("u:p@h:443"), "***@h:443");
    }

    #[test]
    fn every_ipv4_spelling_is_an_address() {
        for spelling in [
            "127.0.0.1",
            "127.1",
            "0x7f.1",
            "0x7F.0.0.1",
            "2130706433",
            "0177.0.0.1",
            "127.0.1",
            "0x7f000001",
            "127.0.0.1.",
        ] {
            assert_eq!(
                Host::parse(spelling),
                Ok(Host::Ip("127.0.0.1".parse().unwrap())),
                "{spelling}"
            );
        }
        assert_eq!(Host::parse("0"), Ok(Host::Ip("0.0.0.0".parse().unwrap())));
        for name in [
            "1.2.3.4.5",
            "256.1.1.1",
            "09.1.1.1",
            "1.2.3.x",
            "4294967296",
            "a1",
            "1a.example",
        ] {
            assert!(!matches!(Host::parse(name), Ok(Host::Ip(_))), "{name}");
        }
    }
}
