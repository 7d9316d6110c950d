//! The first bytes of a TLS connection, read without terminating TLS: is it
//! a ClientHello, and which server name (SNI) and protocols (ALPN) does it
//! ask for? Pure: the transparent listener feeds it what it has read so far
//! and reads more while the answer is [`Peek::Incomplete`].
//!
//! The handshake message may span several records (and each record several
//! TCP segments); it is reassembled up to [`MAX_HELLO`] bytes.

use crate::rules::Host;

/// Largest ClientHello (handshake message) accepted: one full record.
pub const MAX_HELLO: usize = 16 * 1024;

const RECORD_HEADER: usize = 5;
const CONTENT_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;
const SNI_HOST_NAME: u8 = 0;

/// What the bytes read so far say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peek {
    /// A prefix of a plausible ClientHello: read more.
    Incomplete,
    /// A complete ClientHello.
    Hello(ClientHello),
    /// Not a TLS ClientHello (another protocol, or malformed): route by address.
    NotHello(&'static str),
}

/// The routing-relevant parts of a ClientHello.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The SNI host name, lower-case; `None` when absent.
    pub server_name: Option<String>,
    /// ALPN protocol names in the client's order.
    pub alpn: Vec<String>,
    /// The hello carries an encrypted_client_hello extension: the visible
    /// server name is only the outer (public) name.
    pub ech: bool,
}

/// Parses the start of a connection.
pub fn peek(bytes: &[u8]) -> Peek {
    match reassemble(bytes) {
        Ok(Some(message)) => match parse_hello(message) {
            Ok(hello) => Peek::Hello(hello),
            Err(Malformed(why)) => Peek::NotHello(why),
        },
        Ok(None) => Peek::Incomplete,
        Err(Malformed(why)) => Peek::NotHello(why),
    }
}

#[derive(Debug)]
struct Malformed(&'static str);

/// Joins handshake records until the whole first handshake message is
/// there; `None` while more bytes are needed.
fn reassemble(mut bytes: &[u8]) -> Result<Option<Vec<u8>>, Malformed> {
    let mut message = Vec::new();
    loop {
        let Some(header) = bytes.get(..RECORD_HEADER) else {
            check_partial_header(bytes)?;
            return Ok(None);
        };
        check_partial_header(header)?;
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if length == 0 || length > MAX_HELLO {
            return Err(Malformed("bad TLS record length"));
        }
        let Some(payload) = bytes.get(RECORD_HEADER..RECORD_HEADER + length) else {
            return Ok(None);
        };
        message.extend_from_slice(payload);
        bytes = &bytes[RECORD_HEADER + length..];
        if let Some(&[kind, a, b, c]) = message.get(..4) {
            if kind != HANDSHAKE_CLIENT_HELLO {
                return Err(Malformed("first handshake message is not a ClientHello"));
            }
            let total = 4 + (usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c));
            if total > MAX_HELLO {
                return Err(Malformed("ClientHello larger than 16 KiB"));
            }
            if message.len() >= total {
                message.truncate(total);
                return Ok(Some(message));
            }
        }
    }
}

/// The bytes of a record header seen so far must be a TLS handshake record.
fn check_partial_header(header: &[u8]) -> Result<(), Malformed> {
    if header.first().is_some_and(|&t| t != CONTENT_HANDSHAKE) {
        return Err(Malformed("not a TLS handshake"));
    }
    if header.get(1).is_some_and(|&major| major != 3) {
        return Err(Malformed("not a TLS record version"));
    }
    Ok(())
}

/// Parses a whole ClientHello handshake message (type and length included).
fn parse_hello(message: Vec<u8>) -> Result<ClientHello, Malformed> {
    let mut r = Reader(&message[4..]);
    r.skip(2 + 32, "version and random")?;
    r.vector8("session id")?;
    r.vector16("cipher suites")?;
    r.vector8("compression methods")?;
    let mut hello = ClientHello::default();
    if r.0.is_empty() {
        return Ok(hello); // no extensions at all
    }
    let mut extensions = Reader(r.vector16("extensions")?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16("extension type")?;
        let data = extensions.vector16("extension")?;
        match kind {
            EXT_SERVER_NAME => hello.server_name = server_name(data)?,
            EXT_ALPN => hello.alpn = alpn(data)?,
            EXT_ENCRYPTED_CLIENT_HELLO => hello.ech = true,
            _ => {}
        }
    }
    Ok(hello)
}

fn server_name(data: &[u8]) -> Result<Option<String>, Malformed> {
    let mut list = Reader(Reader(data).vector16("server name list")?);
    while !list.0.is_empty() {
        let kind = list.u8("server name type")?;
        let name = list.vector16("server name")?;
        if kind != SNI_HOST_NAME {
            continue;
        }
        let text = std::str::from_utf8(name).map_err(|_| Malformed("server name not ASCII"))?;
        return match Host::parse(text) {
            Ok(Host::Name(name)) => Ok(Some(name)),
            _ => Err(Malformed("server name is not a DNS name")),
        };
    }
    Ok(None)
}

fn alpn(data: &[u8]) -> Result<Vec<String>, Malformed> {
    let mut list = Reader(Reader(data).vector16("ALPN list")?);
    let mut protocols = Vec::new();
    while !list.0.is_empty() {
        let name = list.vector8("ALPN protocol")?;
        protocols.push(String::from_utf8_lossy(name).into_owned());
    }
    Ok(protocols)
}

/// A cursor over a byte slice; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn skip(&mut self, n: usize, what: &'static str) -> Result<(), Malformed> {
        self.take(n, what).map(|_| ())
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Malformed> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Malformed> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn vector8(&mut self, what: &'static str) -> Result<&'a [u8], Malformed> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }

    fn vector16(&mut self, what: &'static str) -> Result<&'a [u8], Malformed> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }
}

#[cfg(test)]
mod tests;
