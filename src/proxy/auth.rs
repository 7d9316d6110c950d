//! Basic proxy authentication from `proxy.auth_file`. Lines are
//! `user:sha256:<hex of SHA-256(password)>`; `#` starts a comment. Digests are
//! compared in constant time and credentials are never logged.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

pub use crate::access::User;

use base64::Engine;
use http::HeaderValue;
use subtle::ConstantTimeEq;

type Digest = [u8; 32];

pub struct Auth {
    users: HashMap<String, Digest>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected user:sha256:<64 hex digits>")]
    Syntax { path: String, line: usize },
}

impl Auth {
    pub fn load(path: &Path) -> Result<Auth, AuthFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&shown, &text)
    }

    pub fn parse(path: &str, text: &str) -> Result<Auth, AuthFileError> {
        let mut users = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = line
                .split_once(":sha256:")
                .and_then(|(user, hex)| Some((user.to_string(), parse_hex(hex)?)));
            let (user, digest) = parsed.ok_or_else(|| AuthFileError::Syntax {
                path: path.to_string(),
                line: index + 1,
            })?;
            users.insert(user, digest);
        }
        Ok(Auth { users })
    }

    /// The user, when `header` is `Basic` credentials of a listed user.
    pub fn user(&self, header: Option<&HeaderValue>) -> Option<User> {
        let (user, password) = header.and_then(decode_basic)?;
        let offered = sha256(password.as_bytes());
        // Compare against a dummy digest for unknown users so timing does not tell.
        let expected = self.users.get(&user).copied().unwrap_or([0xff; 32]);
        (bool::from(offered.ct_eq(&expected)) && self.users.contains_key(&user))
            .then(|| User(Arc::from(user)))
    }
}

/// SHA-256 of a password, as written in the auth file.
pub fn sha256(data: &[u8]) -> Digest {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn decode_basic(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn parse_hex(hex: &str) -> Option<Digest> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: Digest) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn checks_credentials() {
        let file = format!("# users\nalice:sha256:{}\n", hex(sha256(b"s3cret")));
        let auth = Auth::parse("users", &file).unwrap();
        let header = |creds: &str| {
            let token = base64::engine::general_purpose::STANDARD.encode(creds);
            HeaderValue::from_str(&format!("Basic {token}")).unwrap()
        };
        let user = auth.user(Some(&header("alice:s3cret"))).unwrap();
        assert_eq!(&*user.0, "alice");
        assert!(auth.user(Some(&header("alice:wrong"))).is_none());
        assert!(auth.user(Some(&header("bob:s3cret"))).is_none());
        assert!(
            auth.user(Some(&HeaderValue::from_static("Bearer x")))
                .is_none()
        );
        assert!(auth.user(None).is_none());
    }

    #[test]
    fn reports_bad_lines() {
        let err = Auth::parse("users", "ok:sha256:00\n").err().unwrap();
        assert_eq!(
            err.to_string(),
            "users:1: expected user:sha256:<64 hex digits>"
        );
    }
}
