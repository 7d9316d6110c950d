//! modgate's local CA: ECDSA P-256, generated per install, with X.509 name
//! constraints permitting only the intercepted host names and excluding
//! every IP address, so a leaked key cannot impersonate any other site. Leaves are minted for permitted names
//! only. Key hygiene: the directory is created 0700, files are created anew
//! (never through a symlink planted at their path), the key is 0600, and a
//! key readable by group or others is refused at load.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

pub const CERT_FILE: &str = "modgate-ca.pem";
pub const KEY_FILE: &str = "modgate-ca.key";
/// Held while a CA is made, so that two commands make one between them.
pub const LOCK_FILE: &str = ".modgate-ca.lock";

/// How long a minted leaf certificate is valid.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already exists; use --force to replace it")]
    Exists(PathBuf),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: not a usable CA: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{0} is outside the CA's name constraints; no certificate is issued for it")]
    NotPermitted(String),
    #[error(
        "no intercepted host names (gomod.proxy_hosts and gomod.sumdb_hosts are empty): a CA constrained to nothing would be unconstrained; nothing was written"
    )]
    NoHosts,
    #[error(
        "{path} is readable by group or others (mode {mode:04o}); a CA key must be private: chmod 600 {path}"
    )]
    KeyExposed { path: PathBuf, mode: u32 },
}

/// A loaded CA, able to mint leaves.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    /// DNS names the CA's name constraints permit (and their subdomains).
    permitted: Vec<String>,
    pub cert_path: PathBuf,
}

/// Creates a CA in `dir` permitting exactly `hosts`.
pub fn init(dir: &Path, hosts: &[String], force: bool) -> Result<PathBuf, CaError> {
    if hosts.is_empty() {
        return Err(CaError::NoHosts);
    }
    let _lock = lock(dir)?;
    init_locked(dir, hosts, force)
}

/// `init` while holding `dir`'s lock. The key is written first and the
/// certificate last, each whole under a temporary name and renamed into
/// place: once both names exist, the CA is complete.
fn init_locked(dir: &Path, hosts: &[String], force: bool) -> Result<PathBuf, CaError> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    if !force {
        for path in [&cert_path, &key_path] {
            if path.symlink_metadata().is_ok() {
                return Err(CaError::Exists(path.clone()));
            }
        }
    }
    let key = KeyPair::generate()?;
    let cert = ca_params(hosts).self_signed(&key)?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(cert_path)
}

/// True when `dir` holds a CA's certificate and key.
pub fn exists(dir: &Path) -> bool {
    dir.join(CERT_FILE).exists() && dir.join(KEY_FILE).exists()
}

/// Creates `dir` (0700) and holds its lock file until dropped, so that two
/// modgate commands starting together (`modgate run &` then `modgate env`)
/// make one CA between them, never two that overwrite each other.
fn lock(dir: &Path) -> Result<fs::File, CaError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| io_error(dir, source))?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|source| io_error(&path, source))?;
    file.lock().map_err(|source| io_error(&path, source))?;
    Ok(file)
}

fn ca_params(hosts: &[String]) -> CertificateParams {
    let mut params = CertificateParams::default();
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "this host".into());
    params
        .distinguished_name
        .push(DnType::CommonName, format!("modgate local CA ({host})"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "modgate");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: hosts
            .iter()
            .map(|h| GeneralSubtree::DnsName(h.clone()))
            .collect(),
        // DNS constraints alone leave IP addresses unconstrained (RFC 5280
        // 4.2.1.10): exclude every address, so a leaked key cannot mint
        // for one either.
        excluded_subtrees: vec![
            GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])),
            GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])),
        ],
    });
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(3650);
    params
}

/// Writes a new file with `mode`: whole under a temporary name (created
/// exclusively, which never follows a symlink), then renamed over `path`
/// (which replaces a symlink planted there rather than following it).
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".new");
    let temp = PathBuf::from(temp);
    let _ = fs::remove_file(&temp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .map_err(|source| io_error(&temp, source))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&temp, path))
        .map_err(|source| io_error(path, source))
}

