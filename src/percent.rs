//! `%XX` decoding, shared by the parent proxy URL (user:pass) and Go module
//! paths. Pure.

/// Decodes every `%XX`; `None` when an escape is malformed.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes() {
        assert_eq!(super::decode("a%21b%40"), Some(b"a!b@".to_vec()));
        assert_eq!(super::decode("%2"), None);
        assert_eq!(super::decode("%zz"), None);
    }
}
