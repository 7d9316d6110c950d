//! Raw TOML -> typed [`Config`], collecting every error. Missing keys take the
//! defaults below, which are the values written in `config/modgate.toml`.

use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::reader::{Reader, Table};
use super::units::{parse_duration, parse_size};
use super::{
    AdminConfig, CacheConfig, Config, ConfigError, GomodConfig, InterceptConfig, LogConfig,
    LogFormat, OnMirrorFailure, Origin, PLACED_KEYS, PackagesConfig, ProxyConfig, SUMDB_KEY,
    TransparentConfig, UpstreamConfig, Verification,
};
use crate::rules::{NoProxy, PortRange, Private, mask_userinfo};

pub fn parse(file: &str, text: &str) -> Result<Config, Vec<ConfigError>> {
    let (mut r, root) = Reader::parse(file, text);
    let Some(mut root) = root else {
        return Err(r.errors);
    };
    let places = PLACED_KEYS
        .iter()
        .filter_map(|key| {
            let (line, column) = r.line_column(&root.span_of(key)?);
            Some((*key, line, column))
        })
        .collect();
    let origin = Origin {
        file: file.to_string(),
        places,
    };
    let (proxy, listen_place) = proxy_section(&mut r, &mut root);
    let transparent = transparent_section(&mut r, &mut root, &proxy.listen);
    if let Some(place) = listen_place
        && proxy.listen.is_empty()
        && !transparent.enabled()
    {
        r.error(
            place,
            "proxy.listen is empty and no transparent listener is set: modgate would serve nobody",
        );
    }
    let upstream = upstream_section(&mut r, &mut root);
    let intercept = intercept_section(&mut r, &mut root);
    let mut gomod = gomod_section(&mut r, &mut root, intercept.enabled, &upstream.no_proxy);
    let pypi_hosts: &[&str] = &["pypi.org", "files.pythonhosted.org"];
    let pypi = packages_section(
        &mut r,
        &mut root,
        "pypi",
        (pypi_hosts, &["https://mirrors.aliyun.com/pypi"]),
    );
    let npm_hosts: &[&str] = &["registry.npmjs.org"];
    let npm = packages_section(
        &mut r,
        &mut root,
        "npm",
        (npm_hosts, &["https://registry.npmmirror.com"]),
    );
    let pypi_place = root.place_of("pypi");
    let mut cache = cache_section(&mut r, &mut root, gomod.verification.verify);
    if (pypi.enabled || npm.enabled) && !(cache.enabled && intercept.enabled) {
        let why = "pypi.enabled and npm.enabled need cache.enabled (files are checked and kept there) and intercept.enabled";
        r.error(pypi_place, why);
    }
    // upstream.ca_file is trusted by every TLS connection modgate opens.
    gomod.upstream_ca_file = upstream.ca_file.clone();
    if let Some(shared) = &mut cache.shared {
        shared.s3.ca_file = upstream.ca_file.clone();
    }
    let admin = admin_section(&mut r, &mut root);
    let log = log_section(&mut r, &mut root);
    r.finish(root);
    if r.errors.is_empty() {
        Ok(Config {
            origin,
            proxy,
            transparent,
            upstream,
            intercept,
            gomod,
            pypi,
            npm,
            cache,
            admin,
            log,
        })
    } else {
        r.errors.sort_by_key(|e| (e.line, e.column));
        Err(r.errors)
    }
}

