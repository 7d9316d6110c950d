//! The connection limits a client connection holds a share of:
//! `proxy.max_connections` (a semaphore permit, taken before accept) and
//! `proxy.max_connections_per_client` (a count per client address, taken
//! right after). Tunnels and upgraded relays keep the share until they end.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedSemaphorePermit;

/// A client connection's share of the connection limits (`proxy.max_connections`
/// and `proxy.max_connections_per_client`); tunnels and upgraded connections
/// keep it until they end.
pub type Slot = Arc<SlotGuards>;

/// What a [`Slot`] holds: released when the last user of the connection ends.
pub struct SlotGuards {
    pub global: OwnedSemaphorePermit,
    pub per_client: ClientSlot,
    /// Counts the connection as open (`modgate_connections_open`).
    pub open: crate::stats::Held,
}

/// How many connections each client address holds, bounded by
/// `proxy.max_connections_per_client`, so one client cannot take every
/// connection permit.
#[derive(Debug)]
pub struct ClientCounts {
    max: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's share of its client's limit; given back on drop.
#[derive(Debug)]
pub struct ClientSlot {
    counts: Arc<ClientCounts>,
    ip: IpAddr,
}

impl ClientCounts {
    pub fn new(max: usize) -> Arc<ClientCounts> {
        Arc::new(ClientCounts {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The most connections one client address may hold.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for one more connection from `ip`, unless it holds the maximum.
    /// An IPv6 client counts per /64: one host holds a whole /64 and could
    /// otherwise take a new address for each connection.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let ip = client_key(ip);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            counts: self.clone(),
            ip,
        })
    }
}

/// What a client is counted as: its IPv4 address (IPv4-mapped included),
/// or its IPv6 /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match crate::rules::canonical_ip(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut held = self.counts.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_counts_per_64() {
        let counts = ClientCounts::new(2);
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let a = counts.admit(ip("2001:db8:1:2::1")).unwrap();
        let b = counts.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert!(
            counts.admit(ip("2001:db8:1:2::77")).is_none(),
            "the same /64"
        );
        assert!(counts.admit(ip("2001:db8:1:3::1")).is_some(), "another /64");
        assert!(counts.admit(ip("::ffff:10.0.0.1")).is_some());
        drop((a, b));
        assert!(counts.admit(ip("2001:db8:1:2::77")).is_some());
    }
}
