//! An ordered set of mirrors with health: a mirror that failed (connect,
//! TLS, timeout, 5xx) is demoted for a while and tried last; when the period
//! is over it is tried in its configured place again. Readiness looks
//! further back: a mirror counts as down only after several failures and
//! no success within [`READY_WINDOW`], so no single request decides it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One mirror's health now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub mirror: String,
    /// For how much longer it is demoted, if it is.
    pub demoted_for: Option<Duration>,
    /// How long its response heads take (a moving average), once it answered.
    pub latency: Option<Duration>,
    /// Why it failed last, until it serves again.
    pub failure: Option<String>,
}

/// How far back readiness looks at a mirror's results.
pub const READY_WINDOW: Duration = Duration::from_secs(60);
/// Failures within the window, with no success, that make a mirror down
/// for readiness: more than one request's worth (a request tries each
/// mirror once).
pub const READY_FAILURES: usize = 3;
/// Results kept per mirror.
const KEPT: usize = 16;

pub struct MirrorSet {
    mirrors: Vec<Mirror>,
    demote_for: Duration,
}

struct Mirror {
    /// Base URL without trailing slash, or `origin`.
    base: String,
    demoted_until: Mutex<Option<Instant>>,
    /// Moving average of the time to its response head, in µs (0: none yet).
    latency_us: AtomicU64,
    /// The newest results (when, and whether it served), for readiness.
    results: Mutex<VecDeque<(Instant, bool)>>,
    /// Why it failed last, until it serves again.
    failure: Mutex<Option<String>>,
}

impl Mirror {
    fn record(&self, served: bool) {
        if let Ok(mut results) = self.results.lock() {
            if results.len() == KEPT {
                results.pop_front();
            }
            results.push_back((Instant::now(), served));
        }
    }

    /// Down for readiness: [`READY_FAILURES`] failures and no success
    /// within [`READY_WINDOW`].
    fn down(&self, now: Instant) -> bool {
        let Ok(results) = self.results.lock() else {
            return false;
        };
        let recent = results
            .iter()
            .filter(|(when, _)| now.duration_since(*when) < READY_WINDOW);
        let (mut failed, mut served) = (0, false);
        for (_, ok) in recent {
            served |= *ok;
            failed += usize::from(!*ok);
        }
        !served && failed >= READY_FAILURES
    }
}

impl MirrorSet {
    pub fn new(bases: &[String], demote_for: Duration) -> MirrorSet {
        let mirrors = bases
            .iter()
            .map(|base| Mirror {
                base: base.clone(),
                demoted_until: Mutex::new(None),
                failure: Mutex::new(None),
                latency_us: AtomicU64::new(0),
                results: Mutex::new(VecDeque::new()),
            })
            .collect();
        MirrorSet {
            mirrors,
            demote_for,
        }
    }

    /// Indices in the order to try: healthy ones in config order, then the
    /// demoted ones, soonest recovery first.
    pub fn order(&self) -> Vec<usize> {
        let now = Instant::now();
        let until = |i: usize| {
            self.mirrors[i]
                .demoted_until
                .lock()
                .map(|g| g.filter(|t| *t > now))
                .unwrap_or(None)
        };
        let mut order: Vec<(Option<Instant>, usize)> =
            (0..self.mirrors.len()).map(|i| (until(i), i)).collect();
        order.sort_by_key(|(until, i)| (until.is_some(), *until, *i));
        order.into_iter().map(|(_, i)| i).collect()
    }

    /// Each mirror's health now.
    pub fn health(&self) -> Vec<Health> {
        let now = Instant::now();
        self.mirrors
            .iter()
            .map(|m| {
                let until = m.demoted_until.lock().map(|g| *g).unwrap_or(None);
                let left = until.and_then(|t| t.checked_duration_since(now));
                let latency = m.latency_us.load(Ordering::Relaxed);
                Health {
                    mirror: m.base.clone(),
                    demoted_for: left.filter(|d| !d.is_zero()),
                    latency: (latency > 0).then(|| Duration::from_micros(latency)),
                    failure: m.failure.lock().ok().and_then(|f| f.clone()),
                }
            })
            .collect()
    }

    /// How many mirrors are not demoted now, of how many.
    pub fn healthy(&self) -> (usize, usize) {
        let all = self.health();
        let up = all.iter().filter(|h| h.demoted_for.is_none()).count();
        (up, all.len())
    }

