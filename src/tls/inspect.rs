//! Reading certificates for `modgate ca show` and for the CA's own name
//! constraints.

use std::fmt::Write;

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The DNS names permitted by the certificate's name constraints.
pub fn permitted_names(der: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let constraints = cert
        .name_constraints()
        .map_err(|e| e.to_string())?
        .ok_or("the CA has no name constraints (refusing to use an unconstrained CA)")?;
    let names = constraints
        .value
        .permitted_subtrees
        .iter()
        .flatten()
        .filter_map(|s| match &s.base {
            GeneralName::DNSName(name) => Some(name.trim_start_matches('.').to_ascii_lowercase()),
            _ => None,
        })
        .collect::<Vec<_>>();
    if names.is_empty() {
        return Err("the CA permits no DNS names".into());
    }
    Ok(names)
}

/// True when the name constraints exclude every IPv4 and every IPv6
/// address (0.0.0.0/0 and ::/0).
pub fn excludes_every_address(der: &CertificateDer<'_>) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return false;
    };
    let Ok(Some(constraints)) = cert.name_constraints() else {
        return false;
    };
    let excluded: Vec<&[u8]> = constraints
        .value
        .excluded_subtrees
        .iter()
        .flatten()
        .filter_map(|s| match &s.base {
            GeneralName::IPAddress(range) => Some(*range),
            _ => None,
        })
        .collect();
    [[0u8; 8].as_slice(), [0u8; 32].as_slice()]
        .iter()
        .all(|all| excluded.contains(all))
}

/// True for a CA certificate modgate made (organization "modgate").
pub fn is_modgate_ca(der: &CertificateDer<'_>) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return false;
    };
    cert.is_ca()
        && cert
            .subject()
            .iter_organization()
            .any(|o| o.as_str() == Ok("modgate"))
}

/// The SHA-256 fingerprint, as browsers and `openssl x509 -fingerprint` show it.
pub fn fingerprint(der: &CertificateDer<'_>) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
    let bytes: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    bytes.join(":")
}

/// A certificate in PEM.
pub fn to_pem(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Subject, SHA-256 fingerprint, validity and permitted names.
pub fn describe(der: &CertificateDer<'_>) -> Result<String, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let mut out = String::new();
    let _ = writeln!(out, "subject:      {}", cert.subject());
    let _ = writeln!(out, "sha256:       {}", fingerprint(der));
    let _ = writeln!(out, "valid from:   {}", cert.validity().not_before);
    let _ = writeln!(out, "valid until:  {}", cert.validity().not_after);
    let names = permitted_names(der).unwrap_or_else(|e| vec![format!("({e})")]);
    let _ = writeln!(out, "permits only: {}", names.join(", "));
    let addresses = if excludes_every_address(der) {
        "excluded (every IPv4 and IPv6 address)"
    } else {
        "NOT excluded: made by an older modgate; `modgate ca init --force` makes a CA that excludes them"
    };
    let _ = writeln!(out, "IP addresses: {addresses}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn pem_round_trips() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pem = super::to_pem(cert.der());
        assert_eq!(pem, cert.pem().replace("\r\n", "\n"));
        let back = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(&back, cert.der());
    }
}
