//! Connection lifetime timers, Envoy's `common_http_protocol_options`, on
//! both sides of the proxy:
//!
//! - downstream (HCM): `idle_timeout` (default 1 h) closes a connection
//!   with no active stream, HTTP/2 with a GOAWAY first
//!   (`http.P.downstream_cx_idle_timeout`); `max_connection_duration`
//!   drains it however busy it is (`http.P.downstream_cx_max_duration_reached`).
//! - upstream (cluster): `idle_timeout` (default 1 h) closes a pooled
//!   connection nothing used for that long (`cluster.C.upstream_cx_idle_timeout`);
//!   `max_connection_duration` closes it when reached if idle, else once its
//!   request is done (`cluster.C.upstream_cx_max_duration_reached`).
//!
//! `0s` disables each, as in Envoy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::stats::Counter;

/// Why a connection timer closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Idle,
    MaxDuration,
}

/// Downstream connection timers: the connection manager counts its active
/// streams here and waits on [`DownstreamLifetime::expired`] next to
/// serving the connection.
#[derive(Debug)]
pub struct DownstreamLifetime {
    idle_timeout: Option<Duration>,
    max_duration: Option<Duration>,
    started: Instant,
    active: AtomicUsize,
    idle_since: Mutex<Instant>,
    changed: Notify,
    idle_counter: Counter,
    duration_counter: Counter,
}

impl DownstreamLifetime {
    pub fn new(
        idle_timeout: Option<Duration>,
        max_duration: Option<Duration>,
        idle_counter: Counter,
        duration_counter: Counter,
    ) -> Arc<DownstreamLifetime> {
        let now = Instant::now();
        Arc::new(DownstreamLifetime {
            idle_timeout,
            max_duration,
            started: now,
            active: AtomicUsize::new(0),
            idle_since: Mutex::new(now),
            changed: Notify::new(),
            idle_counter,
            duration_counter,
        })
    }

    /// A stream began; it ends when the guard is dropped (response body
    /// done or abandoned).
    pub fn stream_started(self: &Arc<Self>) -> ActiveStream {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
        ActiveStream(self.clone())
    }