/// The `[proxy]` section, and where `listen` is written (for the check
/// that needs `[transparent]` too).
fn proxy_section<'i>(
    r: &mut Reader<'i>,
    root: &mut Table<'i>,
) -> (ProxyConfig, Option<Range<usize>>) {
    let mut t = r.section(root, "proxy");
    let listen_place = t.place_of("listen");
    let errors_before = r.errors.len();
    let listen = socket_addrs(r, &mut t, "listen", &["127.0.0.1:3128"]);
    // An empty list is only worth a word of its own when nothing in it was wrong.
    let listen_place = (r.errors.len() == errors_before).then_some(listen_place);
    let allow_clients = nets(
        r,
        &mut t,
        "allow_clients",
        &[
            "127.0.0.0/8",
            "::1/128",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "fc00::/7",
        ],
    );
    let connect_ports = ports(r, &mut t, "connect_ports", &[443]);
    let deny_destinations = nets(
        r,
        &mut t,
        "deny_destinations",
        &[
            "127.0.0.0/8",
            "::1/128",
            "::/128",
            "169.254.0.0/16",
            "fe80::/10",
            "0.0.0.0/8",
        ],
    );
    let http_ports = parsed_list(r, &mut t, "http_ports", &["80", "443", "1024-65535"], |s| {
        PortRange::parse(s)
    });
    let auth_file = r
        .string(&mut t, "auth_file")
        .map(|s| PathBuf::from(s.into_inner()));
    let max_connections = bounded(r, &mut t, "max_connections", 25_000, MAX_CONNECTIONS);
    let max_connections_per_client = bounded(
        r,
        &mut t,
        "max_connections_per_client",
        1000,
        MAX_CONNECTIONS,
    );
    let max_header_size = size(
        r,
        &mut t,
        "max_header_size",
        64 << 10,
        (8 << 10)..=(1 << 20),
    );
    let header_read_timeout = duration(r, &mut t, "header_read_timeout", Duration::from_secs(10));
    let idle_timeout = duration(r, &mut t, "idle_timeout", Duration::from_secs(300));
    let shutdown_grace = duration(r, &mut t, "shutdown_grace", Duration::from_secs(10));
    let public_name = public_name(r, &mut t);
    let pid_file = absolute_path(r, &mut t, "proxy.pid_file");
    r.finish(t);
    let proxy = ProxyConfig {
        listen,
        allow_clients,
        connect_ports,
        http_ports,
        deny_destinations,
        auth_file,
        max_connections,
        max_connections_per_client,
        max_header_size: usize::try_from(max_header_size).unwrap_or(usize::MAX),
        header_read_timeout,
        idle_timeout,
        shutdown_grace,
        public_name,
        pid_file,
    };
    (proxy, listen_place)
}

/// `proxy.public_name`: `host:port`, as a PAC file names a proxy.
fn public_name<'i>(r: &mut Reader<'i>, t: &mut Table<'i>) -> Option<String> {
    let s = r.string(t, "public_name")?;
    if crate::rules::pac::proxy_name(s.get_ref()).is_some() {
        Some(s.into_inner())
    } else {
        r.error(
            s.span(),
            "proxy.public_name must be host:port (a name or IP literal and a port)",
        );
        None
    }
}

fn admin_section<'i>(r: &mut Reader<'i>, root: &mut Table<'i>) -> AdminConfig {
    let mut t = r.section(root, "admin");
    let listen = match r.string(&mut t, "listen") {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9128))),
        Some(s) if s.get_ref().is_empty() => None,
        Some(s) => s.get_ref().parse().map(Some).unwrap_or_else(|_| {
            r.error(
                s.span(),
                format!(
                    "admin.listen: {:?} is not an IP:port address (\"\" turns the admin listener off)",
                    s.get_ref()
                ),
            );
            None
        }),
    };
    let token = r.string(&mut t, "token").and_then(|s| {
        if s.get_ref().len() < 16 || s.get_ref().chars().any(char::is_whitespace) {
            r.error(
                s.span(),
                "admin.token must be at least 16 characters, without spaces",
            );
            None
        } else {
            Some(s.into_inner())
        }
    });
    r.finish(t);
    AdminConfig { listen, token }
}

fn transparent_section<'i>(
    r: &mut Reader<'i>,
    root: &mut Table<'i>,
    explicit: &[SocketAddr],
) -> TransparentConfig {
    let mut t = r.section(root, "transparent");
    let mut taken = explicit.to_vec();
    let mut listener = |r: &mut Reader<'i>, t: &mut Table<'i>, key: &str| {
        let s = r.string(t, key)?;
        match s.get_ref().parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 && taken.contains(&addr) => {
                r.error(
                    s.span(),
                    format!("transparent.{key}: {addr} is already a listener"),
                );
                None
            }
            Ok(addr) => {
                taken.push(addr);
                Some(addr)
            }
            Err(_) => {
                r.error(
                    s.span(),
                    format!(
                        "transparent.{key}: {:?} is not an IP:port address",
                        s.get_ref()
                    ),
                );
                None
            }
        }
    };
    let http = listener(r, &mut t, "http");
    let https = listener(r, &mut t, "https");
    let outbound_mark =
        r.integer(&mut t, "outbound_mark")
            .and_then(|n| match u32::try_from(*n.get_ref()) {
                Ok(mark) if mark > 0 => Some(mark),
                _ => {
                    r.error(
                        n.span(),
                        "transparent.outbound_mark must be a mark between 1 and 0xffffffff",
                    );
                    None
                }
            });
    r.finish(t);
    TransparentConfig {
        http,
        https,
        outbound_mark,
    }
}

