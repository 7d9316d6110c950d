//! A `/lookup/M@V` answer: `ID\nRECORD\nSIGNED HEAD`, where the record is
//! the go.sum lines of M@V, number ID in the database's log.

use super::SumdbError;

/// A parsed lookup answer (not yet proved).
#[derive(Debug, PartialEq, Eq)]
pub struct Lookup<'a> {
    pub id: u64,
    /// The record: the module's go.sum lines, each ending in `\n`.
    pub record: &'a [u8],
    /// The signed tree head the record is claimed to be in.
    pub head: &'a [u8],
}

pub fn parse(answer: &[u8]) -> Result<Lookup<'_>, SumdbError> {
    let bad = |why: &str| SumdbError::Lookup(why.to_string());
    let newline = answer
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no record number"))?;
    let id = std::str::from_utf8(&answer[..newline])
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("the first line is not a record number"))?;
    let rest = &answer[newline + 1..];
    let split = rest
        .windows(2)
        .position(|w| w == b"\n\n")
        .ok_or_else(|| bad("no blank line between the record and the signed head"))?;
    Ok(Lookup {
        id,
        record: &rest[..split + 1],
        head: &rest[split + 2..],
    })
}

/// The `h1:` hash a record gives for `module version` (the zip) or, with
/// `go_mod`, for `module version/go.mod`.
pub fn hash_of(record: &[u8], module: &str, version: &str, go_mod: bool) -> Option<String> {
    let text = std::str::from_utf8(record).ok()?;
    let want = if go_mod {
        format!("{version}/go.mod")
    } else {
        version.to_string()
    };
    text.lines().find_map(|line| {
        let mut fields = line.split(' ');
        match (fields.next(), fields.next(), fields.next(), fields.next()) {
            (Some(m), Some(v), Some(hash), None) if m == module && v == want => {
                hash.starts_with("h1:").then(|| hash.to_string())
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sumdb::proof::tests::vector;

    #[test]
    fn parses_an_answer_made_by_x_mod() {
        let answer = vector("lookup/example.com/m005@v1.0.0");
        let lookup = parse(&answer).unwrap();
        assert_eq!(lookup.id, 5);
        assert!(lookup.record.starts_with(b"example.com/m005 v1.0.0 h1:"));
        assert!(lookup.head.starts_with(b"go.sum database tree\n300\n"));
        let zip = hash_of(lookup.record, "example.com/m005", "v1.0.0", false).unwrap();
        let go_mod = hash_of(lookup.record, "example.com/m005", "v1.0.0", true).unwrap();
        assert!(zip.starts_with("h1:") && go_mod.starts_with("h1:") && zip != go_mod);
        assert_eq!(
            hash_of(lookup.record, "example.com/m006", "v1.0.0", false),
            None
        );
        assert_eq!(
            hash_of(lookup.record, "example.com/m005", "v1.0.1", true),
            None
        );
    }

    #[test]
    fn refuses_malformed_answers() {
        for bad in [
            &b""[..],
            b"5",
            b"x\nrecord\n\nhead",
            b"-1\nrecord\n\nhead",
            b"5\nrecord without a blank line\nhead",
            b"99999999999999999999999\nr\n\nh",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
