//! Trust roots for every TLS connection modgate opens (mirrors, checksum
//! databases, the shared tier's bucket, TLS parents): webpki roots, the
//! system store, `upstream.ca_file` (a TLS-inspecting firewall's CA) and
//! `gomod.mirror_ca_file` (private mirrors). A certificate from a CA none
//! of them holds fails naming that CA's subject and the key to set, so an
//! admin behind a re-signing firewall sees at once what to trust.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct RootsError {
    path: String,
    reason: String,
}

/// The client config trusting the system's roots and `extra_ca_files`.
pub fn client_config(extra_ca_files: &[&Path]) -> Result<Arc<rustls::ClientConfig>, RootsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    for path in extra_ca_files {
        for cert in pem_certificates(path)? {
            roots.add(cert).map_err(|e| RootsError {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        }
    }
    let webpki = WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| RootsError {
            path: "(trust roots)".into(),
            reason: e.to_string(),
        })?;
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NamingIssuer(webpki)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificates of the PEM file at `path` (at least one).
pub fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, RootsError> {
    let error = |reason: String| RootsError {
        path: path.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no certificates in file".into()));
    }
    Ok(certs)
}

/// A certificate whose issuer no trusted root vouches for.
#[derive(Debug, thiserror::Error)]
#[error(
    "certificate signed by an unknown CA ({issuer}); if that is your network's TLS-inspecting firewall or a private CA, trust it with upstream.ca_file"
)]
pub struct UnknownIssuer {
    pub issuer: String,
}

/// The webpki verifier, with "unknown issuer" made to name the issuer.
#[derive(Debug)]
struct NamingIssuer(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for NamingIssuer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        match verified {
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
                let issuer = top_issuer(end_entity, intermediates);
                // rustls shows a certificate error's details as Debug: as
                // an error of its own, the message is shown as written.
                Err(rustls::Error::Other(OtherError(Arc::new(UnknownIssuer {
                    issuer,
                }))))
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The issuer of the last certificate the server sent (the one a trusted
/// root would have had to sign), as `issuer "CN=…, O=…"`.
fn top_issuer(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> String {
    let top = intermediates.last().unwrap_or(end_entity);
    match x509_parser::parse_x509_certificate(top) {
        Ok((_, cert)) => {
            let issuer = cert.issuer().to_string();
            if issuer.is_empty() {
                "an issuer with an empty name".into()
            } else {
                format!("issuer \"{issuer}\"")
            }
        }
        Err(_) => "an issuer modgate cannot read".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issuer_of_the_top_certificate_is_named() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Example Corp Inspection CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_der(ca.der(), key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["mirror.example".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let named = top_issuer(leaf.der(), &[]);
        assert_eq!(named, "issuer \"CN=Example Corp Inspection CA\"");
        let text = UnknownIssuer { issuer: named }.to_string();
        assert!(text.contains("upstream.ca_file"), "{text}");
    }
}