fn upstream_section<'i>(r: &mut Reader<'i>, root: &mut Table<'i>) -> UpstreamConfig {
    let mut t = r.section(root, "upstream");
    let mut parents = Vec::new();
    for url in r.one_or_more(&mut t, "proxy").unwrap_or_default() {
        match super::parent::parse_url(url.get_ref()) {
            Ok(parent) => parents.push(parent),
            Err(msg) => r.error(url.span(), format!("upstream.proxy: {msg}")),
        }
    }
    let login = super::parent::login(r, &mut t, &mut parents);
    let down_for = duration(r, &mut t, "down_for", Duration::from_secs(30));
    let pac = r.string(&mut t, "pac").and_then(|s| {
        let text = s.get_ref();
        let fine = text.starts_with("http://") || std::path::Path::new(text).is_absolute();
        if !fine {
            r.error(
                s.span(),
                format!("upstream.pac {text:?} must be an http:// URL or an absolute file path"),
            );
        }
        fine.then(|| s.into_inner())
    });
    let pac_ttl = duration(r, &mut t, "pac_ttl", Duration::from_secs(900));
    let no_proxy = no_proxy(r, &mut t, "no_proxy", "localhost,127.0.0.0/8,::1");
    let connect_timeout = duration(r, &mut t, "connect_timeout", Duration::from_secs(10));
    let response_timeout = duration(r, &mut t, "response_timeout", Duration::from_secs(60));
    let resolve_for_parent = r
        .boolean(&mut t, "resolve_for_parent")
        .is_none_or(|b| *b.get_ref());
    let ca_file = absolute_path(r, &mut t, "upstream.ca_file");
    r.finish(t);
    UpstreamConfig {
        parents,
        down_for,
        login,
        pac,
        pac_ttl,
        no_proxy,
        connect_timeout,
        response_timeout,
        resolve_for_parent,
        ca_file,
    }
}

fn intercept_section<'i>(r: &mut Reader<'i>, root: &mut Table<'i>) -> InterceptConfig {
    let mut t = r.section(root, "intercept");
    let enabled = r.boolean(&mut t, "enabled").is_none_or(|b| *b.get_ref());
    let place = t.place_of("ca_dir");
    let ca_dir = match absolute_path(r, &mut t, "intercept.ca_dir") {
        Some(dir) => dir,
        None => InterceptConfig::default_ca_dir().unwrap_or_else(|| {
            r.error(
                place,
                "intercept.ca_dir is not set and there is no user data directory ($XDG_DATA_HOME or $HOME): set intercept.ca_dir",
            );
            PathBuf::new()
        }),
    };
    let bypass = no_proxy(r, &mut t, "bypass", "");
    let bypass_clients = nets(r, &mut t, "bypass_clients", &[]);
    r.finish(t);
    InterceptConfig {
        enabled,
        ca_dir,
        bypass,
        bypass_clients,
    }
}

