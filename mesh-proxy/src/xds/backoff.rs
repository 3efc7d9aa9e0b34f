//! Reconnect delays: exponential with full jitter, so that a fleet of
//! proxies does not reconnect to a restarted control plane in lockstep.

use std::time::Duration;

/// First reconnect delay (before jitter).
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Upper bound of the reconnect delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Jittered exponential backoff: the n-th delay is drawn uniformly from
/// `[base/2, base]` where `base = min(initial * 2^n, max)`; half the base is
/// kept so the delay still grows.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The ceiling of the next delay, before jitter.
    pub fn current_base(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next delay to wait, and one step further up.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current_base();
        self.attempt = self.attempt.saturating_add(1);
        let half = base / 2;
        let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rand::random_range(0..=jitter_nanos))
    }

    /// After a healthy stream: start again from the initial delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut bases = Vec::new();
        for _ in 0..12 {
            let base = b.current_base();
            let d = b.next_delay();
            assert!(
                d >= base / 2 && d <= base,
                "{d:?} outside [{:?}, {base:?}]",
                base / 2
            );
            bases.push(base);
        }
        assert_eq!(bases[0], Duration::from_millis(100));
        assert_eq!(bases[1], Duration::from_millis(200));
        assert_eq!(bases[5], Duration::from_millis(3200));
        assert_eq!(bases[6], Duration::from_secs(5));
        assert_eq!(bases[11], Duration::from_secs(5));
        b.reset();
        assert_eq!(b.current_base(), Duration::from_millis(100));
    }

    #[test]
    fn delays_are_not_all_equal() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            for _ in 0..4 {
                b.next_delay();
            }
            seen.insert(b.next_delay());
        }
        assert!(seen.len() > 1, "jitter should spread delays: {seen:?}");
    }
}
