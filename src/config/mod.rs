//! Configuration: the raw TOML (with locations) is validated in one pass that
//! reports every error, and becomes the typed [`Config`] used everywhere else.
//! The default config is compiled in and equals `config/modgate.toml`.

mod load;
pub use parent::{Credentials, Login, ParentProxy, Scheme};
mod parent;
mod reader;
mod secrets;
mod shared;
pub mod units;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::rules::{NoProxy, PortRange, Private};

/// The embedded default configuration (same text as `config/modgate.toml`).
pub const DEFAULT_TOML: &str = include_str!("../../config/modgate.toml");

#[derive(Clone, Debug)]
pub struct Config {
    /// Where it was read from, and where the keys that name files,
    /// directories and listeners are written (for `modgate check`).
    pub origin: Origin,
    pub proxy: ProxyConfig,
    pub transparent: TransparentConfig,
    pub upstream: UpstreamConfig,
    pub intercept: InterceptConfig,
    pub gomod: GomodConfig,
    pub pypi: PackagesConfig,
    /// `[npm]`: the same shape as `[pypi]`.
    pub npm: PackagesConfig,
    pub cache: CacheConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
}

/// `[admin]`: health, readiness and metrics for the people who run modgate.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    /// `None`: no admin listener (`listen = ""`).
    pub listen: Option<SocketAddr>,
    /// A bearer token `/metrics` asks for, when set (never the probes).
    pub token: Option<String>,
}

/// `[cache]`: the office module cache.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Absolute; a GOPROXY tree.
    pub dir: PathBuf,
    pub max_size: u64,
    /// How long `@v/list`, `@latest`, queries and sumdb `latest` are served unasked.
    pub mutable_ttl: Duration,
    /// How long a 404/410 from every mirror is remembered.
    pub negative_ttl: Duration,
    /// Serve from the cache alone; never dial a mirror.
    pub offline: bool,
    /// The bucket shared by a fleet of gateways (`cache.shared`), if any.
    pub shared: Option<SharedConfig>,
}

/// `cache.shared` and `[cache.s3]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedConfig {
    pub s3: crate::cache::storage::s3::S3Settings,
    /// The longest a client waits on the bucket (`cache.shared_timeout`).
    pub timeout: Duration,
    /// The fleet's gateways (`cache.peers`, `host:port`).
    pub peers: Vec<String>,
}

impl CacheConfig {
    /// The default `cache.dir`: the user's cache directory (`$XDG_CACHE_HOME/modgate`).
    pub fn default_dir() -> Option<PathBuf> {
        dirs::cache_dir().map(|dir| dir.join("modgate"))
    }
}

impl InterceptConfig {
    /// The user's data directory: `$XDG_DATA_HOME/modgate`.
    pub fn default_ca_dir() -> Option<PathBuf> {
        dirs::data_dir().map(|dir| dir.join("modgate"))
    }
}

#[derive(Clone, Debug)]
pub struct InterceptConfig {
    pub enabled: bool,
    /// Where the CA lives: absolute, so every command and every working
    /// directory finds the same one.
    pub ca_dir: PathBuf,
    /// Destinations never intercepted (NO_PROXY syntax): tunnelled as-is.
    pub bypass: NoProxy,
    /// Clients never intercepted.
    pub bypass_clients: Vec<IpNet>,
}

/// `[pypi]` (and `[npm]`): packages from domestic mirrors, through the cache.
#[derive(Clone, Debug)]
pub struct PackagesConfig {
    pub enabled: bool,
    /// The hosts pip asks, intercepted when enabled.
    pub hosts: Vec<String>,
    /// Base URLs (their `/simple/<project>/` is the index), no trailing slash.
    pub mirrors: Vec<String>,
    /// Project names never asked of a mirror (globs, matched against the
    /// normalized name).
    pub private: Private,
}

#[derive(Clone, Debug)]
pub struct GomodConfig {
    pub proxy_hosts: Vec<String>,
    pub sumdb_hosts: Vec<String>,
    /// Base URLs without trailing slash, or `origin`.
    pub mirrors: Vec<String>,
    pub sumdb_mirrors: Vec<String>,
    pub private: Private,
    pub verification: Verification,
    pub on_mirror_failure: OnMirrorFailure,
    pub mirror_ca_file: Option<PathBuf>,
    /// `upstream.ca_file`, which mirrors are verified against too.
    pub upstream_ca_file: Option<PathBuf>,
    /// Time allowed for a mirror's response head before trying the next.
    pub mirror_timeout: Duration,
    /// How long a failing mirror is tried last.
    pub demote_for: Duration,
}

