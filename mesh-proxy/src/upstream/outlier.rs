//! Passive outlier detection, as Envoy's detector works:
//!
//! - **Consecutive failures** eject inline, as soon as a threshold is
//!   crossed: any 5xx for `consecutive_5xx`, 502/503/504 for
//!   `consecutive_gateway_failure`; local origin failures (connect failure,
//!   timeout, reset) count as both unless `split_external_local_origin_failure`
//!   gives them their own counter (`consecutive_local_origin_failure`).
//! - **Every `interval`** a timer task sweeps the cluster: a host whose
//!   ejection time is up returns to service; a host that was not ejected
//!   has its ejection multiplier lowered by one (so a host that stays
//!   healthy is forgiven step by step); then the success-rate and
//!   failure-percentage algorithms run over the requests of the interval
//!   just ended.
//! - An ejection lasts `base_ejection_time` times the multiplier (raised by
//!   one per ejection), capped at `max_ejection_time`. No ejection may take
//!   the ejected share over `max_ejection_percent`, except that one host
//!   may always be ejected.
//!
//! ```text
//! attempt --> record_outcome --> (threshold) enforce --> ejected_at
//! interval timer --> run_interval: un-eject, decay, success rate, failure %
//! ```

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::cluster::{ClusterRuntime, Host};
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
    pub ejections_enforced_success_rate: Counter,
    pub ejections_detected_success_rate: Counter,
    pub ejections_enforced_failure_percentage: Counter,
    pub ejections_detected_failure_percentage: Counter,
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
            ejections_enforced_success_rate: c("ejections_enforced_success_rate"),
            ejections_detected_success_rate: c("ejections_detected_success_rate"),
            ejections_enforced_failure_percentage: c("ejections_enforced_failure_percentage"),
            ejections_detected_failure_percentage: c("ejections_detected_failure_percentage"),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local: u32,
    /// When the host was ejected; `Some` while it is.
    ejected_at: Option<Instant>,
    /// How long the current ejection lasts.
    ejection_time: Duration,
    /// Envoy's ejection multiplier: up by one per ejection, down by one per
    /// interval the host spends in service.
    backoff: u32,
    /// Requests and failures (external origin) in the current interval.
    interval_total: u64,
    interval_failed: u64,
    /// Guards against two sweeps of one interval (a configuration swap
    /// briefly leaves two runtimes, and timers, over the same host).
    last_sweep: Option<Instant>,
}

/// Per-host detector state; it belongs to the address, so it survives
/// configuration swaps with the host.
#[derive(Debug, Default)]
pub struct OutlierState {
    counts: Mutex<Counts>,
}

/// Which detector ejected a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Consecutive5xx,
    GatewayFailure,
    LocalOrigin,
    SuccessRate,
    FailurePercentage,
}

/// What one interval sweep found for a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    pub unejected: bool,
    /// Requests and failures of the interval that just ended.
    pub total: u64,
    pub failed: u64,
}

impl OutlierState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the host is ejected now. The interval timer un-ejects; as
    /// a safety net for a timer that no longer runs, an ejection long past
    /// its time (two intervals late) is lifted here.
    pub fn is_ejected(&self, cfg: Option<&OutlierDetection>, stats: Option<&OutlierStats>) -> bool {
        let mut c = self.lock();
        let Some(at) = c.ejected_at else {
            return false;
        };
        let grace = cfg.map_or(Duration::ZERO, |cfg| cfg.interval * 2);
        if at.elapsed() >= c.ejection_time + grace && cfg.is_some() {
            c.ejected_at = None;
            if let Some(s) = stats {
                s.ejections_active.dec();
            }
            return false;
        }
        true
    }

    /// Whether the host is marked ejected (for `/clusters`).
    pub fn marked_ejected(&self) -> bool {
        self.lock().ejected_at.is_some()
    }

    /// The current ejection multiplier (for tests and debugging).
    pub fn multiplier(&self) -> u32 {
        self.lock().backoff
    }

    /// Counts one outcome; returns the threshold that fired when the host
    /// should be ejected (the caller checks `max_ejection_percent`).
    pub fn record(&self, cfg: &OutlierDetection, outcome: Outcome) -> Option<Reason> {
        let mut c = self.lock();
        // The interval's success-rate bucket sees external outcomes, and
        // local ones too unless they are split out.
        match outcome {
            Outcome::Status(s) => {
                c.interval_total += 1;
                if s >= 500 {
                    c.interval_failed += 1;
                }
            }
            Outcome::LocalFailure if !cfg.split_external_local_origin_failure => {
                c.interval_total += 1;
                c.interval_failed += 1;
            }
            Outcome::LocalFailure => {}
        }
        if c.ejected_at.is_some() {
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

    /// Ejects the host for `base_ejection_time` times the multiplier, which
    /// goes up by one unless it already reaches past `max_ejection_time`;
    /// the time is capped at `max_ejection_time` (never below the base).
    pub fn eject(&self, cfg: &OutlierDetection) -> Duration {
        let mut c = self.lock();
        let cap = cfg.max_ejection_time.max(cfg.base_ejection_time);
        if cfg.base_ejection_time.saturating_mul(c.backoff) < cap + cfg.base_ejection_time {
            c.backoff += 1;
        }
        c.consecutive_5xx = 0;
        c.consecutive_gateway = 0;
        c.consecutive_local = 0;
        let time = cfg.base_ejection_time.saturating_mul(c.backoff).min(cap);
        c.ejected_at = Some(Instant::now());
        c.ejection_time = time;
        time
    }

    /// Resets counters without ejecting (the ejection was refused).
    pub fn reset_counts(&self) {
        let mut c = self.lock();
        c.consecutive_5xx = 0;
        c.consecutive_gateway = 0;
        c.consecutive_local = 0;
    }

    /// One interval sweep of this host: lift an ejection whose time is up,
    /// or lower the multiplier of a host in service; hand back the
    /// interval's request counts and start a new interval. `None` when the
    /// host was already swept within this interval.
    pub fn sweep(&self, cfg: &OutlierDetection, now: Instant) -> Option<Sweep> {
        let mut c = self.lock();
        if c.last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < cfg.interval / 2)
        {
            return None;
        }
        c.last_sweep = Some(now);
        let mut unejected = false;
        match c.ejected_at {
            Some(at) => {
                if now.saturating_duration_since(at) >= c.ejection_time {
                    c.ejected_at = None;
                    // A few new errors must not re-eject at once.
                    c.consecutive_5xx = 0;
                    c.consecutive_gateway = 0;
                    c.consecutive_local = 0;
                    unejected = true;
                }
            }
            None => c.backoff = c.backoff.saturating_sub(1),
        }
        let sweep = Sweep {
            unejected,
            total: c.interval_total,
            failed: c.interval_failed,
        };
        c.interval_total = 0;
        c.interval_failed = 0;
        Some(sweep)
    }
}

