//! Logging in to the parent proxy on the connection that then carries the
//! CONNECT or the forwarded requests. Basic goes in every request; NTLM
//! (and Negotiate) hold for the connection they ran on: a 407 exchange
//! (negotiate, challenge, answer) on that very connection, after which it
//! is pooled as logged in. With `upstream.auth` unset, the parent's first
//! 407 says what it offers and the strongest scheme modgate can use is
//! taken (and remembered). A 407 after a complete login means the parent
//! refused the credentials: said once, never retried in a loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::dial::Failure;
use super::kerberos::Identity;
use crate::config::{Login, ParentProxy, Scheme};

/// Largest answer head accepted from the parent.
const MAX_HEAD: usize = 16 * 1024;
/// Largest 407 (or login) answer body read past.
const MAX_BODY: u64 = 1 << 20;

/// One challenge of a `Proxy-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// As the parent spelled it.
    pub name: String,
    /// The token68 after the name (NTLM's and Negotiate's data), if any.
    pub token: Option<String>,
}

impl Challenge {
    pub fn scheme(&self) -> Option<Scheme> {
        Scheme::of(&self.name)
    }
}

/// The challenges in `Proxy-Authenticate` values: each value may list
/// several (`Basic realm="x", NTLM`); a part that starts with a word and
/// has no `=` before its first space starts a challenge, the rest are the
/// previous one's parameters.
pub fn challenges<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    let mut found = Vec::new();
    for value in values {
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (word, rest) = part.split_once(' ').unwrap_or((part, ""));
            if word.contains('=') {
                continue; // a parameter of the challenge before
            }
            let rest = rest.trim();
            let token = is_token68(rest).then(|| rest.to_string());
            found.push(Challenge {
                name: word.to_string(),
                token,
            });
        }
    }
    found
}

/// RFC 9110's token68 (base64 and the like, `=` only as padding at the end).
fn is_token68(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// The scheme to log in with: `upstream.auth` when set (offered or not:
/// the parent then refuses, which says more than silence), else the
/// strongest offered that modgate speaks and has credentials for.
pub fn choose(offered: &[Challenge], login: &Login) -> Option<Scheme> {
    login.auth.or_else(|| {
        (offered.iter().filter_map(Challenge::scheme))
            .filter(|s| login.can(*s))
            .max()
    })
}

/// The parent's answer to one request of a login.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub challenges: Vec<Challenge>,
    /// Bytes after the answer (a tunnel's first bytes from the far end).
    pub leftover: Bytes,
}

/// The scheme learned from the parent's offer, while `upstream.auth` is unset.
#[derive(Debug, Default)]
pub struct Learned(AtomicU8);

impl Learned {
    pub fn get(&self) -> Option<Scheme> {
        match self.0.load(Ordering::Relaxed) {
            1 => Some(Scheme::Basic),
            2 => Some(Scheme::Ntlm),
            3 => Some(Scheme::Negotiate),
            _ => None,
        }
    }

    pub fn set(&self, scheme: Scheme) {
        let n = match scheme {
            Scheme::Basic => 1,
            Scheme::Ntlm => 2,
            Scheme::Negotiate => 3,
        };
        self.0.store(n, Ordering::Relaxed);
    }
}

/// What a login needs beside the parent: the scheme learned from its
/// offer, and modgate's Kerberos identity.
pub struct Context<'a> {
    pub learned: &'a Learned,
    pub kerberos: &'a Result<Arc<Identity>, String>,
}

/// Sends `head(authorization)` on `stream`, logging in as the parent
/// asks; the answer that ends it. `tunnel`: a CONNECT, whose 2xx answer
/// is followed by the far end's bytes (any other answer's body is read
/// past, so the connection can carry the next request).
pub async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    parent: &ParentProxy,
    context: Context<'_>,
    head: &(dyn Fn(Option<&str>) -> Vec<u8> + Sync),
    tunnel: bool,
) -> Result<Reply, Failure> {
    let mut buf = BytesMut::with_capacity(1024);
    let scheme = parent.login.auth.or(context.learned.get());
    let reply = exchange(stream, &mut buf, parent, &context, scheme, head, tunnel).await?;
    if reply.status != 407 || scheme.is_some() || !parent.login.any() {
        return Ok(reply);
    }
    let Some(chosen) = choose(&reply.challenges, &parent.login) else {
        let offered: Vec<&str> = reply.challenges.iter().map(|c| c.name.as_str()).collect();
        return Err(Failure::ParentLogin(format!(
            "asks for a login modgate does not speak or has no credentials for ({})",
            offered.join(", ")
        )));
    };
    context.learned.set(chosen);
    exchange(
        stream,
        &mut buf,
        parent,
        &context,
        Some(chosen),
        head,
        tunnel,
    )
    .await
}

