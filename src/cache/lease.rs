//! Leases: one gateway of a fleet downloads a zip no gateway has, the
//! others stream it from that one. A lease is a small object in the
//! bucket (`modgate-leases/<file>`), written create-only, naming its
//! holder and when it expires; only holders named in `cache.peers` are
//! ever followed, so whoever can write the bucket cannot send a gateway
//! anywhere else.

use std::time::Duration;

use bytes::Bytes;

use super::storage::{Storage, Written};

/// How long a lease on a download lasts (a holder that died frees it then).
pub const LEASE_TTL: Duration = Duration::from_secs(300);
/// Where leases live in the bucket (outside any module path).
const LEASES: &str = "modgate-leases";

/// This gateway in its fleet: how the others reach it (`proxy.public_name`)
/// and the gateways it may be sent to (`cache.peers`). Leases are taken
/// only with `me`, and followed only to a peer named here.
#[derive(Clone, Debug, Default)]
pub struct Fleet {
    pub me: Option<String>,
    pub peers: Vec<String>,
}

/// Who downloads a zip for the fleet.
pub enum Lease {
    /// This gateway: it fetches from the mirrors.
    Mine,
    /// Another gateway, `host:port`, downloading it now.
    Theirs(String),
}

/// The lease object of `file`.
pub fn name(file: &str) -> String {
    format!("{LEASES}/{file}")
}

/// Takes the lease on `file`'s download (a create-only write naming this
/// gateway, with its expiry), or finds who holds it. `None`: no fleet,
/// the bucket not answering within `timeout`, an expired lease (removed),
/// or a holder not among the peers.
pub async fn take(
    storage: &dyn Storage,
    fleet: &Fleet,
    timeout: Duration,
    file: &str,
) -> Option<Lease> {
    let me = fleet.me.as_ref().filter(|_| !fleet.peers.is_empty())?;
    let name = name(file);
    let now = super::store::unix_secs(Some(std::time::SystemTime::now()));
    let text = format!("{me}\n{}\n", now + LEASE_TTL.as_secs());
    let put = storage.put_new(&name, Bytes::from(text));
    match tokio::time::timeout(timeout, put).await {
        Ok(Ok(Written::Created)) => return Some(Lease::Mine),
        Ok(Ok(Written::Existed)) => {}
        Ok(Err(e)) => {
            tracing::debug!(%file, error = %e, "lease not taken: fetching from the mirrors");
            return None;
        }
        Err(_) => {
            tracing::debug!(%file, "lease not taken within cache.shared_timeout: fetching from the mirrors");
            return None;
        }
    }
    let read = async {
        let object = storage.get(&name, None).await.ok()??;
        let chunks: Vec<Bytes> = futures_util::TryStreamExt::try_collect(object.body)
            .await
            .ok()?;
        String::from_utf8(chunks.concat()).ok()
    };
    let text = tokio::time::timeout(timeout, read).await.ok()??;
    let mut lines = text.lines();
    let (holder, until) = (lines.next()?, lines.next()?.parse::<u64>().ok()?);
    if until < now {
        let _ = storage.delete(&name).await;
        return None;
    }
    if holder == me.as_str() {
        return Some(Lease::Mine);
    }
    let known = fleet.peers.iter().any(|p| p == holder);
    known.then(|| Lease::Theirs(holder.to_string()))
}