fn enforced(pct: u32) -> bool {
    pct >= 100 || (pct > 0 && rand::random_range(0..100) < pct)
}

/// Whether one more ejection stays within `max_ejection_percent`; the
/// first ejection is always allowed.
pub fn may_eject(ejected: usize, total: usize, max_percent: u32) -> bool {
    ejected == 0 || ((ejected + 1) * 100) <= total * max_percent as usize
}

/// Counts an outcome for the host and ejects it when a consecutive
/// threshold fires and `max_ejection_percent` allows.
pub fn record_outcome(cluster: &ClusterRuntime, host: &Host, outcome: Outcome) {
    let Some(cfg) = &cluster.config.outlier_detection else {
        return;
    };
    if let Some(reason) = host.state.outlier.record(cfg, outcome) {
        enforce(cluster, cfg, host, reason);
    }
}

/// Ejects `host` for `reason` unless `max_ejection_percent` forbids it.
fn enforce(cluster: &ClusterRuntime, cfg: &OutlierDetection, host: &Host, reason: Reason) {
    let s = &cluster.stats.outlier;
    let ejected = cluster
        .hosts
        .all
        .iter()
        .filter(|h| h.state.outlier.marked_ejected())
        .count();
    if !may_eject(ejected, cluster.hosts.all.len(), cfg.max_ejection_percent) {
        s.ejections_overflow.inc();
        host.state.outlier.reset_counts();
        return;
    }
    let time = host.state.outlier.eject(cfg);
    s.ejections_enforced_total.inc();
    s.ejections_active.inc();
    match reason {
        Reason::Consecutive5xx => s.ejections_enforced_consecutive_5xx.inc(),
        Reason::GatewayFailure => s.ejections_enforced_consecutive_gateway_failure.inc(),
        Reason::LocalOrigin => s.ejections_enforced_consecutive_local_origin_failure.inc(),
        Reason::SuccessRate => s.ejections_enforced_success_rate.inc(),
        Reason::FailurePercentage => s.ejections_enforced_failure_percentage.inc(),
    }
    tracing::info!(
        cluster = %cluster.config.name,
        host = %host.state.address,
        ?reason,
        ejection_time = ?time,
        "outlier detection ejected a host"
    );
}

/// The success-rate threshold of Envoy's detector: the mean minus
/// `factor` standard deviations (population), over the hosts' rates.
pub fn success_rate_threshold(rates: &[f64], stdev_factor: f64) -> f64 {
    let n = rates.len() as f64;
    let mean = rates.iter().sum::<f64>() / n;
    let variance = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n;
    mean - stdev_factor * variance.sqrt()
}

