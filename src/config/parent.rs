//! `upstream.proxy` and how modgate logs in to it: the parent's address,
//! the credentials (from the URL, `upstream.credentials_file` or the
//! environment; never shown), `upstream.keytab` (modgate's own Kerberos
//! identity) and `upstream.auth`, the login scheme (unset: whatever the
//! parent offers, strongest first, of those modgate has credentials for).

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use http::HeaderValue;

use super::reader::{Reader, Table};
use super::secrets::secret_fields;
use crate::rules::{Host, Target};

/// How modgate logs in to the parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scheme {
    /// User and password in every request (`Proxy-Authorization: Basic`).
    Basic,
    /// NTLMv2, once per connection.
    Ntlm,
    /// SPNEGO (Kerberos), once per connection.
    Negotiate,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Basic => "Basic",
            Scheme::Ntlm => "NTLM",
            Scheme::Negotiate => "Negotiate",
        }
    }

    /// The scheme a `Proxy-Authenticate` challenge names (any case).
    pub fn of(name: &str) -> Option<Scheme> {
        Scheme::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    pub const ALL: [Scheme; 3] = [Scheme::Basic, Scheme::Ntlm, Scheme::Negotiate];

    /// A login that holds for the connection it ran on (not per request).
    pub fn per_connection(self) -> bool {
        self != Scheme::Basic
    }
}

/// A user and password for the parent. Never shown: Debug hides the
/// password, and logs name the user only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// As given: `user`, `DOMAIN\user` or `user@domain`.
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, ***)", self.user)
    }
}

impl Credentials {
    /// `(domain, user)` for NTLM: `DOMAIN\user`, `user@domain`, or a user
    /// with no domain.
    pub fn domain_and_user(&self) -> (&str, &str) {
        if let Some((domain, user)) = self.user.split_once('\\') {
            (domain, user)
        } else if let Some((user, domain)) = self.user.rsplit_once('@') {
            (domain, user)
        } else {
            ("", &self.user)
        }
    }

    /// The `Proxy-Authorization` value of a Basic login.
    pub fn basic(&self) -> Option<HeaderValue> {
        let pair = format!("{}:{}", self.user, self.password);
        let token = base64::engine::general_purpose::STANDARD.encode(pair);
        HeaderValue::from_str(&format!("Basic {token}")).ok()
    }
}

/// How modgate logs in to every parent (those a PAC file names too).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Login {
    /// A user and password, for Basic and NTLM.
    pub credentials: Option<Credentials>,
    /// `upstream.auth`; `None`: what the parent offers, strongest first.
    pub auth: Option<Scheme>,
    /// `upstream.keytab`: modgate's own Kerberos identity, for Negotiate.
    /// With `auth = "negotiate"` and none, the tickets of the user running
    /// modgate are used.
    pub keytab: Option<PathBuf>,
}

impl Login {
    /// Whether modgate has what `scheme` needs.
    pub fn can(&self, scheme: Scheme) -> bool {
        match scheme {
            Scheme::Basic | Scheme::Ntlm => self.credentials.is_some(),
            Scheme::Negotiate => self.keytab.is_some() || self.auth == Some(Scheme::Negotiate),
        }
    }

    /// Whether modgate logs in at all.
    pub fn any(&self) -> bool {
        Scheme::ALL.into_iter().any(|s| self.can(s))
    }

    /// Who modgate logs in as with `scheme`, for messages (never a secret).
    pub fn who(&self, scheme: Option<Scheme>) -> String {
        match (scheme, &self.credentials, &self.keytab) {
            (Some(Scheme::Negotiate), _, Some(keytab)) => {
                format!("the Kerberos principal in {}", keytab.display())
            }
            (Some(Scheme::Negotiate), _, None) => {
                "the Kerberos tickets of the user running modgate".into()
            }
            (_, Some(c), _) => c.user.clone(),
            (_, None, Some(keytab)) => format!("the Kerberos principal in {}", keytab.display()),
            (_, None, None) => "(no user)".into(),
        }
    }
}

/// `upstream.proxy`: a parent proxy and how to log in to it.
#[derive(Clone, Debug)]
pub struct ParentProxy {
    /// `https://`: TLS to the parent, then CONNECT or the forwarded
    /// request inside it.
    pub tls: bool,
    pub host: Host,
    pub port: u16,
    pub login: Login,
}

impl ParentProxy {
    pub fn target(&self) -> Target {
        Target {
            host: self.host.clone(),
            port: self.port,
        }
    }

    /// Who modgate logs in as with `scheme`, for messages: `DOMAIN\user`
    /// or the Kerberos identity (never the password).
    pub fn login_name(&self, scheme: Option<Scheme>) -> String {
        self.login.who(scheme)
    }
}

impl fmt::Display for ParentProxy {
    /// Shown without the password: the address and how modgate logs in.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)?;
        let login = &self.login;
        match login.auth {
            _ if !login.any() => f.write_str(" (no login)"),
            Some(scheme) => write!(
                f,
                " ({} login as {})",
                scheme.name(),
                login.who(Some(scheme))
            ),
            None => write!(f, " (login as {}, by what it offers)", login.who(None)),
        }
    }
}

