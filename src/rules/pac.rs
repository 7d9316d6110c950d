//! The PAC file (`GET /proxy.pac` on the explicit listener): DIRECT for the
//! `upstream.no_proxy` entries, with their NO_PROXY semantics translated
//! exactly (label-boundary domains, IP literals and CIDRs matching literal
//! hosts only, never resolved, `host:port` entries), the proxy otherwise.
//! Pure.

use std::fmt::Write;

use ipnet::IpNet;

use super::no_proxy::{NoProxy, Rule};

/// `host:port` as a PAC `PROXY` target, or `None` when it is not one (a
/// name, an IPv4 literal or a bracketed IPv6 literal, and a port; with no
/// port, 80: the port a Host header leaves out).
pub fn proxy_name(text: &str) -> Option<String> {
    let text = text.trim().to_ascii_lowercase();
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port))
            if !host.ends_with(':') && (!host.starts_with('[') || host.ends_with(']')) =>
        {
            (
                host.to_string(),
                port.parse::<u16>().ok().filter(|p| *p > 0)?,
            )
        }
        _ if text.starts_with('[') && text.ends_with(']') => (text.clone(), 80),
        Some(_) => return None,
        None => (text.clone(), 80),
    };
    let sound = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        }
    };
    sound.then(|| format!("{host}:{port}"))
}

/// The PAC file: DIRECT for `no_proxy`, `PROXY <proxy>` for the rest.
/// `proxy` comes from [`proxy_name`].
pub fn pac(no_proxy: &NoProxy, proxy: &str) -> String {
    let mut out = String::from(
        "// modgate: DIRECT for upstream.no_proxy (NO_PROXY semantics), the proxy otherwise.\n\
         function FindProxyForURL(url, host) {\n\
         \x20 host = host.toLowerCase();\n\
         \x20 if (host.charAt(0) == \"[\") host = host.substring(1, host.length - 1);\n\
         \x20 if (host.charAt(host.length - 1) == \".\") host = host.substring(0, host.length - 1);\n\
         \x20 var port = portOf(url);\n",
    );
    for (rule, port) in no_proxy.rules() {
        let matches = condition(rule);
        let _ = match port {
            Some(port) => writeln!(out, "  if (port == {port} && {matches}) return \"DIRECT\";"),
            None => writeln!(out, "  if ({matches}) return \"DIRECT\";"),
        };
    }
    let _ = writeln!(out, "  return {};\n}}", quoted(&format!("PROXY {proxy}")));
    out.push_str(HELPERS);
    out
}

/// The JavaScript condition for one entry.
fn condition(rule: Rule<'_>) -> String {
    match rule {
        Rule::Everything => "true".into(),
        Rule::Domain(domain) => format!(
            "(host == {} || dnsDomainIs(host, {}))",
            quoted(domain),
            quoted(&format!(".{domain}"))
        ),
        Rule::Net(IpNet::V4(net)) => format!(
            "(isIPv4(host) && isInNet(host, {}, {}))",
            quoted(&net.network().to_string()),
            quoted(&net.netmask().to_string())
        ),
        Rule::Net(IpNet::V6(net)) => format!(
            "inNet6(host, {}, {})",
            quoted(&net.network().to_string()),
            net.prefix_len()
        ),
    }
}

/// A JavaScript string literal (JSON's is one).
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// Port of a URL, IP literal tests: no name is ever resolved.
const HELPERS: &str = r#"
function portOf(url) {
  var m = /^([a-z][a-z0-9+.-]*):\/\/(?:[^@\/?#]*@)?(\[[^\]]*\]|[^\/:?#]*)(?::(\d+))?/i.exec(url);
  if (!m) return 0;
  if (m[3]) return parseInt(m[3], 10);
  var scheme = m[1].toLowerCase();
  if (scheme == "https" || scheme == "wss") return 443;
  if (scheme == "ftp") return 21;
  return 80;
}

function isIPv4(h) {
  var m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h);
  if (!m) return false;
  for (var i = 1; i <= 4; i++) if (parseInt(m[i], 10) > 255) return false;
  return true;
}

function groups6(h) {
  if (!/^[0-9a-f:.]+$/.test(h) || h.indexOf(":") < 0) return null;
  var halves = h.split("::");
  if (halves.length > 2) return null;
  var parse = function (part) {
    var out = [];
    if (part == "") return out;
    var items = part.split(":");
    for (var i = 0; i < items.length; i++) {
      if (items[i].indexOf(".") >= 0) {
        if (i != items.length - 1 || !isIPv4(items[i])) return null;
        var o = items[i].split(".");
        out.push(parseInt(o[0], 10) * 256 + parseInt(o[1], 10));
        out.push(parseInt(o[2], 10) * 256 + parseInt(o[3], 10));
      } else {
        if (!/^[0-9a-f]{1,4}$/.test(items[i])) return null;
        out.push(parseInt(items[i], 16));
      }
    }
    return out;
  };
  var head = parse(halves[0]);
  var tail = halves.length == 2 ? parse(halves[1]) : [];
  if (head == null || tail == null) return null;
  var missing = 8 - head.length - tail.length;
  if (halves.length == 2 ? missing < 1 : missing != 0) return null;
  for (var j = 0; j < missing; j++) head.push(0);
  return head.concat(tail);
}

function inNet6(h, net, bits) {
  var a = groups6(h), b = groups6(net);
  if (a == null || b == null) return false;
  for (var i = 0; i < 8; i++) {
    var take = Math.min(16, Math.max(0, bits - 16 * i));
    if (take == 0) return true;
    var mask = (0xffff << (16 - take)) & 0xffff;
    if ((a[i] & mask) != (b[i] & mask)) return false;
  }
  return true;
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_names() {
        for (text, name) in [
            (
                "gateway.corp.example:3128",
                Some("gateway.corp.example:3128"),
            ),
            ("Gateway:3128", Some("gateway:3128")),
            ("gateway", Some("gateway:80")),
            ("10.0.0.1:3128", Some("10.0.0.1:3128")),
            ("[fd00::1]:3128", Some("[fd00::1]:3128")),
            ("[fd00::1]", Some("[fd00::1]:80")),
            ("fd00::1", None),
            ("gateway:0", None),
            ("gateway:99999", None),
            ("gate\"way:1", None),
            ("gate;way:1", None),
            ("[nope]:1", None),
            ("", None),
        ] {
            assert_eq!(proxy_name(text).as_deref(), name, "{text:?}");
        }
    }

    #[test]
    fn each_entry_becomes_one_direct_rule() {
        let list = NoProxy::parse("corp.example, 10.0.0.0/8, ::1, internal:8080").unwrap();
        let text = pac(&list, "gw:3128");
        assert!(text.contains(r#"(host == "corp.example" || dnsDomainIs(host, ".corp.example"))"#));
        assert!(text.contains(r#"isInNet(host, "10.0.0.0", "255.0.0.0")"#));
        assert!(text.contains(r#"inNet6(host, "::1", 128)"#));
        assert!(text.contains(r#"if (port == 8080 && (host == "internal""#));
        assert!(text.contains(r#"return "PROXY gw:3128";"#));
        assert_eq!(text.matches("return \"DIRECT\"").count(), 4);
    }
}
