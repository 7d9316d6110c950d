//! `[cache] shared`, `shared_timeout` and `[cache.s3]`: the S3-compatible
//! bucket a fleet of gateways shares behind their own directories. The
//! credentials come from `cache.s3.credentials_file` (TOML with
//! `access_key_id` and `secret_access_key`, readable by its owner only)
//! or from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`; they are kept
//! out of every log, metric and `explain` (the settings' Debug hides them).

use std::time::Duration;

use super::SharedConfig;
use super::load::{absolute_path, duration};
use super::reader::{Reader, Table};
use crate::cache::storage::s3::S3Settings;

/// `[cache] shared` and `[cache.s3]`; `None` when `shared` is not set.
pub(super) fn shared_section<'i>(
    r: &mut Reader<'i>,
    cache: &mut Table<'i>,
) -> Option<SharedConfig> {
    let written = cache.has("s3");
    let mut s3 = r.section(cache, "s3");
    let url = r.string(cache, "shared");
    let timeout = duration(r, cache, "shared_timeout", Duration::from_secs(5));
    let peers = peers(r, cache);
    let Some(url) = url else {
        if written {
            r.error(s3.span.clone(), "[cache.s3] is set but cache.shared is not: set cache.shared = \"s3://BUCKET/PREFIX\"");
        }
        r.finish(s3);
        return None;
    };
    let Some((bucket, prefix)) = bucket_and_prefix(url.get_ref()) else {
        r.error(url.span(), format!("cache.shared {:?} must be s3://BUCKET[/PREFIX] (a bucket name: 3 to 63 of a-z, 0-9, '.' and '-')", url.get_ref()));
        r.finish(s3);
        return None;
    };
    let endpoint = r.string(&mut s3, "endpoint");
    let region = r
        .string(&mut s3, "region")
        .map_or_else(|| "us-east-1".to_string(), |s| s.into_inner());
    let path_style = r
        .boolean(&mut s3, "path_style")
        .is_some_and(|b| *b.get_ref());
    let allow_http = r
        .boolean(&mut s3, "allow_http")
        .is_some_and(|b| *b.get_ref());
    check_endpoint(r, endpoint.as_ref(), allow_http);
    let file = absolute_path(r, &mut s3, "cache.s3.credentials_file");
    let place = s3.span.clone();
    r.finish(s3);
    let credentials = match &file {
        Some(path) => credentials_from_file(path),
        None => credentials_from_env(),
    };
    let (access_key_id, secret_access_key) = match credentials {
        Ok(pair) => pair,
        Err(why) => {
            r.error(place, format!("cache.shared: {why}"));
            return None;
        }
    };
    Some(SharedConfig {
        s3: S3Settings {
            bucket,
            prefix,
            endpoint: endpoint.map(|e| e.into_inner()),
            region,
            path_style,
            allow_http,
            access_key_id,
            secret_access_key,
            ca_file: None,
        },
        timeout,
        peers,
    })
}

/// `cache.peers`: the fleet's gateways as `host:port` (their GOPROXY
/// endpoints), the only ones whose download a lease may send this one to.
fn peers<'i>(r: &mut Reader<'i>, cache: &mut Table<'i>) -> Vec<String> {
    let mut peers = Vec::new();
    for peer in r.strings(cache, "peers").unwrap_or_default() {
        let valid = peer.get_ref().rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if valid {
            peers.push(peer.into_inner());
        } else {
            r.error(peer.span(), format!("cache.peers: {:?} must be host:port (a gateway's proxy.listen, as the others reach it)", peer.get_ref()));
        }
    }
    peers
}

/// An endpoint is an http(s) URL; plain http only when allowed.
fn check_endpoint(
    r: &mut Reader<'_>,
    endpoint: Option<&super::reader::Located<String>>,
    allow_http: bool,
) {
    let Some(endpoint) = endpoint else {
        return;
    };
    let plain = endpoint.get_ref().starts_with("http://");
    if !plain && !endpoint.get_ref().starts_with("https://") {
        r.error(
            endpoint.span(),
            "cache.s3.endpoint must be an http:// or https:// URL",
        );
    } else if plain && !allow_http {
        r.error(endpoint.span(), "cache.s3.endpoint is plain http://: set cache.s3.allow_http = true if that is meant (credentials and modules would cross the network unencrypted)");
    }
}

/// `s3://bucket[/prefix]`, the prefix without slashes at either end.
fn bucket_and_prefix(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let edges = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && edges(bucket.chars().next())
        && edges(bucket.chars().last());
    let prefix = prefix.trim_matches('/');
    let clean = prefix.is_empty() || crate::cache::storage::checked(prefix).is_ok();
    (valid && clean).then(|| (bucket.to_string(), prefix.to_string()))
}

fn credentials_from_env() -> Result<(String, String), String> {
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => Ok((id, secret)),
        _ => Err("no credentials: set cache.s3.credentials_file, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in modgate's environment".into()),
    }
}

/// The pair from a TOML file only its owner may read.
fn credentials_from_file(path: &std::path::Path) -> Result<(String, String), String> {
    let [id, secret] = super::secrets::secret_fields(
        path,
        "cache.s3.credentials_file",
        ["access_key_id", "secret_access_key"],
    )?;
    Ok((id, secret))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn errors(text: &str) -> String {
        match Config::parse("t.toml", text) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn shared_settings_are_checked_and_secrets_stay_out_of_debug() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s3.toml");
        std::fs::write(
            &file,
            "access_key_id = \"AKID\"\nsecret_access_key = \"SEKRIT\"\n",
        )
        .unwrap();
        let base = format!(
            "[cache]\nshared = \"s3://mods/go\"\n[cache.s3]\ncredentials_file = {file:?}\n"
        );
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        assert!(errors(&base).contains("chmod 600"), "{}", errors(&base));
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let config = Config::parse("t.toml", &base).unwrap();
        let shared = config.cache.shared.clone().unwrap();
        assert_eq!(
            (shared.s3.bucket.as_str(), shared.s3.prefix.as_str()),
            ("mods", "go")
        );
        assert_eq!(shared.s3.secret_access_key, "SEKRIT");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("SEKRIT") && !shown.contains("AKID"),
            "{shown}"
        );
        let plain = format!("{base}endpoint = \"http://10.0.0.5:9000\"\n");
        assert!(errors(&plain).contains("allow_http"), "{}", errors(&plain));
        assert!(errors(&format!("{plain}allow_http = true\n")).is_empty());
        let orphan = "[cache.s3]\nregion = \"eu-west-1\"\n";
        assert!(
            errors(orphan).contains("cache.shared is not"),
            "{}",
            errors(orphan)
        );
        let typo = format!("{base}regoin = \"x\"\n");
        assert!(
            errors(&typo).contains("did you mean cache.s3.region"),
            "{}",
            errors(&typo)
        );
    }

    #[test]
    fn bucket_urls() {
        let parse = super::bucket_and_prefix;
        assert_eq!(
            parse("s3://mod-cache"),
            Some(("mod-cache".into(), String::new()))
        );
        assert_eq!(
            parse("s3://mod-cache/fleet/go/"),
            Some(("mod-cache".into(), "fleet/go".into()))
        );
        for bad in [
            "mod-cache",
            "s3://",
            "s3://ab",
            "s3://Upper",
            "s3://-x-",
            "s3://b_c",
            "s3://abc/../x",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
