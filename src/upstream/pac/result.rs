//! What `FindProxyForURL` returns: `PROXY host:port; HTTPS host:port;
//! DIRECT`, ways out in order. `PROXY` and `HTTP` are plain parents,
//! `HTTPS` a parent spoken to in TLS; `SOCKS` entries are skipped (modgate
//! does not speak SOCKS). Anything else is garbage.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PacWay {
    Direct,
    Proxy { tls: bool, host: String, port: u16 },
}

impl fmt::Display for PacWay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacWay::Direct => f.write_str("DIRECT"),
            PacWay::Proxy { tls, host, port } => {
                let kind = if *tls { "HTTPS" } else { "PROXY" };
                write!(f, "{kind} {host}:{port}")
            }
        }
    }
}

/// The ways out a PAC result names, in order; an error when it names none
/// modgate can take, or holds something that is not a way out at all.
pub fn parse(result: &str) -> Result<Vec<PacWay>, String> {
    let mut ways = Vec::new();
    for item in result.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        let (kind, rest) = item.split_once(char::is_whitespace).unwrap_or((item, ""));
        let tls = match kind.to_ascii_uppercase().as_str() {
            "DIRECT" if rest.trim().is_empty() => {
                ways.push(PacWay::Direct);
                continue;
            }
            "PROXY" | "HTTP" => false,
            "HTTPS" => true,
            "SOCKS" | "SOCKS4" | "SOCKS5" => continue,
            _ => return Err(format!("{item:?} is not a way out")),
        };
        let (host, port) = rest
            .trim()
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok().filter(|p| *p > 0)?)))
            .filter(|(h, _)| !h.is_empty() && !h.contains(char::is_whitespace))
            .ok_or_else(|| format!("{item:?} names no host:port"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        ways.push(PacWay::Proxy { tls, host, port });
    }
    if ways.is_empty() {
        return Err(format!("{result:?} names no way out modgate can take"));
    }
    Ok(ways)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(tls: bool, host: &str, port: u16) -> PacWay {
        PacWay::Proxy {
            tls,
            host: host.into(),
            port,
        }
    }

    #[test]
    fn ways_in_order() {
        assert_eq!(
            parse("PROXY a:1; HTTPS b:2; DIRECT").unwrap(),
            [proxy(false, "a", 1), proxy(true, "b", 2), PacWay::Direct]
        );
        assert_eq!(parse("direct").unwrap(), [PacWay::Direct]);
        assert_eq!(
            parse(" HTTP  proxy.corp:8080 ;; SOCKS s:1080; ").unwrap(),
            [proxy(false, "proxy.corp", 8080)]
        );
        assert_eq!(
            parse("PROXY [::1]:3128").unwrap(),
            [proxy(false, "::1", 3128)]
        );
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "   ",
            "SOCKS s:1",
            "PROXY",
            "PROXY a",
            "PROXY a:0",
            "PROXY a:99999",
            "FTP x:1",
            "undefined",
            "DIRECT now",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(proxy(true, "b", 2).to_string(), "HTTPS b:2");
    }
}