fn gomod_section<'i>(
    r: &mut Reader<'i>,
    root: &mut Table<'i>,
    intercepting: bool,
    no_proxy: &NoProxy,
) -> GomodConfig {
    let mut t = r.section(root, "gomod");
    let hosts_place = t.place_of("proxy_hosts");
    let proxy_hosts = host_names(r, &mut t, "proxy_hosts", &["proxy.golang.org"]);
    let sumdb_hosts = host_names(r, &mut t, "sumdb_hosts", &["sum.golang.org"]);
    if intercepting && proxy_hosts.is_empty() && sumdb_hosts.is_empty() {
        r.error(
            hosts_place,
            "gomod.proxy_hosts and gomod.sumdb_hosts are both empty while intercept.enabled: the CA would be constrained to nothing (set intercept.enabled = false instead)",
        );
    }
    let mirrors = mirror_urls(
        r,
        &mut t,
        "mirrors",
        &["https://goproxy.cn", "https://mirrors.aliyun.com/goproxy"],
    );
    let sumdb_mirrors = mirror_urls(
        r,
        &mut t,
        "sumdb_mirrors",
        &[
            "https://goproxy.cn/sumdb/sum.golang.org",
            "https://sum.golang.google.cn",
        ],
    );
    // Not set: the office's own domains (upstream.no_proxy) are private.
    let private = if t.has("private") {
        module_patterns(r, &mut t, "private")
    } else {
        Private::office_domains(no_proxy)
    };
    let verification = verification(r, &mut t);
    let on_mirror_failure = match r.string(&mut t, "on_mirror_failure") {
        None => OnMirrorFailure::BadGateway,
        Some(s) => match s.get_ref().as_str() {
            "not_found" => OnMirrorFailure::NotFound,
            "bad_gateway" => OnMirrorFailure::BadGateway,
            other => {
                r.error(s.span(), format!("gomod.on_mirror_failure must be \"not_found\" or \"bad_gateway\", not {other:?}"));
                OnMirrorFailure::NotFound
            }
        },
    };
    let mirror_ca_file = r
        .string(&mut t, "mirror_ca_file")
        .map(|s| PathBuf::from(s.into_inner()));
    let mirror_timeout = duration(r, &mut t, "mirror_timeout", Duration::from_secs(15));
    let demote_for = duration(r, &mut t, "demote_for", Duration::from_secs(30));
    r.finish(t);
    GomodConfig {
        proxy_hosts,
        sumdb_hosts,
        mirrors,
        sumdb_mirrors,
        private,
        verification,
        on_mirror_failure,
        mirror_ca_file,
        upstream_ca_file: None,
        mirror_timeout,
        demote_for,
    }
}

/// A GOPRIVATE-syntax list of module path patterns.
/// `[pypi]` or `[npm]` (`section`): off unless enabled; the hosts
/// intercepted, the mirrors (index bases), the private names.
fn packages_section<'i>(
    r: &mut Reader<'i>,
    root: &mut Table<'i>,
    section: &str,
    (hosts, mirrors): (&[&str], &[&str]),
) -> PackagesConfig {
    let mut t = r.section(root, section);
    let enabled = r.boolean(&mut t, "enabled").is_some_and(|b| *b.get_ref());
    let hosts = host_names(r, &mut t, "hosts", hosts);
    let place = t.place_of("mirrors");
    let mirrors = mirror_urls(r, &mut t, "mirrors", mirrors);
    if mirrors.iter().any(|m| m == "origin") {
        let why =
            format!("{section}.mirrors: \"origin\" is for gomod; name each mirror's base URL");
        r.error(place, why);
    }
    let private = match r.string(&mut t, "private") {
        None => Private::default(),
        Some(s) => Private::parse(&s.get_ref().to_lowercase()).unwrap_or_else(|errors| {
            for e in errors {
                r.error(s.span(), format!("{section}.private: {e}"));
            }
            Private::default()
        }),
    };
    r.finish(t);
    PackagesConfig {
        enabled,
        hosts,
        mirrors,
        private,
    }
}

fn module_patterns<'i>(r: &mut Reader<'i>, t: &mut Table<'i>, key: &str) -> Private {
    match r.string(t, key) {
        None => Private::default(),
        Some(s) => Private::parse(s.get_ref()).unwrap_or_else(|errors| {
            for e in errors {
                r.error(s.span(), format!("gomod.{key}: {e}"));
            }
            Private::default()
        }),
    }
}

/// The go.sum checks: `verify`, `sumdb_key`, `nosumdb`.
fn verification<'i>(r: &mut Reader<'i>, t: &mut Table<'i>) -> Verification {
    let verify = match r.string(t, "verify") {
        None => true,
        Some(s) => match s.get_ref().as_str() {
            "sumdb" => true,
            "off" => false,
            other => {
                r.error(
                    s.span(),
                    format!("gomod.verify must be \"sumdb\" or \"off\", not {other:?}"),
                );
                true
            }
        },
    };
    let key = match r.string(t, "sumdb_key") {
        None => SUMDB_KEY.to_string(),
        Some(s) => {
            if let Err(e) = signed_note::StandardVerifier::new(s.get_ref()) {
                r.error(
                    s.span(),
                    format!("gomod.sumdb_key is not a checksum database verifier key: {e}"),
                );
            }
            s.into_inner()
        }
    };
    let nosumdb = module_patterns(r, t, "nosumdb");
    Verification {
        verify,
        sumdb_key: key,
        nosumdb,
    }
}

