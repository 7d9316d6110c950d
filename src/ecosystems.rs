//! Every package ecosystem the gateway keeps files of, as the cache sees
//! them (the one place that lists them).

use std::sync::Arc;

use crate::cache::key::Ecosystems;

pub fn all() -> Ecosystems {
    Ecosystems::new(vec![
        Arc::new(crate::pypi::tree::Pypi),
        Arc::new(crate::npm::tree::Npm),
        Arc::new(crate::gomod::tree::Go),
    ])
}