impl Config {
    /// Every host interception answers for (and the CA's name
    /// constraints cover): the Go hosts, and PyPI's when enabled.
    pub fn intercepted_hosts(&self) -> Vec<String> {
        let pypi = self.pypi.hosts.iter().filter(|_| self.pypi.enabled);
        let npm = self.npm.hosts.iter().filter(|_| self.npm.enabled);
        let mut hosts = self.gomod.hosts();
        hosts.extend(pypi.chain(npm).cloned());
        hosts
    }
}

impl GomodConfig {
    /// The PEM files mirrors are trusted by, beside the system's roots.
    pub fn ca_files(&self) -> Vec<&std::path::Path> {
        self.upstream_ca_file
            .iter()
            .chain(&self.mirror_ca_file)
            .map(PathBuf::as_path)
            .collect()
    }

    /// Every intercepted host name.
    pub fn hosts(&self) -> Vec<String> {
        self.proxy_hosts
            .iter()
            .chain(&self.sumdb_hosts)
            .cloned()
            .collect()
    }
}

/// The verifier key of sum.golang.org, the Go checksum database.
pub const SUMDB_KEY: &str = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8";

/// How module files are checked against the checksum database.
#[derive(Clone, Debug)]
pub struct Verification {
    /// `gomod.verify = "sumdb"`: public `.mod`/`.zip` are checked before
    /// they are served or stored.
    pub verify: bool,
    /// The database's verifier key (checked at load).
    pub sumdb_key: String,
    /// Modules fetched but never looked up (GONOSUMDB syntax).
    pub nosumdb: Private,
}

/// What clients get when every mirror failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnMirrorFailure {
    /// 404, so `GOPROXY=…,direct` clients fall back to direct (and show
    /// only that attempt's error).
    NotFound,
    /// 502 (the default): the go command stops and shows modgate's reason.
    BadGateway,
}

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub listen: Vec<SocketAddr>,
    pub allow_clients: Vec<IpNet>,
    pub connect_ports: Vec<u16>,
    /// Ports plain http:// may reach (Squid's Safe_ports idea).
    pub http_ports: Vec<PortRange>,
    pub deny_destinations: Vec<IpNet>,
    pub auth_file: Option<PathBuf>,
    pub max_connections: usize,
    /// Connections one client address may hold at once.
    pub max_connections_per_client: usize,
    pub max_header_size: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    /// `host:port` the PAC file names as the proxy; `None`: the PAC
    /// request's own Host.
    pub public_name: Option<String>,
    /// Where `run` writes its process id, for `modgate reload`.
    pub pid_file: Option<PathBuf>,
}

/// `[transparent]`: listeners that REDIRECT rules send clients to.
#[derive(Clone, Debug, Default)]
pub struct TransparentConfig {
    /// Redirected tcp/80: HTTP routed by `Host`.
    pub http: Option<SocketAddr>,
    /// Redirected tcp/443: TLS routed by the ClientHello's server name.
    pub https: Option<SocketAddr>,
    /// SO_MARK on every outbound socket, so REDIRECT rules can skip modgate's own traffic.
    pub outbound_mark: Option<u32>,
}

impl TransparentConfig {
    pub fn enabled(&self) -> bool {
        self.http.is_some() || self.https.is_some()
    }
}

impl UpstreamConfig {
    /// The parents as people see them (no passwords), when there are any.
    pub fn parents_shown(&self) -> Option<String> {
        let shown: Vec<String> = self.parents.iter().map(ToString::to_string).collect();
        (!shown.is_empty()).then(|| shown.join(", "))
    }
}

