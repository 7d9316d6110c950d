//! NTLM messages for a parent proxy login (NTLMv2 only: the responses are
//! always NTLMv2's, whatever the parent's challenge would accept, so a
//! password never crosses the wire under LM or NTLMv1). The message
//! formats and the response arithmetic are `ntlmclient`'s.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ntlmclient::{Flags, Message, NegotiateMessage};

use crate::config::Credentials;

/// What a login asks for: Unicode strings, NTLM with extended session
/// security (NTLMv2 responses), and the server's target info.
fn flags() -> Flags {
    Flags::NEGOTIATE_UNICODE
        | Flags::REQUEST_TARGET
        | Flags::NEGOTIATE_NTLM
        | Flags::NEGOTIATE_ALWAYS_SIGN
        | Flags::NEGOTIATE_NTLM2_KEY
}

/// The first message (type 1), as a `Proxy-Authorization` value.
pub fn negotiate() -> Result<String, String> {
    let message = Message::Negotiate(NegotiateMessage {
        flags: flags(),
        supplied_domain: String::new(),
        supplied_workstation: String::new(),
        os_version: Default::default(),
    });
    let bytes = message
        .to_bytes()
        .map_err(|e| format!("cannot encode the NTLM negotiate message: {e:?}"))?;
    Ok(format!("NTLM {}", STANDARD.encode(bytes)))
}

/// The answer (type 3) to the parent's challenge `token` (its base64 type
/// 2), as a `Proxy-Authorization` value.
pub fn authenticate(token: &str, credentials: &Credentials) -> Result<String, String> {
    let bytes = STANDARD
        .decode(token.trim())
        .map_err(|_| "the parent's NTLM challenge is not base64".to_string())?;
    let (server_challenge, target_info) = challenge(&bytes)?;
    let (domain, user) = credentials.domain_and_user();
    let creds = ntlmclient::Credentials {
        username: user.to_string(),
        password: credentials.password.clone(),
        domain: domain.to_string(),
    };
    let response = ntlmclient::respond_challenge_ntlm_v2(
        server_challenge,
        target_info,
        ntlmclient::get_ntlm_time(),
        &creds,
    );
    let message = response.to_message(&creds, "", flags());
    let bytes = message
        .to_bytes()
        .map_err(|e| format!("cannot encode the NTLM authenticate message: {e:?}"))?;
    Ok(format!("NTLM {}", STANDARD.encode(bytes)))
}

/// The server challenge and target info of a type 2 message. Read here
/// rather than by `ntlmclient`, which wants the optional version field
/// that older servers (and Squid's helpers) leave out: the fixed part is
/// 32 bytes; target info is read when the flags say there is some, and its
/// buffer must lie inside the message.
fn challenge(message: &[u8]) -> Result<([u8; 8], &[u8]), String> {
    let bad = |why: &str| format!("the parent's NTLM challenge is malformed ({why})");
    if message.len() < 32 || &message[..8] != b"NTLMSSP\0" {
        return Err(bad("not an NTLM message"));
    }
    if message[8..12] != 2u32.to_le_bytes() {
        return Err(bad("not a challenge message"));
    }
    let mut server = [0u8; 8];
    server.copy_from_slice(&message[24..32]);
    let flags = u32::from_le_bytes([message[20], message[21], message[22], message[23]]);
    if flags & Flags::NEGOTIATE_TARGET_INFO.bits() == 0 {
        return Ok((server, &[]));
    }
    if message.len() < 48 {
        return Err(bad("it names target info but has no room for it"));
    }
    let length = usize::from(u16::from_le_bytes([message[40], message[41]]));
    let offset = u32::from_le_bytes([message[44], message[45], message[46], message[47]]);
    let info = usize::try_from(offset)
        .ok()
        .and_then(|start| message.get(start..start.checked_add(length)?))
        .ok_or_else(|| bad("its target info lies outside it"))?;
    Ok((server, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_gets_an_ntlmv2_answer_naming_the_user() {
        let first = negotiate().unwrap();
        assert!(first.starts_with("NTLM TlRMTVNTUAAB"), "{first}");
        // A type 2 message: signature, type 2, empty target name, flags,
        // the server challenge, context, empty target info, version.
        let mut challenge = b"NTLMSSP\0".to_vec();
        challenge.extend_from_slice(&2u32.to_le_bytes());
        challenge.extend_from_slice(&[0, 0, 0, 0, 56, 0, 0, 0]);
        let with_info = flags() | Flags::NEGOTIATE_TARGET_INFO;
        challenge.extend_from_slice(&with_info.bits().to_le_bytes());
        challenge.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        challenge.extend_from_slice(&[0; 8]);
        challenge.extend_from_slice(&[0, 0, 0, 0, 56, 0, 0, 0]);
        challenge.extend_from_slice(&[0; 8]);
        let credentials = Credentials {
            user: "CORP\\alice".into(),
            password: "secret".into(),
        };
        let answer = authenticate(&STANDARD.encode(&challenge), &credentials).unwrap();
        let bytes = STANDARD
            .decode(answer.strip_prefix("NTLM ").unwrap())
            .unwrap();
        let Ok(Message::Authenticate(message)) = Message::try_from(bytes.as_slice()) else {
            panic!("not an authenticate message");
        };
        assert_eq!(
            (message.domain_name.as_str(), message.user_name.as_str()),
            ("CORP", "alice")
        );
        assert!(
            message.ntlm_response.len() > 24,
            "an NTLMv2 response, longer than v1's 24 bytes"
        );
        assert!(!String::from_utf8_lossy(&bytes).contains("secret"));
        assert!(authenticate("!!!", &credentials).is_err());
        // Older servers send no version and no target info: 32 bytes do.
        let mut short = challenge[..32].to_vec();
        short[20..24].copy_from_slice(&flags().bits().to_le_bytes());
        let short = STANDARD.encode(&short);
        assert!(authenticate(&short, &credentials).is_ok());
        let mut outside = challenge.clone();
        outside[40] = 200;
        assert!(authenticate(&STANDARD.encode(&outside), &credentials).is_err());
        assert!(authenticate(&STANDARD.encode(b"NTLMSSP\0"), &credentials).is_err());
    }
}
