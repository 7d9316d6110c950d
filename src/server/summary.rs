//! The block `modgate run` logs once it listens: where its config came
//! from, what it listens on and does, where it sends things, its CA and
//! its cache. Pure: built from the config and what was bound.

use std::fmt::Write;
use std::net::SocketAddr;

use crate::config::Config;
use crate::listener::Entry;

/// The summary for `config`, with the listeners bound and the CA's line
/// (path, fingerprint, expiry) when interception is on.
pub fn summary(
    config: &Config,
    bound: &[(Entry, SocketAddr)],
    admin: Option<SocketAddr>,
    ca: Option<&str>,
) -> String {
    let mut text = format!("modgate {}\n", env!("CARGO_PKG_VERSION"));
    let mut line = |what: &str, value: String| {
        let _ = writeln!(text, "  {what:<10} {value}");
    };
    line("config", config.origin.file.clone());
    let mut listening: Vec<String> = bound
        .iter()
        .map(|(entry, addr)| format!("{} {addr}", entry.serves()))
        .collect();
    listening.extend(admin.map(|addr| format!("admin {addr}")));
    line("listening", listening.join(", "));
    let intercepting = if config.intercept.enabled {
        format!("intercepting {}", config.gomod.hosts().join(", "))
    } else {
        "not intercepting (intercept.enabled = false)".into()
    };
    line("modules", intercepting);
    let parent = config.upstream.proxy.as_ref().map_or_else(
        || "none: every connection goes direct".to_string(),
        |p| format!("{p}, except upstream.no_proxy"),
    );
    line("parent", parent);
    line("mirrors", config.gomod.mirrors.join(", "));
    line("sumdb", config.gomod.sumdb_mirrors.join(", "));
    line(
        "CA",
        ca.map_or("none (interception is off)".into(), str::to_string),
    );
    let cache = &config.cache;
    let cache = if cache.enabled {
        let offline = if cache.offline { ", offline" } else { "" };
        format!(
            "{} (at most {} bytes{offline})",
            cache.dir.display(),
            cache.max_size
        )
    } else {
        "off".into()
    };
    line("cache", cache);
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_config_listeners_ca_and_cache() {
        let config = crate::config::Config::parse("/etc/modgate/modgate.toml", "").unwrap();
        let bound = [(
            crate::listener::Entry::Explicit,
            "127.0.0.1:3128".parse().unwrap(),
        )];
        let text = super::summary(
            &config,
            &bound,
            None,
            Some("/ca.pem (sha256 AB, expires 2036-01-01)"),
        );
        assert!(
            text.contains("  config     /etc/modgate/modgate.toml\n"),
            "{text}"
        );
        assert!(
            text.contains("  listening  explicit proxy 127.0.0.1:3128\n"),
            "{text}"
        );
        assert!(text.contains("  CA         /ca.pem (sha256 AB"), "{text}");
        assert!(text.contains("  parent     none"), "{text}");
    }
}