/// The `Proxy-Authorization` that opens a login with `scheme` (none: no
/// login, or nothing to log in with).
async fn opening(
    parent: &ParentProxy,
    context: &Context<'_>,
    scheme: Option<Scheme>,
) -> Result<Option<String>, Failure> {
    let Some(scheme) = scheme.filter(|s| parent.login.can(*s)) else {
        return Ok(None);
    };
    match (scheme, &parent.login.credentials) {
        (Scheme::Basic, Some(c)) => Ok(c.basic().and_then(|v| v.to_str().ok().map(String::from))),
        (Scheme::Ntlm, Some(_)) => super::ntlm::negotiate()
            .map(Some)
            .map_err(Failure::ParentLogin),
        (Scheme::Negotiate, _) => {
            let kerberos = context.kerberos.clone().map_err(kerberos_failed)?;
            let host = parent.host.to_string();
            let made = tokio::task::spawn_blocking(move || kerberos.authorization(&host)).await;
            let made = made.map_err(|e| kerberos_failed(e.to_string()))?;
            made.map(Some).map_err(kerberos_failed)
        }
        (Scheme::Basic | Scheme::Ntlm, None) => Ok(None),
    }
}

fn kerberos_failed(why: String) -> Failure {
    Failure::ParentLogin(format!("Kerberos (Negotiate): {why}"))
}

/// One login with `scheme` (none: no credentials sent).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    parent: &ParentProxy,
    context: &Context<'_>,
    scheme: Option<Scheme>,
    head: &(dyn Fn(Option<&str>) -> Vec<u8> + Sync),
    tunnel: bool,
) -> Result<Reply, Failure> {
    let first = opening(parent, context, scheme).await?;
    let reply = round(stream, buf, head(first.as_deref()), tunnel).await?;
    let (Some(scheme), Some(_), 407) = (scheme, &first, reply.status) else {
        return Ok(reply);
    };
    let refused = || Failure::CredentialsRefused {
        user: parent.login_name(Some(scheme)),
        scheme: scheme.name(),
    };
    let Some(credentials) = parent
        .login
        .credentials
        .as_ref()
        .filter(|_| scheme == Scheme::Ntlm)
    else {
        return Err(refused());
    };
    let token = reply
        .challenges
        .iter()
        .find(|c| c.scheme() == Some(Scheme::Ntlm))
        .and_then(|c| c.token.clone())
        .ok_or_else(refused)?;
    let answer = super::ntlm::authenticate(&token, credentials).map_err(Failure::ParentLogin)?;
    let reply = round(stream, buf, head(Some(&answer)), tunnel).await?;
    if reply.status == 407 {
        return Err(refused());
    }
    Ok(reply)
}

/// Writes `request` and reads the answer head (and past its body, unless
/// it opens a tunnel).
async fn round<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    request: Vec<u8>,
    tunnel: bool,
) -> Result<Reply, Failure> {
    stream.write_all(&request).await.map_err(protocol)?;
    let (status, challenges, body) = loop {
        if let Some(parsed) = parse_head(buf)? {
            break parsed;
        }
        if stream.read_buf(buf).await.map_err(protocol)? == 0 {
            return Err(Failure::ParentProtocol("closed before answering".into()));
        }
    };
    if tunnel && (200..300).contains(&status) {
        return Ok(Reply {
            status,
            challenges,
            leftover: buf.split().freeze(),
        });
    }
    let mut left = body.ok_or_else(|| {
        Failure::ParentProtocol(format!(
            "answered {status} with no length: cannot go on on this connection"
        ))
    })?;
    if left > MAX_BODY {
        return Err(Failure::ParentProtocol(format!(
            "answered {status} with a {left}-byte body"
        )));
    }
    while left > 0 {
        if buf.is_empty() && stream.read_buf(buf).await.map_err(protocol)? == 0 {
            return Err(Failure::ParentProtocol(
                "closed in the middle of an answer".into(),
            ));
        }
        let n = (buf.len() as u64).min(left) as usize;
        buf.advance(n);
        left -= n as u64;
    }
    Ok(Reply {
        status,
        challenges,
        leftover: Bytes::new(),
    })
}

