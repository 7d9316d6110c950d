//! `modgate env`: the shell lines that point a workstation's tools at
//! modgate: both cases of the proxy variables (curl reads only the lower
//! case http_proxy), a NO_PROXY every tool reads alike, and the CA bundle
//! for the tools that take a file (refreshed on each run).

use std::path::{Path, PathBuf};

use anyhow::Context;
use modgate::config::Config;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Sh,
    Fish,
    Powershell,
    Cmd,
}

/// Hosts never sent to the proxy: names and plain addresses only (no
/// CIDRs, no wildcards, no leading dots), which curl, Go and Python read
/// the same way.
const NO_PROXY: &str = "localhost,127.0.0.1,::1";

pub fn env(config: Option<&Path>, shell: Shell) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let proxy = proxy_url(&config)?;
    let bundle = bundle_path()?;
    // The CA `run` will use (created now if this comes first).
    let (ca, created) =
        modgate::tls::Ca::load_or_init(&config.intercept.ca_dir, &config.intercepted_hosts())?;
    if created {
        eprintln!("modgate: created the CA at {}", ca.cert_path.display());
    }
    super::ca::write_bundle(&config.intercept.ca_dir, &bundle)?;
    let ca = config.intercept.ca_dir.join(modgate::tls::ca::CERT_FILE);
    let no_proxy = no_proxy(&config.upstream.no_proxy);
    print!("{}", lines(&vars(&proxy, &no_proxy, &bundle, &ca), shell));
    if config.pypi.enabled {
        eprintln!(
            "modgate: pip uses these as they are (pypi.org is answered by modgate); without the CA, point pip at the endpoint instead: PIP_INDEX_URL={proxy}/pypi/simple/"
        );
    }
    if config.npm.enabled {
        eprintln!(
            "modgate: npm trusts the CA through NODE_EXTRA_CA_CERTS (registry.npmjs.org is answered by modgate); without the CA: npm config set registry {proxy}/npm/"
        );
    }
    Ok(())
}

/// Where `env` keeps the bundle: the user's data directory.
fn bundle_path() -> anyhow::Result<PathBuf> {
    let dir = dirs::data_dir().context("no user data directory ($XDG_DATA_HOME or $HOME)")?;
    Ok(dir.join("modgate").join("bundle.pem"))
}

/// `http://host:port` of the explicit listener, as clients name it.
fn proxy_url(config: &Config) -> anyhow::Result<String> {
    if let Some(name) = &config.proxy.public_name {
        return Ok(format!("http://{name}"));
    }
    let listen = config
        .proxy
        .listen
        .first()
        .context("proxy.listen is empty: no explicit listener to point clients at")?;
    anyhow::ensure!(
        listen.port() != 0,
        "proxy.listen {listen} has no fixed port: set one, or proxy.public_name"
    );
    let host = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    Ok(format!("http://{host}:{}", listen.port()))
}

/// `NO_PROXY` for clients: loopback, and the office's own destinations
/// from `upstream.no_proxy` in the forms every client reads alike (a
/// domain without its leading dot, a single address); CIDRs, wildcards
/// and entries for one port are left out (curl and Python do not read them).
pub fn no_proxy(office: &modgate::rules::NoProxy) -> String {
    use modgate::rules::NoProxyRule;
    let mut entries: Vec<String> = NO_PROXY.split(',').map(str::to_string).collect();
    for (rule, port) in office.rules() {
        let entry = match (rule, port) {
            (NoProxyRule::Domain(domain), None) => domain.to_string(),
            (NoProxyRule::Net(net), None) if net.prefix_len() == net.max_prefix_len() => {
                net.addr().to_string()
            }
            _ => continue,
        };
        if !entries.contains(&entry) {
            entries.push(entry);
        }
    }
    entries.join(",")
}

/// Each variable and its value.
pub fn vars(proxy: &str, no_proxy: &str, bundle: &Path, ca: &Path) -> Vec<(&'static str, String)> {
    let bundle = bundle.display().to_string();
    let mut vars = Vec::new();
    for name in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"] {
        vars.push((name, proxy.to_string()));
    }
    vars.push(("NO_PROXY", no_proxy.to_string()));
    vars.push(("no_proxy", no_proxy.to_string()));
    // Go, OpenSSL, pip, Python requests, git, curl: a file with every root.
    for name in [
        "SSL_CERT_FILE",
        "PIP_CERT",
        "REQUESTS_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "CURL_CA_BUNDLE",
    ] {
        vars.push((name, bundle.clone()));
    }
    // Node adds this file to its own roots.
    vars.push(("NODE_EXTRA_CA_CERTS", ca.display().to_string()));
    vars
}

/// The lines that set `vars` in `shell`.
pub fn lines(vars: &[(&str, String)], shell: Shell) -> String {
    vars.iter()
        .map(|(name, value)| match shell {
            Shell::Sh => format!("export {name}='{}'\n", value.replace('\'', r"'\''")),
            Shell::Fish => format!("set -gx {name} '{}'\n", value.replace('\'', r"\'")),
            Shell::Powershell => format!("$env:{name} = '{}'\n", value.replace('\'', "''")),
            Shell::Cmd => format!("set \"{name}={value}\"\n"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_carries_the_office_destinations() {
        let office = modgate::rules::NoProxy::parse(
            "localhost,127.0.0.0/8,::1,.corp.example,git.lab.example:8443,10.1.2.3,10.0.0.0/8,*.wild.example",
        )
        .unwrap();
        assert_eq!(
            no_proxy(&office),
            "localhost,127.0.0.1,::1,corp.example,10.1.2.3,wild.example"
        );
    }

    #[test]
    fn every_shell_sets_both_cases() {
        let vars = vars(
            "http://127.0.0.1:3128",
            NO_PROXY,
            Path::new("/h/o'k/b.pem"),
            Path::new("/c.pem"),
        );
        let sh = lines(&vars, Shell::Sh);
        assert!(sh.contains("export http_proxy='http://127.0.0.1:3128'\n"));
        assert!(sh.contains("export HTTPS_PROXY='http://127.0.0.1:3128'\n"));
        assert!(sh.contains("export SSL_CERT_FILE='/h/o'\\''k/b.pem'\n"));
        assert!(sh.contains("export NODE_EXTRA_CA_CERTS='/c.pem'\n"));
        assert!(sh.contains("export PIP_CERT='/h/o'\\''k/b.pem'\n"));
        let fish = lines(&vars, Shell::Fish);
        assert!(fish.contains("set -gx no_proxy 'localhost,127.0.0.1,::1'\n"));
        let ps = lines(&vars, Shell::Powershell);
        assert!(ps.contains("$env:HTTP_PROXY = 'http://127.0.0.1:3128'\n"));
        let cmd = lines(&vars, Shell::Cmd);
        assert!(cmd.contains("set \"https_proxy=http://127.0.0.1:3128\"\n"));
    }
}
