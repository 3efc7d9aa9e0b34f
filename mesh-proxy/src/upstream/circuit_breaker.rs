//! A cluster's circuit breaker: limits on connections, requests waiting for
//! a connection, requests in flight and retries in flight (or a retry
//! budget). Going over a limit fails at once (503 `UO`) and counts an
//! overflow, so an overloaded upstream sheds load instead of queueing it.
//!
//! One breaker lives per cluster name and survives configuration swaps (its
//! limits are replaced), because the connections it counts outlive them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::model::CircuitBreakers;
use crate::stats::{Counter, Scope, Stats};

/// The overflow counters (`cluster.NAME.*`).
#[derive(Debug, Clone, Default)]
pub struct BreakerStats {
    pub upstream_cx_overflow: Counter,
    pub upstream_rq_pending_overflow: Counter,
    pub upstream_rq_retry_overflow: Counter,
}

impl BreakerStats {
    pub fn new(stats: &Stats, cluster: &str) -> BreakerStats {
        let s = Scope::cluster(cluster);
        BreakerStats {
            upstream_cx_overflow: stats.counter(&s, "upstream_cx_overflow"),
            upstream_rq_pending_overflow: stats.counter(&s, "upstream_rq_pending_overflow"),
            upstream_rq_retry_overflow: stats.counter(&s, "upstream_rq_retry_overflow"),
        }
    }
}

#[derive(Debug)]
pub struct CircuitBreaker {
    limits: Mutex<CircuitBreakers>,
    connections: AtomicU32,
    pending: AtomicU32,
    requests: AtomicU32,
    retries: AtomicU32,
    /// Woken when a connection becomes idle or closes, for pending requests.
    released: Notify,
    pub stats: BreakerStats,
}

/// Which limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Pending(u32),
    Requests(u32),
}

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Overflow::Pending(n) => write!(f, "max_pending_requests ({n}) reached"),
            Overflow::Requests(n) => write!(f, "max_requests ({n}) reached"),
        }
    }
}

impl CircuitBreaker {
    pub fn new(limits: CircuitBreakers, stats: BreakerStats) -> CircuitBreaker {
        CircuitBreaker {
            limits: Mutex::new(limits),
            connections: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            requests: AtomicU32::new(0),
            retries: AtomicU32::new(0),
            released: Notify::new(),
            stats,
        }
    }

    fn limits(&self) -> CircuitBreakers {
        self.limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_limits(&self, limits: CircuitBreakers) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = limits;
        self.released.notify_waiters();
    }

    fn acquire(counter: &AtomicU32, max: u32) -> bool {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Reserves a new connection; `false` (and an overflow count) at the limit.
    pub fn try_connection(&self) -> bool {
        let ok = Self::acquire(&self.connections, self.limits().max_connections);
        if !ok {
            self.stats.upstream_cx_overflow.inc();
        }
        ok
    }

    /// Counts a connection the limit refused but that is opened anyway: a
    /// host with no connection at all always gets one (as Envoy does), so
    /// connections other hosts hold (or that a configuration change left
    /// over the lowered limit) cannot strand its pending requests.
    pub fn force_connection(&self) {
        self.connections.fetch_add(1, Ordering::AcqRel);
    }

    /// `per_host_thresholds.max_connections`, if set.
    pub fn per_host_max_connections(&self) -> Option<u32> {
        self.limits().per_host_max_connections
    }

    pub fn release_connection(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
        self.released.notify_waiters();
    }

    /// A connection went back to idle: a pending request may take it.
    pub fn connection_idle(&self) {
        self.released.notify_waiters();
    }

    pub fn try_pending(&self) -> Result<PendingGuard<'_>, Overflow> {
        let max = self.limits().max_pending_requests;
        if Self::acquire(&self.pending, max) {
            Ok(PendingGuard(self))
        } else {
            self.stats.upstream_rq_pending_overflow.inc();
            Err(Overflow::Pending(max))
        }
    }

    /// Waits until a connection may be free; bounded so that a missed
    /// wake-up costs a short delay, never a hang.
    pub async fn wait_released(&self) {
        let _ = tokio::time::timeout(Duration::from_millis(50), self.released.notified()).await;
    }

    /// Counts a request in flight (`max_requests`); Envoy counts this
    /// overflow as a pending overflow.
    pub fn try_request(&self) -> Result<(), Overflow> {
        let max = self.limits().max_requests;
        if Self::acquire(&self.requests, max) {
            Ok(())
        } else {
            self.stats.upstream_rq_pending_overflow.inc();
            Err(Overflow::Requests(max))
        }
    }

    pub fn release_request(&self) {
        self.requests.fetch_sub(1, Ordering::AcqRel);
    }

    /// The retry limit in force: the budget (a share of active requests,
    /// at least `min_retry_concurrency`) when set, else `max_retries`.
    pub fn retry_limit(&self) -> u32 {
        let limits = self.limits();
        match limits.retry_budget {
            Some(b) => {
                let active = self.requests.load(Ordering::Acquire) as f64;
                let share = (active * b.budget_percent / 100.0).floor() as u32;
                share.max(b.min_retry_concurrency)
            }
            None => limits.max_retries,
        }
    }

    /// Reserves a retry; `None` (and an overflow count) at the limit.
    pub fn try_retry(&self) -> Option<RetryGuard<'_>> {
        if Self::acquire(&self.retries, self.retry_limit()) {
            Some(RetryGuard(self))
        } else {
            self.stats.upstream_rq_retry_overflow.inc();
            None
        }
    }

    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Acquire)
    }
}

/// A request waiting for a connection.
#[derive(Debug)]
pub struct PendingGuard<'a>(&'a CircuitBreaker);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A retry in flight.
#[derive(Debug)]
pub struct RetryGuard<'a>(&'a CircuitBreaker);

impl Drop for RetryGuard<'_> {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RetryBudget;

    #[test]
    fn limits_and_budget() {
        let limits = CircuitBreakers {
            max_connections: 1,
            max_pending_requests: 1,
            max_requests: 2,
            max_retries: 1,
            ..Default::default()
        };
        let cb = CircuitBreaker::new(limits.clone(), BreakerStats::default());
        assert!(cb.try_connection());
        assert!(!cb.try_connection());
        assert_eq!(cb.stats.upstream_cx_overflow.get(), 1);
        cb.release_connection();
        assert!(cb.try_connection());
        let p = cb.try_pending().unwrap();
        assert_eq!(cb.try_pending().unwrap_err(), Overflow::Pending(1));
        drop(p);
        assert!(cb.try_pending().is_ok());
        assert!(cb.try_request().is_ok() && cb.try_request().is_ok());
        assert!(cb.try_request().is_err());
        let r = cb.try_retry();
        assert!(r.is_some() && cb.try_retry().is_none());
        assert_eq!(cb.stats.upstream_rq_retry_overflow.get(), 1);
        drop(r);
        // Budget: 50% of 2 active requests is 1, min concurrency 0.
        cb.set_limits(CircuitBreakers {
            retry_budget: Some(RetryBudget {
                budget_percent: 50.0,
                min_retry_concurrency: 0,
            }),
            ..limits
        });
        assert_eq!(cb.retry_limit(), 1);
        cb.release_request();
        cb.release_request();
        assert_eq!(cb.retry_limit(), 0);
    }
}