    /// How many mirrors are up for readiness (see [`READY_WINDOW`]), of how many.
    pub fn ready(&self) -> (usize, usize) {
        let now = Instant::now();
        let up = self.mirrors.iter().filter(|m| !m.down(now)).count();
        (up, self.mirrors.len())
    }

    /// Mirror `index` sent a response head after `took`: folded into its
    /// moving average (a quarter weight to the newest).
    pub fn answered(&self, index: usize, took: Duration) {
        let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let average = &self.mirrors[index].latency_us;
        let old = average.load(Ordering::Relaxed);
        let new = if old == 0 { took } else { (old * 3 + took) / 4 };
        average.store(new, Ordering::Relaxed);
    }

    pub fn base(&self, index: usize) -> &str {
        &self.mirrors[index].base
    }

    pub fn bases(&self) -> impl Iterator<Item = &str> {
        self.mirrors.iter().map(|m| m.base.as_str())
    }

    /// Marks a mirror as failing; it is tried last for `demote_for`, or
    /// for `asked` when the mirror said how long (Retry-After).
    pub fn demote(&self, index: usize, reason: &str, asked: Option<Duration>) {
        let mirror = &self.mirrors[index];
        mirror.record(false);
        let period = asked.unwrap_or(self.demote_for);
        if let Ok(mut until) = mirror.demoted_until.lock() {
            *until = Some(Instant::now() + period);
        }
        if let Ok(mut failure) = mirror.failure.lock() {
            *failure = Some(reason.to_string());
        }
        tracing::warn!(mirror = %mirror.base, reason, demoted_for = ?period, "mirror demoted");
    }

    /// Mirror `index` served a file: healthy again.
    pub fn restore(&self, index: usize) {
        self.mirrors[index].record(true);
        if let Ok(mut until) = self.mirrors[index].demoted_until.lock() {
            *until = None;
        }
        if let Ok(mut failure) = self.mirrors[index].failure.lock() {
            *failure = None;
        }
    }
}

/// The longest a mirror's Retry-After is honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A Retry-After value (seconds or an HTTP date) as a period from `now`,
/// at most [`MAX_RETRY_AFTER`]; `None` when it cannot be read.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let period = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or_default(),
    };
    Some(period.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_values() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let s = Duration::from_secs;
        assert_eq!(retry_after("120", now), Some(s(120)));
        assert_eq!(retry_after(" 0 ", now), Some(s(0)));
        assert_eq!(retry_after("999999999", now), Some(MAX_RETRY_AFTER));
        let later = httpdate::fmt_http_date(now + s(90));
        assert_eq!(retry_after(&later, now), Some(s(90)));
        let earlier = httpdate::fmt_http_date(now - s(90));
        assert_eq!(retry_after(&earlier, now), Some(s(0)));
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }

    #[test]
    fn demoted_mirrors_go_last_until_the_period_ends() {
        let set = MirrorSet::new(
            &["a".into(), "b".into(), "c".into()],
            Duration::from_millis(50),
        );
        assert_eq!(set.order(), [0, 1, 2]);
        set.demote(0, "test", None);
        assert_eq!(set.order(), [1, 2, 0]);
        set.demote(1, "test", None);
        assert_eq!(set.order(), [2, 0, 1]);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(set.order(), [0, 1, 2]);
        set.demote(2, "test", None);
        set.restore(2);
        assert_eq!(set.order(), [0, 1, 2]);
    }

    #[test]
    fn readiness_needs_repeated_failures_and_no_success() {
        let set = MirrorSet::new(&["a".into()], Duration::from_secs(1));
        for _ in 1..READY_FAILURES {
            set.demote(0, "test", None);
        }
        assert_eq!(set.healthy(), (0, 1));
        assert_eq!(set.ready(), (1, 1), "not on fewer failures");
        set.demote(0, "test", None);
        assert_eq!(set.ready(), (0, 1));
        set.restore(0);
        set.demote(0, "test", None);
        assert_eq!(set.ready(), (1, 1), "a success in the window counts");
    }

    #[test]
    fn latency_is_a_moving_average_of_answers() {
        let set = MirrorSet::new(&["a".into()], Duration::from_secs(1));
        assert_eq!(set.health()[0].latency, None);
        set.answered(0, Duration::from_millis(100));
        assert_eq!(set.health()[0].latency, Some(Duration::from_millis(100)));
        set.answered(0, Duration::from_millis(20));
        assert_eq!(set.health()[0].latency, Some(Duration::from_millis(80)));
    }
}