/// Refuses a CA directory anyone may write: whoever can replace the files
/// there can make modgate mint with their CA.
fn check_dir(dir: &Path) -> Result<(), CaError> {
    let mode = fs::metadata(dir)
        .map_err(|source| io_error(dir, source))?
        .permissions()
        .mode();
    if mode & 0o002 != 0 {
        return Err(CaError::Invalid {
            path: dir.to_path_buf(),
            reason: format!(
                "the directory is writable by anyone (mode {:04o}): chmod 700 {}",
                mode & 0o7777,
                dir.display()
            ),
        });
    }
    Ok(())
}

/// Refuses a key file that group or others may read or write.
fn check_private(path: &Path) -> Result<(), CaError> {
    let mode = fs::metadata(path)
        .map_err(|source| io_error(path, source))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(CaError::KeyExposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

fn io_error(path: &Path, source: std::io::Error) -> CaError {
    CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Ca {
    /// Loads the CA from `dir`.
    pub fn load(dir: &Path) -> Result<Ca, CaError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        check_dir(dir)?;
        check_private(&key_path)?;
        let cert_pem = fs::read_to_string(&cert_path).map_err(|s| io_error(&cert_path, s))?;
        let key_pem = fs::read_to_string(&key_path).map_err(|s| io_error(&key_path, s))?;
        let invalid = |reason: String| CaError::Invalid {
            path: cert_path.clone(),
            reason,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| invalid(format!("key: {e}")))?;
        let cert_der = pem_to_der(&cert_pem).ok_or_else(|| invalid("no PEM certificate".into()))?;
        let permitted = super::inspect::permitted_names(&cert_der).map_err(invalid)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| invalid(format!("certificate: {e}")))?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(invalid(format!(
                "the key in {} is not this certificate's key (a CA from another install?): leaves it signed would not verify",
                key_path.display()
            )));
        }
        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| invalid(e.to_string()))?;
        Ok(Ca {
            issuer,
            cert_der,
            permitted,
            cert_path,
        })
    }

    /// Loads the CA, creating it first when `dir` has none. Returns whether it was created.
    pub fn load_or_init(dir: &Path, hosts: &[String]) -> Result<(Ca, bool), CaError> {
        if exists(dir) {
            return Ok((Ca::load(dir)?, false));
        }
        // Missing, or being made by another command right now: wait for it.
        let _lock = lock(dir)?;
        let created = !dir.join(CERT_FILE).exists() && !dir.join(KEY_FILE).exists();
        if created {
            if hosts.is_empty() {
                return Err(CaError::NoHosts);
            }
            init_locked(dir, hosts, false)?;
        }
        Ok((Ca::load(dir)?, created))
    }

    /// False for a CA made before modgate excluded IP addresses in its
    /// name constraints: its key could still sign for any address.
    pub fn excludes_addresses(&self) -> bool {
        super::inspect::excludes_every_address(&self.cert_der)
    }

    /// The host names its constraints permit (and their subdomains).
    pub fn permitted(&self) -> &[String] {
        &self.permitted
    }

    /// The CA certificate.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Path, SHA-256 fingerprint and expiry, for logs.
    pub fn summary(&self) -> String {
        let expires = self
            .expires()
            .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
            .map_or("unknown".into(), |t| t.date().to_string());
        format!(
            "{} (sha256 {}, expires {expires})",
            self.cert_path.display(),
            super::inspect::fingerprint(&self.cert_der)
        )
    }

    /// When the CA certificate expires (Unix time).
    pub fn expires(&self) -> Option<i64> {
        let (_, cert) = x509_parser::parse_x509_certificate(&self.cert_der).ok()?;
        Some(cert.validity().not_after.timestamp())
    }

    /// True when the name constraints permit `host`.
    pub fn permits(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.permitted.iter().any(|p| {
            host == *p
                || (host.len() > p.len()
                    && host.ends_with(p.as_str())
                    && host.as_bytes()[host.len() - p.len() - 1] == b'.')
        })
    }

    /// The hosts among `hosts` the CA cannot issue for.
    pub fn uncovered<'a>(&self, hosts: &'a [String]) -> Vec<&'a str> {
        hosts
            .iter()
            .filter(|h| !self.permits(h))
            .map(String::as_str)
            .collect()
    }

    /// Mints a leaf for `host` (own key, short validity, chain includes the CA).
    pub fn mint(&self, host: &str) -> Result<Arc<CertifiedKey>, CaError> {
        if !self.permits(host) {
            return Err(CaError::NotPermitted(host.to_string()));
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![host.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + LEAF_VALIDITY;
        let leaf = params.signed_by(&key, &self.issuer)?;
        let key_der =
            PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| CaError::Invalid {
                path: self.cert_path.clone(),
                reason: e.to_string(),
            })?;
        let signing_key =
            rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&key_der).map_err(|e| {
                CaError::Invalid {
                    path: self.cert_path.clone(),
                    reason: e.to_string(),
                }
            })?;
        let chain = vec![leaf.der().clone(), self.cert_der.clone()];
        Ok(Arc::new(CertifiedKey::new(chain, signing_key)))
    }
}