/// `verifying`: gomod.verify is on, which keeps its state in the cache.
fn cache_section<'i>(r: &mut Reader<'i>, root: &mut Table<'i>, verifying: bool) -> CacheConfig {
    let mut t = r.section(root, "cache");
    let enabled_place = t.place_of("enabled");
    let enabled = r.boolean(&mut t, "enabled").is_none_or(|b| *b.get_ref());
    if verifying && !enabled {
        r.error(
            enabled_place,
            "cache.enabled = false needs gomod.verify = \"off\": checksum verification keeps the database's signed head, lookups and tiles in the cache",
        );
    }
    let dir_place = t.place_of("dir");
    let dir = match absolute_path(r, &mut t, "cache.dir") {
        Some(dir) => dir,
        None => CacheConfig::default_dir().unwrap_or_else(|| {
            if enabled {
                r.error(
                    dir_place.clone(),
                    "cache.dir is not set and there is no user cache directory ($XDG_CACHE_HOME or $HOME): set cache.dir",
                );
            }
            PathBuf::new()
        }),
    };
    let max_size = size(r, &mut t, "max_size", 20 << 30, 1..=(1 << 50));
    let mutable_ttl = duration(r, &mut t, "mutable_ttl", Duration::from_secs(60));
    let negative_ttl = duration(r, &mut t, "negative_ttl", Duration::from_secs(30));
    let shared = super::shared::shared_section(r, &mut t);
    let offline_place = t.place_of("offline");
    let offline = r.boolean(&mut t, "offline").is_some_and(|b| *b.get_ref());
    if offline && !enabled {
        r.error(
            offline_place,
            "cache.offline needs cache.enabled: there would be nothing to serve",
        );
    }
    r.finish(t);
    CacheConfig {
        enabled,
        dir,
        max_size,
        mutable_ttl,
        negative_ttl,
        offline,
        shared,
    }
}

fn log_section<'i>(r: &mut Reader<'i>, root: &mut Table<'i>) -> LogConfig {
    let mut t = r.section(root, "log");
    let format = match r.string(&mut t, "format") {
        None => LogFormat::Text,
        Some(s) => match s.get_ref().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                r.error(
                    s.span(),
                    format!("log.format must be \"text\" or \"json\", not {other:?}"),
                );
                LogFormat::Text
            }
        },
    };
    let access_log = absolute_path(r, &mut t, "log.access_log");
    r.finish(t);
    LogConfig { format, access_log }
}

/// An absolute path at `name` (`section.key`); a relative one is an error
/// (it would change with the working directory). Errors give an empty path.
pub(super) fn absolute_path<'i>(
    r: &mut Reader<'i>,
    t: &mut Table<'i>,
    name: &str,
) -> Option<PathBuf> {
    let key = name.rsplit('.').next().unwrap_or(name);
    let s = r.string(t, key)?;
    if PathBuf::from(s.get_ref()).is_absolute() {
        return Some(PathBuf::from(s.into_inner()));
    }
    r.error(
        s.span(),
        format!(
            "{name} {:?} must be an absolute path (a relative one would change with the working directory)",
            s.get_ref()
        ),
    );
    Some(PathBuf::new())
}

/// Compiles a NO_PROXY-syntax string key.
pub(super) fn no_proxy<'i>(
    r: &mut Reader<'i>,
    t: &mut Table<'i>,
    key: &str,
    default: &str,
) -> NoProxy {
    let Some(s) = r.string(t, key) else {
        return NoProxy::parse(default).unwrap_or_default();
    };
    NoProxy::parse(s.get_ref()).unwrap_or_else(|errors| {
        for e in errors {
            r.error(s.span(), format!("{key}: {e}"));
        }
        NoProxy::default()
    })
}

fn ports<'i>(r: &mut Reader<'i>, t: &mut Table<'i>, key: &str, default: &[u16]) -> Vec<u16> {
    let Some(items) = r.integers(t, key) else {
        return default.to_vec();
    };
    items
        .into_iter()
        .filter_map(|n| match u16::try_from(*n.get_ref()) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                r.error(
                    n.span(),
                    format!("{key}: {} is not a port (1-65535)", n.get_ref()),
                );
                None
            }
        })
        .collect()
}

/// The most connections any count may allow: well below what a semaphore
/// or the kernel's descriptor table can hold.
const MAX_CONNECTIONS: usize = 1 << 20;

