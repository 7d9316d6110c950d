//! The parent proxies (`upstream.proxy`, one or a list) and their health:
//! tried in the configured order; one that cannot be reached (refused,
//! silent, broken) is skipped for `upstream.down_for`, then tried again by
//! the next request, as mirrors are. When every parent is down they are
//! all tried still, the one back soonest first: a parent that answers is
//! better than none.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::ParentProxy;

pub struct Parents {
    list: Vec<(ParentProxy, Mutex<Option<Instant>>)>,
    down_for: Duration,
}

impl Parents {
    pub fn new(list: Vec<ParentProxy>, down_for: Duration) -> Parents {
        Parents {
            list: list.into_iter().map(|p| (p, Mutex::new(None))).collect(),
            down_for,
        }
    }

    /// The first configured parent (its login is every parent's).
    pub fn first(&self) -> Option<&ParentProxy> {
        self.list.first().map(|(p, _)| p)
    }

    /// The parents to try now, by index, in order.
    pub fn order(&self) -> Vec<usize> {
        order(&self.down_untils(), Instant::now())
    }

    pub fn get(&self, index: usize) -> Option<&ParentProxy> {
        self.list.get(index).map(|(p, _)| p)
    }

    /// Parent `index` could not be reached: skipped for a while.
    pub fn failed(&self, index: usize) {
        if let Some((parent, until)) = self.list.get(index)
            && let Ok(mut until) = until.lock()
        {
            if until.is_none() {
                tracing::warn!(%parent, down_for = ?self.down_for, "parent proxy unreachable: skipped for a while");
            }
            *until = Some(Instant::now() + self.down_for);
        }
    }

    /// Parent `index` answered.
    pub fn answered(&self, index: usize) {
        if let Some((parent, until)) = self.list.get(index)
            && let Ok(mut until) = until.lock()
            && until.take().is_some()
        {
            tracing::info!(%parent, "parent proxy back");
        }
    }

    /// Each parent (`host:port`) and whether it is up.
    pub fn health(&self) -> Vec<(String, bool)> {
        let now = Instant::now();
        self.list
            .iter()
            .zip(self.down_untils())
            .map(|((p, _), until)| {
                let up = until.is_none_or(|t| t <= now);
                (format!("{}:{}", p.host, p.port), up)
            })
            .collect()
    }

    fn down_untils(&self) -> Vec<Option<Instant>> {
        self.list
            .iter()
            .map(|(_, until)| until.lock().map(|u| *u).unwrap_or(None))
            .collect()
    }
}

/// The order to try parents whose downtime ends at `down_until` (none: up):
/// those up in their configured order, then those down, back soonest first.
fn order(down_until: &[Option<Instant>], now: Instant) -> Vec<usize> {
    let up = |t: &Option<Instant>| t.is_none_or(|t| t <= now);
    let mut order: Vec<usize> = (0..down_until.len())
        .filter(|&i| up(&down_until[i]))
        .collect();
    let mut down: Vec<usize> = (0..down_until.len())
        .filter(|&i| !up(&down_until[i]))
        .collect();
    down.sort_by_key(|&i| down_until[i]);
    order.extend(down);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_parents_first_in_order_then_the_soonest_back() {
        let now = Instant::now();
        let later = |s| Some(now + Duration::from_secs(s));
        assert_eq!(order(&[None, None], now), [0, 1]);
        assert_eq!(order(&[later(30), None], now), [1, 0]);
        assert_eq!(order(&[later(30), later(10), None], now), [2, 1, 0]);
        // A downtime that is over counts as up again.
        assert_eq!(order(&[Some(now), None], now), [0, 1]);
        assert!(order(&[], now).is_empty());
    }
}
