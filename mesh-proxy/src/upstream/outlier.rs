//! Passive outlier detection: a host that fails several times in a row is
//! ejected from load balancing for `base_ejection_time` times the number
//! of times it has been ejected (capped by `max_ejection_time`), unless
//! that would eject more than `max_ejection_percent` of the cluster (one
//! host may always be ejected, as Envoy does).
//!
//! Failures are counted the way Envoy counts them: any 5xx for
//! `consecutive_5xx`, 502/503/504 for `consecutive_gateway_failure`; local
//! origin failures (connect failure, timeout, reset) count as both unless
//! `split_external_local_origin_failure` gives them their own counter.
//! Ejection happens as soon as a threshold is crossed; un-ejection happens
//! the first time the balancer looks at the host after its time is up.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::OutlierDetection;
use crate::stats::{Counter, Gauge, Scope, Stats};

/// What one exchange with a host came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Status(u16),
    /// Connecting, or the exchange, failed locally (connect failure,
    /// timeout, reset).
    LocalFailure,
}

/// `cluster.NAME.outlier_detection.*`.
#[derive(Debug, Clone, Default)]
pub struct OutlierStats {
    pub ejections_enforced_total: Counter,
    pub ejections_active: Gauge,
    pub ejections_overflow: Counter,
    pub ejections_enforced_consecutive_5xx: Counter,
    pub ejections_enforced_consecutive_gateway_failure: Counter,
    pub ejections_enforced_consecutive_local_origin_failure: Counter,
}

impl OutlierStats {
    pub fn new(stats: &Stats, cluster: &str) -> OutlierStats {
        let s = Scope::cluster(cluster);
        let c = |n: &str| stats.counter(&s, &format!("outlier_detection.{n}"));
        OutlierStats {
            ejections_enforced_total: c("ejections_enforced_total"),
            ejections_active: stats.gauge(&s, "outlier_detection.ejections_active"),
            ejections_overflow: c("ejections_overflow"),
            ejections_enforced_consecutive_5xx: c("ejections_enforced_consecutive_5xx"),
            ejections_enforced_consecutive_gateway_failure: c(
                "ejections_enforced_consecutive_gateway_failure",
            ),
            ejections_enforced_consecutive_local_origin_failure: c(
                "ejections_enforced_consecutive_local_origin_failure",
            ),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local: u32,
    ejected_until: Option<Instant>,
    ejections: u32,
}

/// Per-host detector state; it belongs to the address, so it survives
/// configuration swaps with the host.
#[derive(Debug, Default)]
pub struct OutlierState {
    counts: Mutex<Counts>,
}

/// Which threshold ejected a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Consecutive5xx,
    GatewayFailure,
    LocalOrigin,
}

impl OutlierState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the host is ejected now; un-ejects it when its time is up.
    pub fn is_ejected(&self, stats: Option<&OutlierStats>) -> bool {
        let mut c = self.lock();
        match c.ejected_until {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                c.ejected_until = None;
                if let Some(s) = stats {
                    s.ejections_active.dec();
                }
                false
            }
            None => false,
        }
    }

    /// Whether the host is marked ejected, without un-ejecting it (for
    /// `/clusters`).
    pub fn marked_ejected(&self) -> bool {
        self.lock()
            .ejected_until
            .is_some_and(|u| Instant::now() < u)
    }

    /// Counts one outcome; returns the threshold that fired when the host
    /// should be ejected (the caller checks `max_ejection_percent`).
    pub fn record(&self, cfg: &OutlierDetection, outcome: Outcome) -> Option<Reason> {
        let mut c = self.lock();
        if c.ejected_until.is_some() {
            return None;
        }
        let (is_5xx, is_gateway, is_local) = match outcome {
            Outcome::Status(s) => (s >= 500, matches!(s, 502..=504), false),
            Outcome::LocalFailure if cfg.split_external_local_origin_failure => {
                (false, false, true)
            }
            // Without the split, a local failure reads as a 503.
            Outcome::LocalFailure => (true, true, false),
        };
        if is_local {
            c.consecutive_local += 1;
        } else if matches!(outcome, Outcome::Status(_)) || !cfg.split_external_local_origin_failure
        {
            // An answer from the host means it was reachable.
            if matches!(outcome, Outcome::Status(_)) {
                c.consecutive_local = 0;
            }
            if is_5xx {
                c.consecutive_5xx += 1;
            } else {
                c.consecutive_5xx = 0;
            }
            if is_gateway {
                c.consecutive_gateway += 1;
            } else {
                c.consecutive_gateway = 0;
            }
        }
        let enforced = |pct: u32| pct >= 100 || (pct > 0 && rand::random_range(0..100) < pct);
        if cfg.consecutive_5xx > 0
            && c.consecutive_5xx >= cfg.consecutive_5xx
            && enforced(cfg.enforcing_consecutive_5xx)
        {
            Some(Reason::Consecutive5xx)
        } else if cfg.consecutive_gateway_failure > 0
            && c.consecutive_gateway >= cfg.consecutive_gateway_failure
            && enforced(cfg.enforcing_consecutive_gateway_failure)
        {
            Some(Reason::GatewayFailure)
        } else if cfg.split_external_local_origin_failure
            && cfg.consecutive_local_origin_failure > 0
            && c.consecutive_local >= cfg.consecutive_local_origin_failure
            && enforced(cfg.enforcing_consecutive_local_origin_failure)
        {
            Some(Reason::LocalOrigin)
        } else {
            None
        }
    }

    /// Ejects the host: `base_ejection_time` times the ejection count,
    /// capped at `max_ejection_time` (but never below the base).
    pub fn eject(&self, cfg: &OutlierDetection) -> Duration {
        let mut c = self.lock();
        c.ejections += 1;
        c.consecutive_5xx = 0;
        c.consecutive_gateway = 0;
        c.consecutive_local = 0;
        let cap = cfg.max_ejection_time.max(cfg.base_ejection_time);
        let time = cfg.base_ejection_time.saturating_mul(c.ejections).min(cap);
        c.ejected_until = Some(Instant::now() + time);
        time
    }

    /// Resets counters without ejecting (the ejection was refused).
    pub fn reset_counts(&self) {
        let mut c = self.lock();
        c.consecutive_5xx = 0;
        c.consecutive_gateway = 0;
        c.consecutive_local = 0;
    }
}

