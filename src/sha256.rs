//! SHA-256 over a stream, and its hex: for the cache's records and every
//! ecosystem's file checks.

use std::io::Read;

use aws_lc_rs::digest;

/// The SHA-256 of everything `reader` gives.
pub fn stream(mut reader: impl Read) -> std::io::Result<[u8; 32]> {
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut buffer = vec![0u8; 256 << 10];
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hash.update(&buffer[..n]);
    }
    Ok(to_array(hash.finish()))
}

pub fn to_array(d: digest::Digest) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
