//! Port ranges (`"80"`, `"1024-65535"`), as `proxy.http_ports` lists them. Pure.

use std::fmt;

/// An inclusive range of TCP ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// Parses `"N"` or `"N-M"` with 1 ≤ N ≤ M ≤ 65535.
    pub fn parse(text: &str) -> Result<PortRange, String> {
        let port = |s: &str| match s.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!("{s:?} is not a port (1-65535)")),
        };
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(text)?, port(text)?),
        };
        if first > last {
            return Err(format!("{text:?} is an empty range"));
        }
        Ok(PortRange { first, last })
    }

    /// Parses every item, or says which one is wrong.
    pub fn parse_list(items: &[&str]) -> Result<Vec<PortRange>, String> {
        items.iter().map(|s| PortRange::parse(s)).collect()
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = PortRange::parse("1024-65535").unwrap();
        assert!(r.contains(1024) && r.contains(65535) && !r.contains(1023));
        assert!(PortRange::parse("80").unwrap().contains(80));
        assert!(PortRange::parse("0").is_err());
        assert!(PortRange::parse("90-80").is_err());
        assert!(PortRange::parse("x").is_err());
        assert!(PortRange::parse("70000").is_err());
        assert_eq!(PortRange::parse("1-2").unwrap().to_string(), "1-2");
    }
}
