//! Per-stream timeouts of the HTTP connection manager, as Envoy enforces
//! them:
//!
//! - `stream_idle_timeout` (HCM, default 5 min; a route's `idle_timeout`
//!   replaces it, `0s` disabling it): no request or response body activity
//!   for that long. Before the response head it is a local reply, 408 while
//!   the request is still arriving and 504 once it was fully received, with
//!   the `SI` flag; after the head the stream is reset. Counted in
//!   `http.P.downstream_rq_idle_timeout`.
//! - `request_timeout` (HCM, off by default): the whole request must have
//!   arrived within it, unless the response has started; 408 otherwise,
//!   counted in `http.P.downstream_rq_timeout`.
//!
//! ```text
//! handle: StreamClock::new --> guard(clock, route(...)) --> response head
//!            ^ request body frames touch it            |
//!            ^ forward: route idle_timeout overrides   v
//!                                 IdleBody(response body) resets after idle
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use super::local_reply::{LocalReply, ResponseFlag};
use crate::body::{BoxError, ProxyBody};
use crate::stats::Counter;

const DISABLED: u64 = u64::MAX;

tokio::task_local! {
    /// The clock of the stream the current task serves, so that a stage
    /// deep in the request path (the route's `idle_timeout`) can reach it.
    static CURRENT: Arc<StreamClock>;
}

/// What one stream's timers share: the last time a body frame moved, the
/// idle timeout in force, and whether the request has fully arrived.
#[derive(Debug)]
pub struct StreamClock {
    base: Instant,
    last_activity_ms: AtomicU64,
    idle_timeout_ms: AtomicU64,
    request_complete: AtomicBool,
    /// The idle timeout reset the stream after its response head.
    fired: AtomicBool,
    changed: Notify,
}