/// One interval sweep of a cluster: un-ejection and multiplier decay for
/// every host, then success-rate and failure-percentage ejections over the
/// hosts in service with enough requests in the interval.
pub fn run_interval(cluster: &ClusterRuntime) {
    let Some(cfg) = &cluster.config.outlier_detection else {
        return;
    };
    let now = Instant::now();
    let mut samples: Vec<(&Arc<Host>, f64, u64)> = Vec::new();
    for host in &cluster.hosts.all {
        let Some(sweep) = host.state.outlier.sweep(cfg, now) else {
            continue;
        };
        if sweep.unejected {
            cluster.stats.outlier.ejections_active.dec();
            tracing::info!(
                cluster = %cluster.config.name,
                host = %host.state.address,
                "outlier detection returned a host to service"
            );
        }
        if !host.state.outlier.marked_ejected() && sweep.total > 0 {
            let rate = 100.0 * (sweep.total - sweep.failed) as f64 / sweep.total as f64;
            samples.push((host, rate, sweep.total));
        }
    }
    let s = &cluster.stats.outlier;

    let sr: Vec<_> = samples
        .iter()
        .filter(|(_, _, volume)| *volume >= u64::from(cfg.success_rate_request_volume))
        .collect();
    if !sr.is_empty() && sr.len() >= cfg.success_rate_minimum_hosts as usize {
        let rates: Vec<f64> = sr.iter().map(|(_, r, _)| *r).collect();
        let threshold =
            success_rate_threshold(&rates, f64::from(cfg.success_rate_stdev_factor) / 1000.0);
        for (host, rate, _) in &sr {
            if *rate < threshold && !host.state.outlier.marked_ejected() {
                s.ejections_detected_success_rate.inc();
                if enforced(cfg.enforcing_success_rate) {
                    enforce(cluster, cfg, host, Reason::SuccessRate);
                }
            }
        }
    }

    let fp: Vec<_> = samples
        .iter()
        .filter(|(_, _, volume)| *volume >= u64::from(cfg.failure_percentage_request_volume))
        .collect();
    if !fp.is_empty() && fp.len() >= cfg.failure_percentage_minimum_hosts as usize {
        for (host, rate, _) in &fp {
            if 100.0 - *rate >= f64::from(cfg.failure_percentage_threshold)
                && !host.state.outlier.marked_ejected()
            {
                s.ejections_detected_failure_percentage.inc();
                if enforced(cfg.enforcing_failure_percentage) {
                    enforce(cluster, cfg, host, Reason::FailurePercentage);
                }
            }
        }
    }
}

/// Starts the cluster's interval timer; it stops when the runtime is gone
/// (replaced by a new configuration, whose runtime has its own timer).
pub fn spawn_interval_timer(cluster: &Arc<ClusterRuntime>) {
    let Some(cfg) = &cluster.config.outlier_detection else {
        return;
    };
    // Clusters built outside a runtime (unit tests) have no timer.
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let interval = cfg.interval.max(Duration::from_millis(1));
    let weak: Weak<ClusterRuntime> = Arc::downgrade(cluster);
    handle.spawn(async move {
        let start = tokio::time::Instant::now() + interval;
        let mut ticker = tokio::time::interval_at(start, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(cluster) = weak.upgrade() else {
                return;
            };
            run_interval(&cluster);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ..OutlierDetection::default()
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
        assert!(s.is_ejected(Some(&c), None));
        assert_eq!(s.eject(&c), Duration::from_millis(200));
        assert_eq!(s.eject(&c), Duration::from_millis(250));
    }

    #[test]
    fn sweep_unejects_when_time_is_up_and_decays_the_multiplier() {
        let c = cfg(false);
        let s = OutlierState::default();
        let t0 = Instant::now();
        s.eject(&c);
        s.eject(&c);
        assert_eq!(s.multiplier(), 2);
        // Ejected for 200ms: a sweep at +100ms keeps it out.
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(!s.sweep(&c, at(100)).unwrap().unejected);
        assert!(s.marked_ejected());
        assert!(s.sweep(&c, at(120)).is_none(), "one sweep per interval");
        assert!(s.sweep(&c, at(300)).unwrap().unejected);
        assert_eq!(s.multiplier(), 2, "no decay on the sweep that un-ejects");
        s.sweep(&c, at(400));
        assert_eq!(s.multiplier(), 1);
        s.sweep(&c, at(500));
        s.sweep(&c, at(600));
        assert_eq!(s.multiplier(), 0);
    }

    #[test]
    fn sweep_hands_back_the_interval_counts() {
        let c = cfg(true);
        let s = OutlierState::default();
        s.record(&c, Outcome::Status(200));
        s.record(&c, Outcome::Status(503));
        s.record(&c, Outcome::LocalFailure);
        let sweep = s.sweep(&c, Instant::now()).unwrap();
        assert_eq!(
            (sweep.total, sweep.failed),
            (2, 1),
            "split: local not counted"
        );
        let sweep = s
            .sweep(&c, Instant::now() + Duration::from_secs(1))
            .unwrap();
        assert_eq!((sweep.total, sweep.failed), (0, 0));
    }

    #[test]
    fn success_rate_threshold_is_mean_minus_stdevs() {
        let t = success_rate_threshold(&[50.0, 100.0, 100.0, 100.0, 100.0], 1.9);
        assert!((t - 52.0).abs() < 1e-9, "{t}");
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
