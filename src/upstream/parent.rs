//! The CONNECT handshake with the parent proxy.

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::dial::Failure;
use crate::rules::Target;

/// Largest answer head accepted from the parent.
const MAX_HEAD: usize = 16 * 1024;

/// Asks the parent for a tunnel to `target`; returns bytes that arrived after
/// the parent's `200` head (a server that speaks first).
pub async fn handshake(
    stream: &mut TcpStream,
    target: &Target,
    authorization: Option<&HeaderValue>,
) -> Result<Bytes, Failure> {
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
    if let Some(value) = authorization {
        request.extend_from_slice(b"Proxy-Authorization: ");
        request.extend_from_slice(value.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    stream.write_all(&request).await.map_err(protocol)?;

    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if stream.read_buf(&mut buf).await.map_err(protocol)? == 0 {
            return Err(Failure::ParentProtocol(
                "closed before answering CONNECT".into(),
            ));
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = response.code.unwrap_or(0);
                if !(200..300).contains(&status) {
                    return Err(Failure::ParentStatus(status));
                }
                return Ok(buf.split_off(len).freeze());
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err(Failure::ParentProtocol("answer head too large".into()));
            }
            Err(err) => return Err(Failure::ParentProtocol(format!("bad answer: {err}"))),
        }
    }
}

fn protocol(err: std::io::Error) -> Failure {
    Failure::ParentProtocol(err.to_string())
}