/// The answer head at the start of `buf` (taken out of it): its status,
/// challenges, and body length (`None`: unknown).
#[allow(clippy::type_complexity)]
fn parse_head(buf: &mut BytesMut) -> Result<Option<(u16, Vec<Challenge>, Option<u64>)>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => {
            return Err(Failure::ParentProtocol("answer head too large".into()));
        }
        Err(err) => return Err(Failure::ParentProtocol(format!("bad answer: {err}"))),
    };
    let status = response.code.unwrap_or(0);
    let named = |name: &'static str| {
        response
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
    };
    let found = challenges(named("proxy-authenticate"));
    let length = match status {
        100..=199 | 204 | 304 => Some(0),
        _ => named("content-length")
            .next()
            .and_then(|v| v.trim().parse().ok()),
    };
    let chunked = named("transfer-encoding").any(|v| v.to_ascii_lowercase().contains("chunked"));
    buf.advance(len);
    Ok(Some((status, found, if chunked { None } else { length })))
}

fn protocol(err: std::io::Error) -> Failure {
    Failure::ParentProtocol(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(found: &[Challenge]) -> Vec<(&str, Option<&str>)> {
        found
            .iter()
            .map(|c| (c.name.as_str(), c.token.as_deref()))
            .collect()
    }

    #[test]
    fn challenges_of_one_or_several_headers() {
        let found = challenges(["NTLM", "Negotiate", "Basic realm=\"Corp proxy\""]);
        assert_eq!(
            names(&found),
            [("NTLM", None), ("Negotiate", None), ("Basic", None)]
        );
        let found = challenges(["Basic realm=\"a, b\", charset=\"UTF-8\", NTLM"]);
        assert_eq!(names(&found)[0], ("Basic", None));
        assert_eq!(names(&found).last(), Some(&("NTLM", None)));
        let found = challenges(["NTLM TlRMTVNTUAACAAAA=="]);
        assert_eq!(names(&found), [("NTLM", Some("TlRMTVNTUAACAAAA=="))]);
        assert!(challenges([""]).is_empty());
    }

    #[test]
    fn the_strongest_offered_scheme_modgate_can_use_unless_one_is_set() {
        let password = Login {
            credentials: Some(crate::config::Credentials {
                user: "CORP\\alice".into(),
                password: "pw".into(),
            }),
            ..Login::default()
        };
        let offered = challenges(["Basic realm=\"x\"", "NTLM", "Digest realm=\"y\""]);
        assert_eq!(choose(&offered, &password), Some(Scheme::Ntlm));
        let basic = Login {
            auth: Some(Scheme::Basic),
            ..password.clone()
        };
        assert_eq!(choose(&offered, &basic), Some(Scheme::Basic));
        assert_eq!(choose(&challenges(["Digest realm=\"y\""]), &password), None);
        let all = challenges(["Negotiate", "NTLM", "Basic realm=\"x\""]);
        // Negotiate needs a keytab (or auth = "negotiate" for the user's tickets).
        assert_eq!(choose(&all, &password), Some(Scheme::Ntlm));
        let keytab = Login {
            keytab: Some("/etc/modgate/modgate.keytab".into()),
            ..password.clone()
        };
        assert_eq!(choose(&all, &keytab), Some(Scheme::Negotiate));
        let only_keytab = Login {
            credentials: None,
            ..keytab
        };
        assert_eq!(choose(&offered, &only_keytab), None);
    }

    #[test]
    fn a_head_gives_status_challenges_and_length() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: NTLM abc=\r\nContent-Length: 5\r\n\r\nhellorest"[..],
        );
        let (status, found, length) = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!((status, length), (407, Some(5)));
        assert_eq!(names(&found), [("NTLM", Some("abc="))]);
        assert_eq!(&buf[..], b"hellorest");
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
        assert!(parse_head(&mut partial).unwrap().is_none());
    }
}