/// Whether one more ejection stays within `max_ejection_percent`; the
/// first ejection is always allowed.
pub fn may_eject(ejected: usize, total: usize, max_percent: u32) -> bool {
    ejected == 0 || ((ejected + 1) * 100) <= total * max_percent as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn cfg(split: bool) -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 3,
            consecutive_gateway_failure: 2,
            consecutive_local_origin_failure: 2,
            split_external_local_origin_failure: split,
            interval: Duration::from_millis(100),
            base_ejection_time: Duration::from_millis(100),
            max_ejection_time: Duration::from_millis(250),
            max_ejection_percent: 10,
            enforcing_consecutive_5xx: 100,
            enforcing_consecutive_gateway_failure: 0,
            enforcing_consecutive_local_origin_failure: 100,
        }
    }

    #[test]
    fn consecutive_5xx_and_multiplied_ejection_time() {
        let c = cfg(false);
        let s = OutlierState::default();
        assert_eq!(s.record(&c, Outcome::Status(500)), None);
        assert_eq!(s.record(&c, Outcome::Status(200)), None);
        assert_eq!(s.record(&c, Outcome::Status(500)), None);
        assert_eq!(s.record(&c, Outcome::LocalFailure), None);
        assert_eq!(
            s.record(&c, Outcome::Status(503)),
            Some(Reason::Consecutive5xx)
        );
        assert_eq!(s.eject(&c), Duration::from_millis(100));
        assert!(s.is_ejected(None));
        assert_eq!(s.eject(&c), Duration::from_millis(200));
        assert_eq!(s.eject(&c), Duration::from_millis(250));
    }

    #[test]
    fn split_local_origin() {
        let c = cfg(true);
        let s = OutlierState::default();
        assert_eq!(s.record(&c, Outcome::LocalFailure), None);
        assert_eq!(
            s.record(&c, Outcome::LocalFailure),
            Some(Reason::LocalOrigin)
        );
        assert!(may_eject(0, 3, 10));
        assert!(!may_eject(1, 3, 10));
        assert!(may_eject(1, 4, 50));
    }
}
