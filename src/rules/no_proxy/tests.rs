use super::*;
use proptest::prelude::*;

/// (rules, host, port, expected match)
const TABLE: &[(&str, &str, u16, bool)] = &[
    // apex and subdomains, three spellings
    ("example.com", "example.com", 443, true),
    ("example.com", "www.example.com", 443, true),
    ("example.com", "a.b.example.com", 80, true),
    (".example.com", "example.com", 443, true),
    (".example.com", "www.example.com", 443, true),
    ("*.example.com", "example.com", 443, true),
    ("*.example.com", "deep.www.example.com", 443, true),
    // label boundary
    ("example.com", "badexample.com", 443, false),
    (".example.com", "badexample.com", 443, false),
    ("*.example.com", "badexample.com", 443, false),
    ("example.com", "example.com.evil.net", 443, false),
    ("example.com", "example.co", 443, false),
    // case and trailing dot, on both sides
    ("Example.COM", "example.com", 443, true),
    ("example.com", "WWW.EXAMPLE.COM", 443, true),
    ("example.com.", "example.com", 443, true),
    ("example.com", "example.com.", 443, true),
    ("*.Example.Com.", "Api.example.com.", 443, true),
    // wildcard
    ("*", "anything.at.all", 1, true),
    ("*", "10.1.2.3", 8080, true),
    ("*", "[::1]", 443, true),
    // IPv4 literal and CIDR
    ("10.1.2.3", "10.1.2.3", 443, true),
    ("10.1.2.3", "10.1.2.4", 443, false),
    ("10.0.0.0/8", "10.200.3.4", 443, true),
    ("10.0.0.0/8", "11.0.0.1", 443, false),
    ("192.168.1.77/24", "192.168.1.1", 443, true),
    // names are never resolved to match IP rules
    ("127.0.0.0/8", "localhost", 443, false),
    ("10.1.2.3", "host-10-1-2-3.example", 443, false),
    // IPv6 with and without brackets, on both sides
    ("::1", "::1", 443, true),
    ("::1", "[::1]", 443, true),
    ("[::1]", "::1", 443, true),
    ("[::1]", "[::1]", 443, true),
    ("fd00::/8", "fd12:3456::1", 443, true),
    ("fd00::/8", "[fd12:3456::1]", 443, true),
    ("fd00::/8", "fe80::1", 443, false),
    ("2001:DB8::/32", "2001:db8:1::5", 443, true),
    // host:port restricts to that port
    ("example.com:8080", "example.com", 8080, true),
    ("example.com:8080", "example.com", 443, false),
    ("example.com:8080", "www.example.com", 8080, true),
    ("10.1.2.3:22", "10.1.2.3", 22, true),
    ("10.1.2.3:22", "10.1.2.3", 23, false),
    ("[::1]:8443", "::1", 8443, true),
    ("[::1]:8443", "::1", 443, false),
    // lists: commas, spaces, empty items
    (
        "foo.internal, .corp.example ,10.0.0.0/8",
        "git.corp.example",
        443,
        true,
    ),
    ("foo.internal  bar.internal", "bar.internal", 443, true),
    ("foo.internal,,bar.internal", "baz.internal", 443, false),
    ("", "example.com", 443, false),
    // IP rules never match names and name rules never match IPs
    ("example.com", "93.184.216.34", 443, false),
];

#[test]
fn table() {
    assert!(TABLE.len() >= 40);
    for (rules, host, port, expected) in TABLE {
        let matcher = NoProxy::parse(rules).unwrap();
        assert_eq!(
            matcher.matches(host, *port),
            *expected,
            "rules {rules:?} host {host:?} port {port}"
        );
    }
}

#[test]
fn reports_the_rule_that_matched() {
    let matcher = NoProxy::parse("a.example, *.corp.example, 10.0.0.0/8").unwrap();
    assert_eq!(matcher.find("x.corp.example", 443), Some("*.corp.example"));
    assert_eq!(matcher.find("10.9.9.9", 80), Some("10.0.0.0/8"));
    assert_eq!(matcher.find("b.example", 80), None);
}

#[test]
fn invalid_entries_are_all_reported() {
    let errors =
        NoProxy::parse("ok.example, bad host!, 10.0.0.0/99, a.example:0, [::1").unwrap_err();
    let entries: Vec<&str> = errors.iter().map(|e| e.entry.as_str()).collect();
    assert_eq!(entries, ["host!", "10.0.0.0/99", "a.example:0", "[::1"]);
}

proptest! {
    #[test]
    fn never_panics(rules in ".{0,64}", host in ".{0,64}", port in any::<u16>()) {
        if let Ok(matcher) = NoProxy::parse(&rules) {
            let _ = matcher.find(&host, port);
        }
    }

    #[test]
    fn never_panics_on_rule_like_input(
        rules in "[a-z0-9.*:\\[\\]/, -]{0,48}",
        host in "[a-z0-9.:\\[\\]-]{0,32}",
        port in any::<u16>(),
    ) {
        if let Ok(matcher) = NoProxy::parse(&rules) {
            let _ = matcher.find(&host, port);
        }
    }
}
