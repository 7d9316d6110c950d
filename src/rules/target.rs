//! Where a request wants to go: a host (name or IP literal) and a port,
//! parsed from an authority (`host:port`, `[v6]:port`). Pure.

use std::fmt;
use std::net::IpAddr;

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
    #[error("invalid port")]
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
            Some(text) => match text.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(TargetError::BadPort),
            },
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
}
