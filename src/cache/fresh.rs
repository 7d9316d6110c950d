//! The cache's decisions, as pure functions: whether a stored file may be
//! served as it is, and which files go when the cache is over its size.

use std::time::Duration;

use super::key::Kind;

/// What to do with a file found in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Serve it.
    Fresh,
    /// A mutable file past its TTL, but offline: serve it (as stale).
    StaleOffline,
    /// Serve it once more and fetch a new copy in the background.
    StaleRevalidate,
    /// Too old to serve unasked: fetch a new copy now; serve this one only
    /// if every mirror fails.
    Refetch,
}

/// Immutable files are always fresh. A mutable one is fresh for `ttl`,
/// served stale while revalidating for another `ttl`, then refetched
/// first. Offline, whatever is stored is served.
pub fn judge(kind: Kind, age: Duration, ttl: Duration, offline: bool) -> Use {
    if kind.immutable() || age <= ttl {
        Use::Fresh
    } else if offline {
        Use::StaleOffline
    } else if age <= ttl.saturating_mul(2) {
        Use::StaleRevalidate
    } else {
        Use::Refetch
    }
}

/// One stored file, as eviction sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub file: &'a str,
    pub size: u64,
    /// Larger is more recent.
    pub last_used: u64,
    /// Being streamed to a client right now: never removed.
    pub pinned: bool,
}

/// The files to remove, least recently used first, so that `total` comes
/// down to `max` (or as close as pinned files allow).
pub fn victims<'a>(candidates: &[Candidate<'a>], total: u64, max: u64) -> Vec<&'a str> {
    if total <= max {
        return Vec::new();
    }
    let mut order: Vec<&Candidate<'a>> = candidates.iter().filter(|c| !c.pinned).collect();
    order.sort_by_key(|c| (c.last_used, c.file));
    let mut excess = total - max;
    let mut out = Vec::new();
    for candidate in order {
        if excess == 0 {
            break;
        }
        excess = excess.saturating_sub(candidate.size);
        out.push(candidate.file);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::testing::{ARCHIVE, FILE, INDEX};

    #[test]
    fn freshness() {
        let ttl = Duration::from_secs(60);
        let s = Duration::from_secs;
        let table = [
            (ARCHIVE, s(86_400 * 365), false, Use::Fresh),
            (FILE, s(86_400), false, Use::Fresh),
            (INDEX, s(10), false, Use::Fresh),
            (INDEX, s(60), false, Use::Fresh),
            (INDEX, s(61), false, Use::StaleRevalidate),
            (INDEX, s(120), false, Use::StaleRevalidate),
            (INDEX, s(121), false, Use::Refetch),
            (INDEX, s(3600), false, Use::Refetch),
            (INDEX, s(3600), true, Use::StaleOffline),
            (INDEX, s(30), true, Use::Fresh),
            (ARCHIVE, s(86_400), true, Use::Fresh),
        ];
        for (kind, age, offline, want) in table {
            assert_eq!(judge(kind, age, ttl, offline), want, "{kind:?} {age:?}");
        }
    }

    #[test]
    fn eviction_takes_the_least_recently_used_unpinned_first() {
        let c = |file, size, last_used, pinned| Candidate {
            file,
            size,
            last_used,
            pinned,
        };
        let all = [
            c("a", 10, 5, false),
            c("b", 10, 1, true),
            c("c", 10, 2, false),
            c("d", 10, 9, false),
        ];
        assert_eq!(victims(&all, 40, 40), Vec::<&str>::new());
        assert_eq!(victims(&all, 40, 35), ["c"]);
        assert_eq!(victims(&all, 40, 20), ["c", "a"]);
        assert_eq!(victims(&all, 40, 0), ["c", "a", "d"]);
    }
}