fn pem_to_der(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        vec!["proxy.golang.org".into(), "sum.golang.org".into()]
    }

    #[test]
    fn a_mismatched_key_or_an_open_directory_is_refused() {
        let work = tempfile::tempdir().unwrap();
        let (one, two) = (work.path().join("one"), work.path().join("two"));
        init(&one, &hosts(), false).unwrap();
        init(&two, &hosts(), false).unwrap();
        std::fs::copy(two.join(KEY_FILE), one.join(KEY_FILE)).unwrap();
        let refused = Ca::load(&one).err().expect("a foreign key is refused");
        assert!(
            refused.to_string().contains("not this certificate's key"),
            "{refused}"
        );
        std::fs::set_permissions(&two, fs::Permissions::from_mode(0o777)).unwrap();
        let refused = Ca::load(&two).err().expect("an open directory is refused");
        assert!(
            refused.to_string().contains("writable by anyone"),
            "{refused}"
        );
    }

    /// `modgate run &` and `modgate env` starting together: every command
    /// ends up with the one CA on disk, and exactly one of them made it.
    #[test]
    fn commands_starting_together_make_one_ca() {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("ca");
        let made: Vec<(Vec<u8>, bool)> = std::thread::scope(|scope| {
            let starts: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        let (ca, created) = Ca::load_or_init(&dir, &hosts()).unwrap();
                        (ca.cert_der().to_vec(), created)
                    })
                })
                .collect();
            starts.into_iter().map(|s| s.join().unwrap()).collect()
        });
        let on_disk = Ca::load(&dir).unwrap().cert_der().to_vec();
        assert!(made.iter().all(|(der, _)| *der == on_disk));
        assert_eq!(made.iter().filter(|(_, created)| *created).count(), 1);
    }

    #[test]
    fn directory_is_private_and_planted_symlinks_are_not_followed() {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("ca");
        init(&dir, &hosts(), false).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        // A symlink planted at the certificate path toward a file elsewhere.
        let victim = work.path().join("victim");
        fs::write(&victim, "keep me").unwrap();
        fs::remove_file(dir.join(CERT_FILE)).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(CERT_FILE)).unwrap();
        assert!(matches!(
            init(&dir, &hosts(), false),
            Err(CaError::Exists(_))
        ));
        init(&dir, &hosts(), true).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
        assert!(!dir.join(CERT_FILE).symlink_metadata().unwrap().is_symlink());
        Ca::load(&dir).unwrap();
    }

    #[test]
    fn an_exposed_key_is_refused_with_the_fix() {
        let work = tempfile::tempdir().unwrap();
        init(work.path(), &hosts(), false).unwrap();
        let key = work.path().join(KEY_FILE);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let Err(err) = Ca::load(work.path()) else {
            panic!("a 0644 key must be refused");
        };
        let text = err.to_string();
        assert!(text.contains("chmod 600"), "{text}");
        assert!(text.contains("0644"), "{text}");
    }

    #[test]
    fn no_hosts_writes_nothing() {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("ca");
        assert!(matches!(init(&dir, &[], false), Err(CaError::NoHosts)));
        assert!(!dir.exists());
    }
}
