//! The block `modgate run` logs once it listens: where its config came
//! from, what it listens on and does, where it sends things, its CA and
//! its cache. Pure: built from the config and what was bound.

use std::fmt::Write;
use std::net::SocketAddr;

use crate::config::Config;
use crate::gomod::Probe;
use crate::listener::Entry;

/// What `run` knows once it listens: the listeners bound, the CA's line
/// (path, fingerprint, expiry) and the mirrors' first probe, when
/// interception is on.
pub struct Started<'a> {
    pub bound: &'a [(Entry, SocketAddr)],
    pub admin: Option<SocketAddr>,
    pub ca: Option<&'a str>,
    pub probes: &'a [Probe],
    /// The shared tier's first probe, when there is one.
    pub shared: Option<&'a str>,
}

/// The summary for `config` as `started`.
pub fn summary(config: &Config, started: &Started<'_>) -> String {
    let mut text = format!("modgate {}\n", env!("CARGO_PKG_VERSION"));
    for (what, value) in rows(config, started) {
        let _ = writeln!(text, "  {what:<10} {value}");
    }
    text
}

/// The summary's rows, `(what, value)`: one structured log event each
/// when the log is JSON.
pub fn rows(config: &Config, started: &Started<'_>) -> Vec<(&'static str, String)> {
    let (bound, admin, ca) = (started.bound, started.admin, started.ca);
    let mut rows = Vec::new();
    let mut line = |what: &'static str, value: String| rows.push((what, value));
    line("config", config.origin.file.clone());
    let mut listening: Vec<String> = bound
        .iter()
        .map(|(entry, addr)| format!("{} {addr}", entry.serves()))
        .collect();
    listening.extend(admin.map(|addr| format!("admin {addr}")));
    line("listening", listening.join(", "));
    let intercepting = if config.intercept.enabled {
        format!("intercepting {}", config.intercepted_hosts().join(", "))
    } else {
        "not intercepting (intercept.enabled = false)".into()
    };
    line("modules", intercepting);
    let private = config.gomod.private.globs();
    if !private.is_empty() {
        line(
            "private",
            format!("{} (never sent to a mirror)", private.join(", ")),
        );
    }
    let parent = config.upstream.parents_shown().map_or_else(
        || "none: every connection goes direct".to_string(),
        |p| format!("{p}, except upstream.no_proxy"),
    );
    line("parent", parent);
    let probed = |kind: &str, mirrors: &[String]| {
        let each = mirrors.iter().map(|mirror| {
            let probe = started
                .probes
                .iter()
                .find(|(k, m, _)| *k == kind && m == mirror);
            let shown = crate::rules::mask_userinfo(mirror).into_owned();
            match probe.map(|(_, _, result)| result) {
                None if !config.intercept.enabled => shown,
                None => format!("{shown} (not probed)"),
                Some(Ok(took)) => {
                    format!("{shown} (reachable, {:.1} ms)", took.as_secs_f64() * 1e3)
                }
                Some(Err(why)) => format!("{shown} (UNREACHABLE: {why})"),
            }
        });
        each.collect::<Vec<_>>().join(", ")
    };
    line("mirrors", probed("module", &config.gomod.mirrors));
    line("sumdb", probed("sumdb", &config.gomod.sumdb_mirrors));
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
    if let Some(shared) = started.shared {
        line("shared", shared.to_string());
    }
    rows
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn names_config_listeners_probes_ca_and_cache() {
        let config = crate::config::Config::parse("/etc/modgate/modgate.toml", "").unwrap();
        let bound = [(
            crate::listener::Entry::Explicit,
            "127.0.0.1:3128".parse().unwrap(),
        )];
        let probes = [
            (
                "module",
                "https://goproxy.cn".to_string(),
                Ok(Duration::from_millis(12)),
            ),
            (
                "module",
                "https://mirrors.aliyun.com/goproxy".to_string(),
                Err("refused".to_string()),
            ),
        ];
        let started = super::Started {
            bound: &bound,
            admin: None,
            ca: Some("/ca.pem (sha256 AB, expires 2036-01-01)"),
            probes: &probes,
            shared: None,
        };
        let text = super::summary(&config, &started);
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
        assert!(
            text.contains("https://goproxy.cn (reachable, 12.0 ms), https://mirrors.aliyun.com/goproxy (UNREACHABLE: refused)"),
            "{text}"
        );
        assert!(
            text.contains("https://sum.golang.google.cn (not probed)"),
            "{text}"
        );
    }
}
