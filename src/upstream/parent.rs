//! The requests modgate itself sends the parent proxy: CONNECT for a
//! tunnel, and the login request of a forwarding connection: `TRACE` with
//! `Max-Forwards: 0`, which RFC 9110 has the parent answer itself (it
//! echoes the request) and never forward, so a per-connection login costs
//! the origin nothing. (Squid answers OPTIONS with `Max-Forwards: 0` with
//! 501 and a closed connection; TRACE it answers.)

use crate::rules::Target;

/// `CONNECT target`, with `authorization` when given.
pub fn connect_head(target: &Target, authorization: Option<&str>) -> Vec<u8> {
    head("CONNECT", &target.to_string(), target, authorization)
}

/// `TRACE http://target/` that goes no further than the parent.
pub fn login_head(target: &Target, authorization: Option<&str>) -> Vec<u8> {
    head("TRACE", &format!("http://{target}/"), target, authorization)
}

fn head(method: &str, uri: &str, target: &Target, authorization: Option<&str>) -> Vec<u8> {
    let mut request = format!("{method} {uri} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
    if method == "TRACE" {
        request.extend_from_slice(b"Max-Forwards: 0\r\n");
    }
    if let Some(value) = authorization {
        request.extend_from_slice(b"Proxy-Authorization: ");
        request.extend_from_slice(value.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let target = Target::parse("example.com:443", None).unwrap();
        let connect = String::from_utf8(connect_head(&target, Some("NTLM abc"))).unwrap();
        assert_eq!(
            connect,
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nProxy-Authorization: NTLM abc\r\n\r\n"
        );
        let login = String::from_utf8(login_head(&target, None)).unwrap();
        assert!(login.starts_with("TRACE http://example.com:443/ HTTP/1.1\r\n"));
        assert!(login.contains("Max-Forwards: 0\r\n"));
    }
}
