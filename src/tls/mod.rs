//! TLS: the local CA and its leaf cache (interception), trust roots toward
//! mirrors, and certificate inspection for `modgate ca show`.

pub mod ca;
pub mod client_hello;
pub mod inspect;
pub mod leaves;
pub mod roots;
pub mod trust_page;

use std::path::Path;

pub use ca::{Ca, CaError};
pub use leaves::Leaves;

/// How to trust the CA at `cert`, for people.
pub fn trust_hint(cert: &Path) -> String {
    let c = cert.display();
    format!(
        "Trust the modgate CA ({c}) on clients:\n\
         \x20 Debian/Ubuntu: sudo cp {c} /usr/local/share/ca-certificates/modgate-ca.crt && sudo update-ca-certificates\n\
         \x20 RHEL/Fedora:   sudo cp {c} /etc/pki/ca-trust/source/anchors/modgate-ca.pem && sudo update-ca-trust\n\
         \x20 macOS:         sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {c}\n\
         \x20 Windows:       certutil -addstore -f Root {c}   (elevated prompt)\n\
         \x20 Go only:       cat /etc/ssl/certs/ca-certificates.crt {c} > ~/.config/modgate-bundle.pem\n\
         \x20                export SSL_CERT_FILE=~/.config/modgate-bundle.pem   (system roots + modgate CA)\n\
         The CA's name constraints permit only the intercepted hosts; it cannot vouch for any other site.\n"
    )
}
