//! Header rules of an HTTP intermediary (RFC 9110 §7.6, RFC 9112): hop-by-hop
//! stripping, `Via`, message framing checks. Pure functions on header maps.

use http::header::{
    CONNECTION, CONTENT_LENGTH, HeaderName, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE, VIA,
};
use http::{HeaderMap, HeaderValue, Version};

/// Headers that describe one connection and never travel further.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// The protocol named by `Upgrade`, when `Connection` lists `upgrade`.
pub fn upgrade_requested(headers: &HeaderMap) -> Option<HeaderValue> {
    connection_lists(headers, "upgrade")
        .then(|| headers.get(UPGRADE).cloned())
        .flatten()
}

/// Removes hop-by-hop headers and every header `Connection` names. When
/// `upgrade` is given, `Connection: upgrade` and `Upgrade` are put back.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<&HeaderValue>) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    debug_assert!(!headers.contains_key(TE) && !headers.contains_key(TRAILER));
    debug_assert!(!headers.contains_key(PROXY_AUTHORIZATION));
    debug_assert!(!headers.contains_key(PROXY_AUTHENTICATE));
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol.clone());
    }
}

/// Appends this hop to `Via` (`1.1 modgate`).
pub fn add_via(headers: &mut HeaderMap, version: Version) {
    let value = match version {
        Version::HTTP_10 => "1.0 modgate",
        Version::HTTP_2 => "2 modgate",
        _ => "1.1 modgate",
    };
    headers.append(VIA, HeaderValue::from_static(value));
}

/// A request with both `Content-Length` and `Transfer-Encoding` is a
/// smuggling vector (RFC 9112 §6.1); so are several different lengths.
pub fn framing_conflict(headers: &HeaderMap) -> Option<&'static str> {
    let lengths: Vec<&HeaderValue> = headers.get_all(CONTENT_LENGTH).iter().collect();
    if !lengths.is_empty() && headers.contains_key(TRANSFER_ENCODING) {
        return Some("both Content-Length and Transfer-Encoding");
    }
    if lengths.windows(2).any(|w| w[0] != w[1]) {
        return Some("conflicting Content-Length values");
    }
    None
}

fn connection_lists(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The value of `Max-Forwards`, if present and valid.
pub fn max_forwards(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("max-forwards")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The request head's size as an HTTP/1.1 client sends it: the request
/// line, each header line and the blank line, CRLFs included (an HTTP/2
/// request is measured as its HTTP/1.1 form). The one measure of
/// `proxy.max_header_size`, on every listener and protocol.
pub fn head_size<B>(req: &http::Request<B>) -> usize {
    struct Count(usize);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut uri = Count(0);
    let _ = std::fmt::Write::write_fmt(&mut uri, format_args!("{}", req.uri()));
    let line = req.method().as_str().len() + 1 + uri.0 + " HTTP/1.1\r\n".len();
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    line + fields + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn head_size_counts_the_head_as_sent() {
        let req = http::Request::get("/a?b")
            .header("host", "x")
            .header("accept", "*/*")
            .body(())
            .unwrap();
        let wire = "GET /a?b HTTP/1.1\r\nhost: x\r\naccept: */*\r\n\r\n";
        assert_eq!(super::head_size(&req), wire.len());
    }

    #[test]
    fn strips_hop_by_hop_and_listed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic abc"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, None);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept"]);
    }

    #[test]
    fn keeps_upgrade_when_relaying_one() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        let protocol = upgrade_requested(&h);
        assert_eq!(protocol.as_ref().unwrap(), "websocket");
        strip_hop_by_hop(&mut h, protocol.as_ref());
        assert_eq!(h.get(UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn framing() {
        assert!(
            framing_conflict(&map(&[
                ("content-length", "3"),
                ("transfer-encoding", "chunked")
            ]))
            .is_some()
        );
        assert!(
            framing_conflict(&map(&[("content-length", "3"), ("content-length", "4")])).is_some()
        );
        assert!(
            framing_conflict(&map(&[("content-length", "3"), ("content-length", "3")])).is_none()
        );
        assert!(framing_conflict(&map(&[("transfer-encoding", "chunked")])).is_none());
    }

    #[test]
    fn via_and_max_forwards() {
        let mut h = map(&[("via", "1.1 other"), ("max-forwards", " 3 ")]);
        add_via(&mut h, Version::HTTP_11);
        let via: Vec<_> = h.get_all(VIA).iter().collect();
        assert_eq!(via, ["1.1 other", "1.1 modgate"]);
        assert_eq!(max_forwards(&h), Some(3));
    }
}
