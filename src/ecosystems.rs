//! Every package ecosystem the gateway keeps files of, as the cache sees
//! them (the one place that lists them), and the source each one's mirrors
//! feed the cache through (behind the shared tier when there is one).

use std::sync::Arc;

use crate::cache::Settings;
use crate::cache::key::Ecosystems;
use crate::stats::Stats;

pub fn all() -> Ecosystems {
    Ecosystems::new(vec![
        Arc::new(crate::pypi::tree::Pypi),
        Arc::new(crate::npm::tree::Npm),
        Arc::new(crate::gomod::tree::Go),
    ])
}

/// Where the cache's files come from: the mirrors, behind the shared
/// tier's bucket when `cache.shared` is set.
pub type Sourced = (
    Arc<dyn crate::cache::Source>,
    Option<Arc<crate::cache::shared::Shared>>,
);

pub fn source_for(
    settings: &Settings,
    mirrors: Arc<dyn crate::cache::Source>,
    stats: &Stats,
) -> Result<Sourced, crate::cache::storage::StorageError> {
    let Some(shared) = &settings.shared else {
        stats.cache_shared_up.set(0);
        return Ok((mirrors, None));
    };
    let storage = crate::cache::storage::s3::S3Storage::new(&shared.s3)?;
    let tier = crate::cache::shared::Shared::new(
        Arc::new(storage),
        mirrors,
        shared.timeout,
        crate::cache::shared::Meters {
            up: stats.cache_shared_up.clone(),
            uploads: stats.cache_shared_uploads.clone(),
        },
    );
    let fleet = crate::cache::lease::Fleet {
        me: settings.public_name.clone(),
        peers: shared.peers.clone(),
    };
    let tier = Arc::new(tier.with_fleet(fleet));
    Ok((tier.clone(), Some(tier)))
}