/// `http://` or `https://`, then `[user:pass@]host[:port]`, the user and
/// password %-decoded.
pub fn parse_url(url: &str) -> Result<ParentProxy, String> {
    let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return Err("a parent proxy URL starts with http:// or https://".into()),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err("a parent proxy URL has no path".into());
    }
    let (userinfo, authority) = match rest.rsplit_once('@') {
        Some((u, a)) => (Some(u), a),
        None => (None, rest),
    };
    let target = Target::parse(authority, Some(3128)).map_err(|e| format!("{authority:?}: {e}"))?;
    let credentials = userinfo
        .map(|u| {
            let decoded = crate::percent::decode(u).ok_or("bad %-escape in user:pass")?;
            let text = String::from_utf8(decoded).map_err(|_| "user:pass is not UTF-8")?;
            let (user, password) = text.split_once(':').unwrap_or((&text, ""));
            Ok::<_, &str>(Credentials {
                user: user.to_string(),
                password: password.to_string(),
            })
        })
        .transpose()?;
    Ok(ParentProxy {
        tls,
        host: target.host,
        port: target.port,
        login: Login {
            credentials,
            ..Login::default()
        },
    })
}

/// `upstream.auth`, `upstream.keytab` and the credentials beside the
/// URLs', applied to every parent (and returned, for parents a PAC file
/// names). Several parents share one login: from the file or the
/// environment, or the same user:pass in each URL.
pub fn login<'i>(r: &mut Reader<'i>, t: &mut Table<'i>, parents: &mut [ParentProxy]) -> Login {
    let auth = r.string(t, "auth").and_then(|s| {
        let scheme = Scheme::of(s.get_ref());
        if scheme.is_none() {
            let msg = format!(
                "upstream.auth must be \"basic\", \"ntlm\" or \"negotiate\", not {:?}",
                s.get_ref()
            );
            r.error(s.span(), msg);
        }
        scheme
    });
    let place = t.place_of("credentials_file");
    let proxy_place = t.place_of("proxy");
    let file = super::load::absolute_path(r, t, "upstream.credentials_file");
    let keytab = keytab(r, t);
    let in_urls = parents.first().and_then(|p| p.login.credentials.clone());
    if parents.iter().any(|p| p.login.credentials != in_urls) {
        let why = "upstream.proxy: every parent logs in as one user; give it in upstream.credentials_file, or the same user:pass in each URL";
        r.error(proxy_place, why);
    }
    let given = match (&file, in_urls.is_some()) {
        (Some(_), true) => {
            Err("upstream.credentials_file and a user:pass in upstream.proxy: give one".to_string())
        }
        (Some(path), false) => from_file(path).map(Some),
        (None, true) => Ok(in_urls),
        (None, false) => Ok(from_env()),
    };
    let credentials = given.unwrap_or_else(|why| {
        r.error(place, why);
        None
    });
    let login = Login {
        credentials,
        auth,
        keytab,
    };
    for parent in parents {
        parent.login.clone_from(&login);
    }
    login
}

/// `upstream.keytab`: a file only its owner may read, in the keytab
/// format (its version bytes are checked here; its keys when the parent
/// first asks).
fn keytab<'i>(r: &mut Reader<'i>, t: &mut Table<'i>) -> Option<PathBuf> {
    let place = t.place_of("keytab");
    let path = super::load::absolute_path(r, t, "upstream.keytab")?;
    if let Err(why) = check_keytab(&path) {
        r.error(place, why);
    }
    Some(path)
}

fn check_keytab(path: &Path) -> Result<(), String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("upstream.keytab {shown}: {e}"))?;
    let mode = file
        .metadata()
        .map_err(|e| e.to_string())?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "upstream.keytab {shown} is readable by group or others (mode {mode:04o}): chmod 600 {shown}"
        ));
    }
    let mut version = [0u8; 2];
    match file.read_exact(&mut version) {
        Ok(()) if version == [5, 1] || version == [5, 2] => Ok(()),
        _ => Err(format!(
            "upstream.keytab {shown} is not a Kerberos keytab (make one with kadmin's ktadd or ktutil)"
        )),
    }
}

/// `user` and `password` from a TOML file only its owner may read.
fn from_file(path: &Path) -> Result<Credentials, String> {
    let [user, password] = secret_fields(path, "upstream.credentials_file", ["user", "password"])?;
    Ok(Credentials { user, password })
}

/// `MODGATE_PARENT_USER` and `MODGATE_PARENT_PASSWORD`, when both are set.
fn from_env() -> Option<Credentials> {
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    Some(Credentials {
        user: get("MODGATE_PARENT_USER")?,
        password: get("MODGATE_PARENT_PASSWORD")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_name_their_domain_either_way() {
        let c = |user: &str| Credentials {
            user: user.into(),
            password: "p".into(),
        };
        assert_eq!(c("CORP\\alice").domain_and_user(), ("CORP", "alice"));
        assert_eq!(
            c("alice@corp.example").domain_and_user(),
            ("corp.example", "alice")
        );
        assert_eq!(c("alice").domain_and_user(), ("", "alice"));
        assert!(!format!("{:?}", c("alice")).contains('p'));
    }

    #[test]
    fn schemes_by_name() {
        assert_eq!(Scheme::of("ntlm"), Some(Scheme::Ntlm));
        assert_eq!(Scheme::of("Negotiate"), Some(Scheme::Negotiate));
        assert_eq!(Scheme::of("Digest"), None);
        assert!(Scheme::Negotiate > Scheme::Ntlm && Scheme::Ntlm > Scheme::Basic);
    }
}