#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// `upstream.proxy`: the parent proxies, tried in order.
    pub parents: Vec<ParentProxy>,
    /// `upstream.down_for`: how long a parent that cannot be reached is skipped.
    pub down_for: Duration,
    /// How modgate logs in to any parent (those a PAC file names too).
    pub login: Login,
    /// `upstream.pac`: the office PAC file (an http:// URL or a file).
    pub pac: Option<String>,
    /// `upstream.pac_ttl`: how often it is fetched again.
    pub pac_ttl: Duration,
    pub no_proxy: NoProxy,
    pub connect_timeout: Duration,
    /// Time a forwarded request waits for the response head (then 504).
    pub response_timeout: Duration,
    /// Names bound for the parent are resolved here first and refused when
    /// an address is in `deny_destinations` (a name this host cannot
    /// resolve still goes to the parent).
    pub resolve_for_parent: bool,
    /// `upstream.ca_file`: PEM roots trusted for every TLS connection
    /// modgate opens (a TLS-inspecting firewall's CA).
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// Where access lines go instead of stderr (reopened on SIGHUP).
    pub access_log: Option<PathBuf>,
}

/// Where a config came from.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    /// The file's path, or `<default config>`.
    pub file: String,
    /// `section.key` -> (line, column) of the keys `check` looks at
    /// beyond the file ([`PLACED_KEYS`]), when written.
    pub places: Vec<(&'static str, usize, usize)>,
}

/// The keys whose places a config keeps: files, directories, listeners
/// and capabilities that `run` needs and `check` verifies.
pub const PLACED_KEYS: [&str; 13] = [
    "proxy.listen",
    "proxy.auth_file",
    "proxy.pid_file",
    "log.access_log",
    "transparent.http",
    "transparent.https",
    "transparent.outbound_mark",
    "intercept.ca_dir",
    "gomod.mirror_ca_file",
    "upstream.ca_file",
    "upstream.pac",
    "cache.dir",
    "admin.listen",
];

impl Origin {
    /// An error about `key`: at its place, or at the file (a default).
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let place = self.places.iter().find(|(k, _, _)| *k == key);
        let (line, column) = place.map_or((0, 0), |(_, line, column)| (*line, *column));
        ConfigError {
            file: self.file.clone(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// One problem in a config file, with its place (line 0: the key is not
/// written, its default is the problem).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}", self.file, self.message);
        }
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", display_all(.0))]
    Invalid(Vec<ConfigError>),
}

fn display_all(errors: &[ConfigError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// A gateway's config, read by every command when the user has none of
/// their own (a root shell on the server, the unit's own commands).
pub const SYSTEM_FILE: &str = "/etc/modgate/modgate.toml";

/// The config file by precedence: `--config`, `$MODGATE_CONFIG`, then the
/// first of the user's file and [`SYSTEM_FILE`] that `exists`. Pure.
fn choose(
    explicit: Option<&Path>,
    env: Option<PathBuf>,
    user: Option<PathBuf>,
    exists: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or(env)
        .or_else(|| user.filter(|file| exists(file)))
        .or_else(|| Some(PathBuf::from(SYSTEM_FILE)).filter(|file| exists(file)))
}

impl Config {
    /// Validates config text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, LoadError> {
        load::parse(file, text).map_err(LoadError::Invalid)
    }

    /// The user's config file, read when no `--config` is given:
    /// `$XDG_CONFIG_HOME/modgate/modgate.toml`.
    pub fn user_file() -> Option<PathBuf> {
        dirs::config_dir().map(|dir| dir.join("modgate").join("modgate.toml"))
    }

    /// The file a command reads: `path` (`--config`); else `$MODGATE_CONFIG`;
    /// else the user's file ([`Config::user_file`]) or, on a server where
    /// the user has none, [`SYSTEM_FILE`], whichever exists first; `None`:
    /// the embedded default.
    pub fn chosen(path: Option<&Path>) -> Option<PathBuf> {
        let env = std::env::var_os("MODGATE_CONFIG").filter(|v| !v.is_empty());
        choose(path, env.map(PathBuf::from), Self::user_file(), |p| {
            p.exists()
        })
    }

    /// Loads the file [`Config::chosen`] names, else the embedded default.
    pub fn load(path: Option<&Path>) -> Result<Config, LoadError> {
        match Self::chosen(path) {
            None => Self::parse("<default config>", DEFAULT_TOML),
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Read {
                    path: path.clone(),
                    source,
                })?;
                Self::parse(&path.display().to_string(), &text)
            }
        }
    }
}

#[cfg(test)]
mod tests;
