//! Real hellos captured from the go command and from curl (both asking for
//! proxy.golang.org through a CONNECT tunnel), every prefix of them, hellos
//! re-fragmented over many records, hand-built edge cases, and proptests
//! over random, truncated and corrupted input.

use proptest::prelude::*;

use super::*;

const GO: &[u8] = include_bytes!("../../../tests/data/client_hello/go.bin");
const CURL: &[u8] = include_bytes!("../../../tests/data/client_hello/curl.bin");

fn hello(bytes: &[u8]) -> ClientHello {
    match peek(bytes) {
        Peek::Hello(hello) => hello,
        other => panic!("expected a hello, got {other:?}"),
    }
}

/// Splits the handshake message of a one-record hello over records of at
/// most `size` bytes.
fn refragment(record: &[u8], size: usize) -> Vec<u8> {
    let message = &record[RECORD_HEADER..];
    let mut out = Vec::new();
    for chunk in message.chunks(size) {
        out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// A ClientHello record with the given extensions (type, data).
fn build(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // null compression
    let mut ext = Vec::new();
    for (kind, data) in extensions {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(data);
    }
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut message = vec![HANDSHAKE_CLIENT_HELLO];
    message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    message.extend_from_slice(&body);
    let mut record = vec![CONTENT_HANDSHAKE, 3, 1];
    record.extend_from_slice(&(message.len() as u16).to_be_bytes());
    record.extend_from_slice(&message);
    record
}

fn sni(name: &[u8]) -> (u16, Vec<u8>) {
    let mut entry = vec![SNI_HOST_NAME];
    entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
    entry.extend_from_slice(name);
    let mut data = (entry.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&entry);
    (EXT_SERVER_NAME, data)
}

fn alpn_ext(protocols: &[&[u8]]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for p in protocols {
        list.push(p.len() as u8);
        list.extend_from_slice(p);
    }
    let mut data = (list.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&list);
    (EXT_ALPN, data)
}

#[test]
fn the_go_commands_hello() {
    let h = hello(GO);
    assert_eq!(h.server_name.as_deref(), Some("proxy.golang.org"));
    assert_eq!(h.alpn, ["h2", "http/1.1"]);
    assert!(!h.ech);
}

#[test]
fn curls_hello() {
    let h = hello(CURL);
    assert_eq!(h.server_name.as_deref(), Some("proxy.golang.org"));
    assert!(h.alpn.iter().any(|p| p == "http/1.1"), "{:?}", h.alpn);
}

#[test]
fn every_prefix_of_a_real_hello_is_incomplete() {
    for captured in [GO, CURL] {
        for n in 0..captured.len() {
            assert_eq!(
                peek(&captured[..n]),
                Peek::Incomplete,
                "prefix of {n} bytes"
            );
        }
        // Bytes after the hello (none are sent before the server answers,
        // but a pipelining client could) do not change the answer.
        let mut more = captured.to_vec();
        more.extend_from_slice(b"\x17\x03\x03\x00\x01x");
        assert_eq!(peek(&more), peek(captured));
    }
}

#[test]
fn hellos_spread_over_many_records() {
    for captured in [GO, CURL] {
        let whole = hello(captured);
        for size in [1, 2, 3, 4, 5, 100, 511, 1000] {
            let fragmented = refragment(captured, size);
            assert_eq!(hello(&fragmented), whole, "records of {size} bytes");
            for n in (0..fragmented.len()).step_by(7) {
                assert_eq!(peek(&fragmented[..n]), Peek::Incomplete);
            }
        }
    }
}

#[test]
fn other_protocols_are_not_hellos() {
    for bytes in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x16\x02\x00\x00\x10",                 // not TLS major version 3
        b"\x17\x03\x03\x00\x10",                 // application data first
        b"\x16\x03\x01\x00\x00",                 // empty record
        b"\x16\x03\x01\x40\x01",                 // record over 16 KiB
        b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", // ServerHello
        b"\x16\x03\x01\x00\x04\x01\xff\xff\xff", // hello over 16 KiB
    ] {
        assert!(
            matches!(peek(bytes), Peek::NotHello(_)),
            "{bytes:?} gave {:?}",
            peek(bytes)
        );
    }
    // One byte is enough to tell.
    assert!(matches!(peek(b"G"), Peek::NotHello(_)));
}

#[test]
fn hand_built_hellos() {
    let h = hello(&build(&[]));
    assert_eq!(h, ClientHello::default());
    let h = hello(&build(&[sni(b"Proxy.Golang.ORG."), alpn_ext(&[b"h2"])]));
    assert_eq!(h.server_name.as_deref(), Some("proxy.golang.org"));
    assert_eq!(h.alpn, ["h2"]);
    let h = hello(&build(&[
        sni(b"public.example"),
        (EXT_ENCRYPTED_CLIENT_HELLO, vec![0; 8]),
    ]));
    assert!(h.ech);
    // No extensions block at all (TLS 1.0 style).
    let mut bare = build(&[]);
    bare.truncate(bare.len() - 2);
    bare[4] -= 2;
    bare[8] -= 2;
    assert_eq!(hello(&bare), ClientHello::default());
}

#[test]
fn bad_server_names_are_refused() {
    for name in [&b"10.0.0.1"[..], b"bad name", b"", b"\xff\xfe", b"a..b"] {
        assert!(
            matches!(peek(&build(&[sni(name)])), Peek::NotHello(_)),
            "{name:?}"
        );
    }
}

#[test]
fn lying_lengths_are_malformed_not_panics() {
    // An extension claiming more bytes than the hello has.
    let mut record = build(&[sni(b"example.com")]);
    let at = record.len() - 18; // inside the SNI extension header
    record[at] = 0xff;
    assert!(matches!(peek(&record), Peek::NotHello(_)));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = peek(&bytes);
    }

    #[test]
    fn random_bytes_behind_a_handshake_header_never_panic(
        len in 0u16..20000,
        body in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        let mut bytes = vec![CONTENT_HANDSHAKE, 3, 1];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.push(HANDSHAKE_CLIENT_HELLO);
        bytes.extend_from_slice(&body);
        let _ = peek(&bytes);
    }

    #[test]
    fn corrupted_real_hellos_never_panic(
        which in 0usize..2,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = [GO, CURL][which].to_vec();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let n = cut.index(bytes.len() + 1);
        let _ = peek(&bytes[..n]);
    }

    #[test]
    fn built_hellos_round_trip(
        name in "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,20}){0,3}",
        protocols in proptest::collection::vec("[a-z0-9/.]{1,12}", 0..4),
        split in 1usize..300,
    ) {
        let refs: Vec<&[u8]> = protocols.iter().map(|p| p.as_bytes()).collect();
        let record = build(&[sni(name.as_bytes()), alpn_ext(&refs)]);
        let expected = ClientHello { server_name: Some(name.clone()), alpn: protocols.clone(), ech: false };
        let fragmented = refragment(&record, split);
        prop_assert_eq!(hello(&record), expected.clone());
        prop_assert_eq!(hello(&fragmented), expected);
        for n in 0..fragmented.len() {
            prop_assert_eq!(peek(&fragmented[..n]), Peek::Incomplete);
        }
    }
}