/// The longest duration a key may take: timers must stay far from overflow.
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// An integer between 1 and `max`.
fn bounded<'i>(
    r: &mut Reader<'i>,
    t: &mut Table<'i>,
    key: &str,
    default: usize,
    max: usize,
) -> usize {
    let Some(n) = r.integer(t, key) else {
        return default;
    };
    match usize::try_from(*n.get_ref()) {
        Ok(v) if (1..=max).contains(&v) => v,
        _ => {
            r.error(n.span(), format!("{key} must be between 1 and {max}"));
            default
        }
    }
}

pub(super) fn duration<'i>(
    r: &mut Reader<'i>,
    t: &mut Table<'i>,
    key: &str,
    default: Duration,
) -> Duration {
    let Some(s) = r.string(t, key) else {
        return default;
    };
    match parse_duration(s.get_ref()) {
        Ok(d) if !d.is_zero() && d <= MAX_DURATION => d,
        Ok(d) if d.is_zero() => {
            r.error(s.span(), format!("{key} must be longer than zero"));
            default
        }
        Ok(_) => {
            r.error(s.span(), format!("{key} must be at most 30 days"));
            default
        }
        Err(msg) => {
            r.error(s.span(), format!("{key}: {msg}"));
            default
        }
    }
}

fn size<'i>(
    r: &mut Reader<'i>,
    t: &mut Table<'i>,
    key: &str,
    default: u64,
    allowed: RangeInclusive<u64>,
) -> u64 {
    let Some(s) = r.string(t, key) else {
        return default;
    };
    match parse_size(s.get_ref()) {
        Ok(n) if allowed.contains(&n) => n,
        Ok(n) => {
            r.error(
                s.span(),
                format!(
                    "{key}: {n} bytes is outside {}..={} bytes",
                    allowed.start(),
                    allowed.end()
                ),
            );
            default
        }
        Err(msg) => {
            r.error(s.span(), format!("{key}: {msg}"));
            default
        }
    }
}

/// Parses `http://[user:pass@]host:port[/]`.
/// A list of strings, each parsed by `parse`; every bad item is reported at
/// its own place. Absent means `default`.
fn parsed_list<'i, T>(
    r: &mut Reader<'i>,
    t: &mut Table<'i>,
    key: &str,
    default: &[&str],
    parse: impl Fn(&str) -> Result<T, String>,
) -> Vec<T> {
    let Some(items) = r.strings(t, key) else {
        return default.iter().filter_map(|s| parse(s).ok()).collect();
    };
    items
        .into_iter()
        .filter_map(|s| {
            parse(s.get_ref())
                .map_err(|why| {
                    let item = mask_userinfo(s.get_ref());
                    r.error(s.span(), format!("{key}: {item:?} {why}"))
                })
                .ok()
        })
        .collect()
}

fn socket_addrs<'i>(
    r: &mut Reader<'i>,
    t: &mut Table<'i>,
    key: &str,
    default: &[&str],
) -> Vec<SocketAddr> {
    parsed_list(r, t, key, default, |s| {
        s.parse()
            .map_err(|_| "is not an IP:port address".to_string())
    })
}

fn nets<'i>(r: &mut Reader<'i>, t: &mut Table<'i>, key: &str, default: &[&str]) -> Vec<IpNet> {
    parsed_list(r, t, key, default, |s| {
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
            .map(|n| n.trunc())
            .map_err(|_| "is not an IP address or CIDR".to_string())
    })
}

fn host_names<'i>(
    r: &mut Reader<'i>,
    t: &mut Table<'i>,
    key: &str,
    default: &[&str],
) -> Vec<String> {
    parsed_list(r, t, key, default, |s| match crate::rules::Host::parse(s) {
        Ok(crate::rules::Host::Name(name)) => Ok(name),
        _ => Err("is not a host name".to_string()),
    })
}

/// Mirror base URLs: `http(s)://host[:port][/path]` or `origin`.
fn mirror_urls<'i>(
    r: &mut Reader<'i>,
    t: &mut Table<'i>,
    key: &str,
    default: &[&str],
) -> Vec<String> {
    parsed_list(r, t, key, default, |s| {
        let url = s.trim_end_matches('/');
        if url == "origin" {
            return Ok(url.to_string());
        }
        let uri = url
            .parse::<http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
            .ok_or("is not an http(s):// URL or \"origin\"")?;
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err("carries credentials (user:pass@): modgate sends none to mirrors".into());
        }
        if uri.query().is_some() {
            return Err("has a query; a mirror base URL has none".into());
        }
        Ok(url.to_string())
    })
}