    /// Resolves when the connection should be closed (counted here); the
    /// caller shuts the connection down gracefully.
    pub async fn expired(&self) -> Expiry {
        let max_deadline = self.max_duration.map(|d| self.started + d);
        loop {
            let changed = self.changed.notified();
            let idle_deadline = match self.idle_timeout {
                Some(t) if self.active.load(Ordering::Acquire) == 0 => {
                    let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
                    Some(since + t)
                }
                _ => None,
            };
            let next = match (idle_deadline, max_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let Some(next) = next else {
                changed.await;
                continue;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = changed => continue,
            }
            let now = Instant::now();
            if max_deadline.is_some_and(|d| now >= d) {
                self.duration_counter.inc();
                return Expiry::MaxDuration;
            }
            if let Some(t) = self.idle_timeout
                && self.active.load(Ordering::Acquire) == 0
                && now >= *self.idle_since.lock().unwrap_or_else(|e| e.into_inner()) + t
            {
                self.idle_counter.inc();
                return Expiry::Idle;
            }
        }
    }
}

/// One active stream of a downstream connection.
#[derive(Debug)]
pub struct ActiveStream(Arc<DownstreamLifetime>);

impl Drop for ActiveStream {
    fn drop(&mut self) {
        let lifetime = &self.0;
        if lifetime.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            *lifetime
                .idle_since
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
        lifetime.changed.notify_waiters();
    }
}

/// Upstream connection timers, shared by a pooled connection's I/O task
/// (which closes it) and the pool (which takes it for requests).
#[derive(Debug)]
pub struct UpstreamLifetime {
    idle_timeout: Option<Duration>,
    max_duration: Option<Duration>,
    started: Instant,
    state: Mutex<UpstreamState>,
    changed: Notify,
    idle_counter: Counter,
    duration_counter: Counter,
}

#[derive(Debug)]
struct UpstreamState {
    /// `Some` while the connection waits in the pool.
    idle_since: Option<Instant>,
    closed: bool,
}

impl UpstreamLifetime {
    pub fn new(
        idle_timeout: Option<Duration>,
        max_duration: Option<Duration>,
        idle_counter: Counter,
        duration_counter: Counter,
    ) -> Arc<UpstreamLifetime> {
        Arc::new(UpstreamLifetime {
            idle_timeout,
            max_duration,
            started: Instant::now(),
            state: Mutex::new(UpstreamState {
                idle_since: None,
                closed: false,
            }),
            changed: Notify::new(),
            idle_counter,
            duration_counter,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UpstreamState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `max_connection_duration` has passed: such a connection
    /// takes no further request.
    pub fn past_max_duration(&self) -> bool {
        self.max_duration
            .is_some_and(|d| self.started.elapsed() >= d)
    }

    /// The connection went back to the pool. Returns false (and counts)
    /// when it is past its maximum duration and must close instead.
    pub fn went_idle(&self) -> bool {
        if self.past_max_duration() {
            let mut s = self.lock();
            if !s.closed {
                s.closed = true;
                self.duration_counter.inc();
            }
            drop(s);
            self.changed.notify_waiters();
            return false;
        }
        self.lock().idle_since = Some(Instant::now());
        self.changed.notify_waiters();
        true
    }

    /// The pool takes the idle connection for a request; false when a
    /// timer already closed it.
    pub fn take(&self) -> bool {
        let mut s = self.lock();
        if s.closed
            || self
                .max_duration
                .is_some_and(|d| self.started.elapsed() >= d)
        {
            return false;
        }
        s.idle_since = None;
        drop(s);
        self.changed.notify_waiters();
        true
    }

    /// Resolves when a timer closes the connection; the I/O task then
    /// drops it.
    pub async fn expired(&self) -> Expiry {
        let max_deadline = self.max_duration.map(|d| self.started + d);
        loop {
            let changed = self.changed.notified();
            let (idle_since, closed) = {
                let s = self.lock();
                (s.idle_since, s.closed)
            };
            if closed {
                return Expiry::MaxDuration;
            }
            let idle_deadline = idle_since.zip(self.idle_timeout).map(|(s, t)| s + t);
            // A busy connection past its maximum duration closes when it
            // is handed back (see `went_idle`).
            let max_when_idle = max_deadline.filter(|_| idle_since.is_some());
            let next = match (idle_deadline, max_when_idle) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let Some(next) = next else {
                changed.await;
                continue;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = changed => continue,
            }
            let now = Instant::now();
            let mut s = self.lock();
            let Some(since) = s.idle_since else {
                continue;
            };
            if s.closed {
                return Expiry::MaxDuration;
            }
            if max_deadline.is_some_and(|d| now >= d) {
                s.closed = true;
                self.duration_counter.inc();
                return Expiry::MaxDuration;
            }
            if self.idle_timeout.is_some_and(|t| now >= since + t) {
                s.closed = true;
                self.idle_counter.inc();
                return Expiry::Idle;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn downstream_idle_waits_for_streams_to_end() {
        let idle = Counter::default();
        let l = DownstreamLifetime::new(
            Some(Duration::from_millis(40)),
            None,
            idle.clone(),
            Counter::default(),
        );
        let stream = l.stream_started();
        let waited = tokio::time::timeout(Duration::from_millis(120), l.expired()).await;
        assert!(waited.is_err(), "no idle timeout while a stream is active");
        drop(stream);
        assert_eq!(l.expired().await, Expiry::Idle);
        assert_eq!(idle.get(), 1);
    }

    #[tokio::test]
    async fn downstream_max_duration_fires_while_busy() {
        let max = Counter::default();
        let l = DownstreamLifetime::new(
            None,
            Some(Duration::from_millis(40)),
            Counter::default(),
            max.clone(),
        );
        let _stream = l.stream_started();
        assert_eq!(l.expired().await, Expiry::MaxDuration);
        assert_eq!(max.get(), 1);
    }

    #[tokio::test]
    async fn upstream_idle_and_take() {
        let idle = Counter::default();
        let l = UpstreamLifetime::new(
            Some(Duration::from_millis(40)),
            None,
            idle.clone(),
            Counter::default(),
        );
        assert!(l.went_idle());
        assert!(l.take());
        let waited = tokio::time::timeout(Duration::from_millis(120), l.expired()).await;
        assert!(waited.is_err(), "a busy connection is not idle");
        assert!(l.went_idle());
        assert_eq!(l.expired().await, Expiry::Idle);
        assert!(!l.take(), "a closed connection is never taken");
        assert_eq!(idle.get(), 1);
    }

    #[tokio::test]
    async fn upstream_max_duration_closes_when_handed_back() {
        let max = Counter::default();
        let l = UpstreamLifetime::new(
            None,
            Some(Duration::from_millis(30)),
            Counter::default(),
            max.clone(),
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!l.went_idle());
        assert_eq!(l.expired().await, Expiry::MaxDuration);
        assert_eq!(max.get(), 1);
    }
}
