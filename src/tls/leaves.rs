//! Leaf certificates for the intercepted hosts, and nothing else: one per
//! configured host name, minted at start-up, chosen by exact SNI, renewed in
//! the background a day before expiry. Any other server name is refused in
//! the handshake, so nothing a client sends can make modgate mint or store
//! another certificate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ca::{Ca, CaError, LEAF_VALIDITY};

/// A leaf is renewed when less than this is left of it.
const RENEW_BEFORE: Duration = Duration::from_secs(24 * 3600);

/// A leaf and when it was minted.
#[derive(Clone)]
struct Leaf {
    key: Arc<CertifiedKey>,
    minted: Instant,
}

pub struct Leaves {
    ca: Ca,
    /// Counts every leaf minted (`modgate_leaf_certificates_minted`).
    minted: Counter,
    /// Host name -> its leaf: exactly the configured hosts the CA permits.
    current: ArcSwap<HashMap<String, Leaf>>,
}

impl std::fmt::Debug for Leaves {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Leaves")
    }
}

impl Leaves {
    /// Mints a leaf for each of `hosts` the CA permits, now.
    pub fn new(ca: Ca, hosts: &[String], minted: Counter) -> Result<Leaves, CaError> {
        let mut map = HashMap::new();
        for host in hosts.iter().filter(|h| ca.permits(h)) {
            let key = ca.mint(host)?;
            minted.inc();
            let leaf = Leaf {
                key,
                minted: Instant::now(),
            };
            map.insert(normalise(host), leaf);
        }
        Ok(Leaves {
            ca,
            minted,
            current: ArcSwap::from_pointee(map),
        })
    }

    /// The CA the leaves are minted by.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The leaf for exactly `host`, if it is a configured host.
    pub fn get(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        self.current
            .load()
            .get(&normalise(host))
            .map(|leaf| leaf.key.clone())
    }

    /// Hosts whose leaf has less than a day left at `now`.
    fn due(&self, now: Instant) -> Vec<String> {
        self.current
            .load()
            .iter()
            .filter(|(_, leaf)| now >= leaf.minted + LEAF_VALIDITY - RENEW_BEFORE)
            .map(|(host, _)| host.clone())
            .collect()
    }

    /// Re-mints the leaves that are due; a failure keeps the old leaf and
    /// is retried at the next round.
    fn renew(&self, now: Instant) {
        let due = self.due(now);
        if due.is_empty() {
            return;
        }
        let mut map = HashMap::clone(&self.current.load());
        for host in due {
            match self.ca.mint(&host) {
                Ok(key) => {
                    self.minted.inc();
                    map.insert(host.clone(), Leaf { key, minted: now });
                    tracing::info!(host, "leaf certificate renewed");
                }
                Err(err) => tracing::warn!(host, "cannot renew the leaf certificate: {err}"),
            }
        }
        self.current.store(Arc::new(map));
    }

    /// Renews leaves before they expire until `stop` fires.
    pub async fn renew_until(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let next = self
                .current
                .load()
                .values()
                .map(|leaf| leaf.minted + LEAF_VALIDITY - RENEW_BEFORE)
                .min();
            // Checked hourly at least, so a failed renewal is retried.
            let wake = next.map_or(Instant::now() + RENEW_BEFORE, |t| {
                t.min(Instant::now() + Duration::from_secs(3600))
            });
            tokio::select! {
                () = tokio::time::sleep_until(wake) => self.renew(Instant::now()),
                () = stop.cancelled() => return,
            }
        }
    }
}

fn normalise(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl ResolvesServerCert for Leaves {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let leaf = self.get(hello.server_name()?);
        if leaf.is_none() {
            tracing::debug!(sni = ?hello.server_name(), "refused: not an intercepted host name");
        }
        leaf
    }
}

/// The TLS server configuration for intercepted connections (ALPN h2 and
/// http/1.1). Clients that keep sessions (browsers, curl) resume with a
/// ticket: no certificate signature, no key exchange beyond (EC)DHE. The
/// ticket key is random per process and config, rotated every 6 hours.
pub fn server_config(leaves: Arc<Leaves>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(leaves);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn only_configured_hosts_and_renewed_before_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["proxy.golang.org".to_string()];
        super::super::ca::init(dir.path(), &hosts, false).unwrap();
        let ca = Ca::load(dir.path()).unwrap();
        let leaves = Leaves::new(ca, &hosts, Counter::default()).unwrap();
        let first = leaves.get("Proxy.Golang.org.").unwrap();
        assert!(leaves.get("a.proxy.golang.org").is_none());
        assert!(leaves.get("example.com").is_none());
        assert!(leaves.due(Instant::now()).is_empty());
        let later = Instant::now() + LEAF_VALIDITY - RENEW_BEFORE;
        assert_eq!(leaves.due(later), ["proxy.golang.org"]);
        leaves.renew(later);
        let renewed = leaves.get("proxy.golang.org").unwrap();
        assert!(!Arc::ptr_eq(&first, &renewed));
        assert!(leaves.due(later).is_empty());
    }
}