impl StreamClock {
    pub fn new(idle_timeout: Option<Duration>) -> Arc<StreamClock> {
        Arc::new(StreamClock {
            base: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            idle_timeout_ms: AtomicU64::new(to_ms(idle_timeout)),
            request_complete: AtomicBool::new(false),
            fired: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    /// Records activity on the stream (a body frame in either direction).
    pub fn touch(&self) {
        let now = self.base.elapsed().as_millis() as u64;
        self.last_activity_ms.store(now, Ordering::Relaxed);
    }

    pub fn idle_timeout(&self) -> Option<Duration> {
        match self.idle_timeout_ms.load(Ordering::Relaxed) {
            DISABLED => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Replaces the idle timeout (a route's `idle_timeout`; `None` disables).
    pub fn set_idle_timeout(&self, timeout: Option<Duration>) {
        self.idle_timeout_ms
            .store(to_ms(timeout), Ordering::Relaxed);
        self.touch();
        self.changed.notify_waiters();
    }

    pub fn mark_request_complete(&self) {
        self.request_complete.store(true, Ordering::Release);
    }

    pub fn request_complete(&self) -> bool {
        self.request_complete.load(Ordering::Acquire)
    }

    /// Whether the idle timeout reset the response body (the access log
    /// then carries `SI`).
    pub fn idle_fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Applies a route's `idle_timeout` to the stream the current task
    /// serves: `None` keeps the connection manager's, `Some(0)` disables.
    pub fn apply_route_idle_timeout(route_idle_timeout: Option<Duration>) {
        let Some(t) = route_idle_timeout else {
            return;
        };
        let _ = CURRENT.try_with(|clock| {
            clock.set_idle_timeout(Some(t).filter(|t| !t.is_zero()));
        });
    }

    /// Resolves when the stream has been idle for the timeout in force.
    async fn idle_elapsed(&self) {
        loop {
            let changed = self.changed.notified();
            let Some(timeout) = self.idle_timeout() else {
                changed.await;
                continue;
            };
            let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
            let deadline = self.base + last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = changed => {}
            }
        }
    }
}

fn to_ms(t: Option<Duration>) -> u64 {
    t.map_or(DISABLED, |t| (t.as_millis() as u64).min(DISABLED - 1))
}

/// Which stream timer fired before the response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamTimeout {
    Idle {
        timeout: Duration,
        request_complete: bool,
    },
    Request {
        timeout: Duration,
    },
}

impl StreamTimeout {
    /// Envoy answers 408 while the request is still arriving and 504 once
    /// it was fully received.
    pub fn into_reply(self) -> LocalReply {
        match self {
            StreamTimeout::Idle {
                timeout,
                request_complete,
            } => LocalReply::new(
                if request_complete {
                    StatusCode::GATEWAY_TIMEOUT
                } else {
                    StatusCode::REQUEST_TIMEOUT
                },
                ResponseFlag::StreamIdleTimeout,
                format!(
                    "stream timeout: no activity on the stream for {timeout:?} (stream_idle_timeout)"
                ),
            ),
            StreamTimeout::Request { timeout } => LocalReply {
                status: StatusCode::REQUEST_TIMEOUT,
                flag: None,
                reason: format!(
                    "request timeout: the request was not fully received within {timeout:?} (request_timeout)"
                ),
            },
        }
    }
}

/// The connection manager's counters for these timers.
#[derive(Debug, Clone, Default)]
pub struct StreamTimeoutStats {
    pub downstream_rq_idle_timeout: Counter,
    pub downstream_rq_timeout: Counter,
}

/// Runs `fut` (routing and forwarding up to the response head) under the
/// stream's idle timeout and the request timeout; the clock is reachable
/// from inside through [`StreamClock::apply_route_idle_timeout`].
pub async fn guard<T>(
    clock: Arc<StreamClock>,
    request_timeout: Option<Duration>,
    stats: &StreamTimeoutStats,
    fut: impl Future<Output = T>,
) -> Result<T, StreamTimeout> {
    let request_timer = async {
        match request_timeout {
            Some(t) => {
                tokio::time::sleep(t).await;
                if clock.request_complete() {
                    // Disarmed: the whole request arrived in time.
                    std::future::pending::<()>().await;
                }
                t
            }
            None => std::future::pending().await,
        }
    };
    let watched = clock.clone();
    tokio::select! {
        out = CURRENT.scope(clock.clone(), fut) => Ok(out),
        _ = watched.idle_elapsed() => {
            stats.downstream_rq_idle_timeout.inc();
            Err(StreamTimeout::Idle {
                timeout: clock.idle_timeout().unwrap_or_default(),
                request_complete: clock.request_complete(),
            })
        }
        t = request_timer => {
            stats.downstream_rq_timeout.inc();
            Err(StreamTimeout::Request { timeout: t })
        }
    }
}

/// The downstream request body: every frame is activity, and its end
/// marks the request complete (which disarms `request_timeout`).
pub struct RequestBody {
    inner: ProxyBody,
    clock: Arc<StreamClock>,
}

impl RequestBody {
    pub fn new(inner: ProxyBody, clock: Arc<StreamClock>) -> RequestBody {
        if inner.is_end_stream() {
            clock.mark_request_complete();
        }
        RequestBody { inner, clock }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                self.clock.touch();
                if self.inner.is_end_stream() {
                    self.clock.mark_request_complete();
                }
            }
            Poll::Ready(None) => self.clock.mark_request_complete(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body after the head was sent: when no frame comes for the
/// idle timeout, the stream is reset (an error ends it downstream).
pub struct IdleBody {
    inner: ProxyBody,
    clock: Arc<StreamClock>,
    sleep: Option<Pin<Box<Sleep>>>,
    timed_out: Option<Counter>,
}

impl IdleBody {
    pub fn new(inner: ProxyBody, clock: Arc<StreamClock>, timed_out: Counter) -> IdleBody {
        clock.touch();
        IdleBody {
            inner,
            clock,
            sleep: None,
            timed_out: Some(timed_out),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("stream idle timeout: no response body data for {0:?}")]
pub struct ResponseIdle(pub Duration);

impl Body for IdleBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_ready() {
            self.clock.touch();
            self.sleep = None;
            return polled;
        }
        let Some(timeout) = self.clock.idle_timeout() else {
            return Poll::Pending;
        };
        let last = Duration::from_millis(self.clock.last_activity_ms.load(Ordering::Relaxed));
        let deadline = self.clock.base + last + timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                if let Some(c) = self.timed_out.take() {
                    c.inc();
                }
                self.clock.fired.store(true, Ordering::Release);
                Poll::Ready(Some(Err(Box::new(ResponseIdle(timeout)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_fires_and_activity_defers_it() {
        let stats = StreamTimeoutStats::default();
        let clock = StreamClock::new(Some(Duration::from_millis(50)));
        let r = guard(
            clock.clone(),
            None,
            &stats,
            tokio::time::sleep(Duration::from_secs(5)),
        )
        .await;
        assert_eq!(
            r,
            Err(StreamTimeout::Idle {
                timeout: Duration::from_millis(50),
                request_complete: false
            })
        );
        assert_eq!(stats.downstream_rq_idle_timeout.get(), 1);
        assert_eq!(
            StreamTimeout::Idle {
                timeout: Duration::from_millis(50),
                request_complete: true
            }
            .into_reply()
            .status,
            StatusCode::GATEWAY_TIMEOUT
        );

        // A route's 0s idle timeout disables it.
        let clock = StreamClock::new(Some(Duration::from_millis(30)));
        let r = guard(clock, None, &stats, async {
            StreamClock::apply_route_idle_timeout(Some(Duration::ZERO));
            tokio::time::sleep(Duration::from_millis(120)).await;
            7
        })
        .await;
        assert_eq!(r, Ok(7));
    }

    #[tokio::test]
    async fn request_timeout_only_while_request_incomplete() {
        let stats = StreamTimeoutStats::default();
        let clock = StreamClock::new(None);
        let r = guard(
            clock.clone(),
            Some(Duration::from_millis(30)),
            &stats,
            tokio::time::sleep(Duration::from_secs(5)),
        )
        .await;
        assert!(matches!(r, Err(StreamTimeout::Request { .. })));
        let clock = StreamClock::new(None);
        clock.mark_request_complete();
        let r = guard(clock, Some(Duration::from_millis(30)), &stats, async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            1
        })
        .await;
        assert_eq!(r, Ok(1));
        assert_eq!(stats.downstream_rq_timeout.get(), 1);
    }
}
