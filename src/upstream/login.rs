//! Logging in to the parent proxy on the connection that then carries the
//! CONNECT or the forwarded requests. Basic goes in every request; NTLM
//! (and Negotiate) hold for the connection they ran on: a 407 exchange
//! (negotiate, challenge, answer) on that very connection, after which it
//! is pooled as logged in. With `upstream.auth` unset, the parent's first
//! 407 says what it offers and the strongest scheme modgate can use is
//! taken (and remembered). A 407 after a complete login means the parent
//! refused the credentials: said once, never retried in a loop.

use std::sync::atomic::{AtomicU8, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::dial::Failure;
use crate::config::{ParentProxy, Scheme};

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

/// The scheme to log in with: `wanted` when set (offered or not: the
/// parent then refuses, which says more than silence), else the strongest
/// offered that modgate speaks.
pub fn choose(offered: &[Challenge], wanted: Option<Scheme>) -> Option<Scheme> {
    wanted.or_else(|| offered.iter().filter_map(Challenge::scheme).max())
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

/// Sends `head(authorization)` on `stream`, logging in as the parent
/// asks; the answer that ends it. `tunnel`: a CONNECT, whose 2xx answer
/// is followed by the far end's bytes (any other answer's body is read
/// past, so the connection can carry the next request).
pub async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    parent: &ParentProxy,
    learned: &Learned,
    head: &(dyn Fn(Option<&str>) -> Vec<u8> + Sync),
    tunnel: bool,
) -> Result<Reply, Failure> {
    let mut buf = BytesMut::with_capacity(1024);
    let scheme = parent.auth.or(learned.get());
    let reply = exchange(stream, &mut buf, parent, scheme, head, tunnel).await?;
    if reply.status != 407 || scheme.is_some() || parent.credentials.is_none() {
        return Ok(reply);
    }
    let Some(chosen) = choose(&reply.challenges, None) else {
        let offered: Vec<&str> = reply.challenges.iter().map(|c| c.name.as_str()).collect();
        return Err(Failure::ParentLogin(format!(
            "asks for a login modgate does not speak ({})",
            offered.join(", ")
        )));
    };
    learned.set(chosen);
    exchange(stream, &mut buf, parent, Some(chosen), head, tunnel).await
}

/// One login with `scheme` (none: no credentials sent).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    parent: &ParentProxy,
    scheme: Option<Scheme>,
    head: &(dyn Fn(Option<&str>) -> Vec<u8> + Sync),
    tunnel: bool,
) -> Result<Reply, Failure> {
    let credentials = parent.credentials.as_ref();
    let first = match (scheme, credentials) {
        (None, _) | (_, None) => None,
        (Some(Scheme::Basic), Some(c)) => c.basic().and_then(|v| v.to_str().ok().map(String::from)),
        (Some(Scheme::Ntlm), Some(_)) => {
            Some(super::ntlm::negotiate().map_err(Failure::ParentLogin)?)
        }
        (Some(Scheme::Negotiate), Some(_)) => {
            return Err(Failure::ParentLogin(
                "Negotiate (Kerberos) logins are not built yet: set upstream.auth = \"ntlm\" or \"basic\"".into(),
            ));
        }
    };
    let reply = round(stream, buf, head(first.as_deref()), tunnel).await?;
    let (Some(scheme), Some(credentials), 407) = (scheme, credentials, reply.status) else {
        return Ok(reply);
    };
    let refused = || Failure::CredentialsRefused {
        user: parent.login_name(),
        scheme: scheme.name(),
    };
    if scheme != Scheme::Ntlm {
        return Err(refused());
    }
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
    fn the_strongest_offered_scheme_unless_one_is_set() {
        let offered = challenges(["Basic realm=\"x\"", "NTLM", "Digest realm=\"y\""]);
        assert_eq!(choose(&offered, None), Some(Scheme::Ntlm));
        assert_eq!(choose(&offered, Some(Scheme::Basic)), Some(Scheme::Basic));
        assert_eq!(choose(&challenges(["Digest realm=\"y\""]), None), None);
        let all = challenges(["Negotiate", "NTLM", "Basic realm=\"x\""]);
        assert_eq!(choose(&all, None), Some(Scheme::Negotiate));
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
