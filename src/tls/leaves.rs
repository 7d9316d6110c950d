//! Leaf certificates for intercepted hosts, cached in memory and chosen by
//! SNI. Configured hosts are minted at start-up, so a handshake never waits
//! for key generation; a leaf is re-minted when less than a day remains.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::ca::{Ca, CaError, LEAF_VALIDITY};

const RENEW_BEFORE: Duration = Duration::from_secs(24 * 3600);

pub struct Leaves {
    ca: Ca,
    /// host -> (leaf, minted at)
    cache: Mutex<HashMap<String, (Arc<CertifiedKey>, Instant)>>,
}

impl std::fmt::Debug for Leaves {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Leaves")
    }
}

impl Leaves {
    /// Mints leaves for `hosts` now.
    pub fn new(ca: Ca, hosts: &[String]) -> Result<Leaves, CaError> {
        let leaves = Leaves {
            ca,
            cache: Mutex::new(HashMap::new()),
        };
        for host in hosts.iter().filter(|h| leaves.ca.permits(h)) {
            leaves.get(host)?;
        }
        Ok(leaves)
    }

    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The cached leaf for `host`, minted if missing or about to expire.
    pub fn get(&self, host: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((leaf, minted)) = cache.get(&host)
            && minted.elapsed() + RENEW_BEFORE < LEAF_VALIDITY
        {
            return Ok(leaf.clone());
        }
        let leaf = self.ca.mint(&host)?;
        cache.insert(host, (leaf.clone(), Instant::now()));
        Ok(leaf)
    }
}

impl ResolvesServerCert for Leaves {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        match self.get(name) {
            Ok(leaf) => Some(leaf),
            Err(err) => {
                tracing::warn!("no certificate for SNI {name:?}: {err}");
                None
            }
        }
    }
}

/// The TLS server configuration for intercepted connections (ALPN h2 and http/1.1).
pub fn server_config(leaves: Arc<Leaves>) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(leaves);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
