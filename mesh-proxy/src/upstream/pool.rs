//! Per-endpoint connection pools: HTTP/1.1 connections kept alive and
//! reused one request at a time, and one multiplexed HTTP/2 connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::circuit_breaker::{CircuitBreaker, Overflow};
use super::cluster::HostStats;
use crate::body::ProxyBody;
use crate::stats::{Counter, Gauge};
use crate::tls::stream::{MaybeTls, UpstreamIo};

/// Which wire protocol a request goes upstream with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// Settings that shape a pool; a pool is kept across configuration swaps
/// only while these stay equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub max_requests_per_connection: Option<u32>,
    /// `max_connection_duration` (resilience; HTTP/1.1 connections).
    pub max_connection_duration: Option<Duration>,
    /// TLS for this endpoint (the cluster's `transport_socket` or the
    /// matching `transport_socket_matches` entry); part of the pool's
    /// identity, so TLS and plaintext connections never share a pool.
    pub tls: Option<Arc<crate::tls::UpstreamTransport>>,
}

/// Cluster-wide connection counters the pool updates.
#[derive(Debug, Clone, Default)]
pub struct PoolClusterStats {
    pub cx_total: Counter,
    pub cx_active: Gauge,
    pub cx_connect_fail: Counter,
    pub cx_connect_timeout: Counter,
    /// `upstream_cx_idle_timeout` / `upstream_cx_max_duration_reached`.
    pub cx_idle_timeout: Counter,
    pub cx_max_duration_reached: Counter,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream connect error: timed out after {timeout:?} connecting to {address}")]
    ConnectTimeout {
        address: SocketAddr,
        timeout: Duration,
    },
    #[error("upstream connect error: {source} connecting to {address}")]
    Connect {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream connect error: HTTP handshake with {address} failed: {source}")]
    Handshake {
        address: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("upstream connect error: upstream TLS: {reason} (connecting to {address})")]
    Tls { address: SocketAddr, reason: String },
    #[error("upstream overflow: circuit breaker of {address}'s cluster: {overflow}")]
    Overflow {
        address: SocketAddr,
        overflow: Overflow,
    },
    #[error("upstream reset before response headers from {address}: {source}")]
    Reset {
        address: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

impl UpstreamError {
    /// Whether the failure happened while connecting (UF), not after (UC).
    pub fn is_connect_failure(&self) -> bool {
        !matches!(
            self,
            UpstreamError::Reset { .. } | UpstreamError::Overflow { .. }
        )
    }

    /// The stream was refused by the peer (HTTP/2 `REFUSED_STREAM`).
    pub fn is_refused_stream(&self) -> bool {
        match self {
            UpstreamError::Reset { source, .. } => {
                let mut e: Option<&(dyn std::error::Error + 'static)> = Some(source);
                while let Some(err) = e {
                    // hyper does not expose h2's reason type; its text is stable.
                    let text = err.to_string();
                    if text.contains("REFUSED_STREAM") || text.contains("refused stream") {
                        return true;
                    }
                    e = err.source();
                }
                false
            }
            _ => false,
        }
    }
}

struct IdleConnection {
    sender: http1::SendRequest<ProxyBody>,
    used: u32,
    /// Idle timeout and max duration timers (resilience).
    lifetime: Arc<crate::http::connection_lifetime::UpstreamLifetime>,
}

pub struct Pool {
    address: SocketAddr,
    settings: PoolSettings,
    host_stats: Arc<HostStats>,
    cluster_stats: PoolClusterStats,
    idle_http1: Arc<Mutex<Vec<IdleConnection>>>,
    http2: tokio::sync::Mutex<Option<http2::SendRequest<ProxyBody>>>,
    breaker: Arc<CircuitBreaker>,
    /// Connections of this host, for `per_host_thresholds.max_connections`.
    connections: Arc<std::sync::atomic::AtomicU32>,
    /// Set once a configuration swap dropped this pool: its connections
    /// close when idle instead of waiting in a pool nothing takes from.
    draining: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub fn new(
        address: SocketAddr,
        settings: PoolSettings,
        host_stats: Arc<HostStats>,
        cluster_stats: PoolClusterStats,
        breaker: Arc<CircuitBreaker>,
    ) -> Pool {
        Pool {
            breaker,
            connections: Arc::default(),
            draining: Arc::default(),
            address,
            settings,
            host_stats,
            cluster_stats,
            idle_http1: Arc::default(),
            http2: tokio::sync::Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// Closes the idle connections and keeps none from now on. Called when
    /// a new configuration replaced this pool: its idle connections would
    /// otherwise still count against the cluster's connection limit while
    /// no request of the new configuration can use them.
    pub fn drain(&self) {
        use std::sync::atomic::Ordering;
        self.draining.store(true, Ordering::Release);
        let mut idle = self.idle_http1.lock().unwrap_or_else(|e| e.into_inner());
        // Dropping a connection's sender closes it once it is idle.
        idle.clear();
    }

    /// Sends one request and returns the response head; the body streams
    /// afterwards. An upgrade request takes its connection for itself.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
        protocol: Protocol,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match protocol {
            Protocol::Http1 => self.send_http1(req).await,
            Protocol::Http2 => self.send_http2(req).await,
        }
    }

    async fn send_http1(
        &self,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let upgrade = req.headers().contains_key(http::header::UPGRADE);
        // At the connection limit the request waits (as a pending request,
        // itself limited) for a connection to come back idle or close.
        let mut pending = None;
        loop {
            while let Some(mut conn) = self.take_idle() {
                match conn.sender.try_send_request(req).await {
                    Ok(resp) => {
                        conn.used += 1;
                        if !upgrade {
                            self.recycle(conn);
                        }
                        return Ok(resp);
                    }
                    // The connection closed before the request was written:
                    // it is safe to try the next one.
                    Err(mut e) => match e.take_message() {
                        Some(r) => req = r,
                        None => {
                            return Err(UpstreamError::Reset {
                                address: self.address,
                                source: e.into_error(),
                            });
                        }
                    },
                }
            }
            if self.try_connection() {
                break;
            }
            if pending.is_none() {
                match self.breaker.try_pending() {
                    Ok(g) => pending = Some(g),
                    Err(overflow) => {
                        return Err(UpstreamError::Overflow {
                            address: self.address,
                            overflow,
                        });
                    }
                }
            }
            self.breaker.wait_released().await;
        }
        drop(pending);
        let stream = match self.connect(Some(false)).await {
            Ok(s) => s,
            Err(e) => {
                self.release_connection();
                return Err(e);
            }
        };
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| {
                self.release_connection();
                UpstreamError::Handshake {
                    address: self.address,
                    source,
                }
            })?;
        // Resilience: the connection's I/O task also ends (closing it) when
        // its idle timeout or max duration fires while it waits in the pool.
        let lifetime = crate::http::connection_lifetime::UpstreamLifetime::new(
            self.settings.idle_timeout,
            self.settings.max_connection_duration,
            self.cluster_stats.cx_idle_timeout.clone(),
            self.cluster_stats.cx_max_duration_reached.clone(),
        );
        let timers = lifetime.clone();
        self.spawn_connection(async move {
            tokio::select! {
                _ = conn.with_upgrades() => {}
                _ = timers.expired() => {}
            }
        });
        let mut conn = IdleConnection {
            sender,
            used: 0,
            lifetime,
        };
        let resp = conn
            .sender
            .send_request(req)
            .await
            .map_err(|source| UpstreamError::Reset {
                address: self.address,
                source,
            })?;
        conn.used += 1;
        if !upgrade {
            self.recycle(conn);
        }
        Ok(resp)
    }

    fn take_idle(&self) -> Option<IdleConnection> {
        let mut idle = self.idle_http1.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(conn) = idle.pop() {
            // `take` refuses a connection its timers closed (resilience).
            if conn.sender.is_ready() && conn.lifetime.take() {
                return Some(conn);
            }
        }
        None
    }

    /// Puts the connection back once its response is fully read (that is
    /// when HTTP/1.1 can carry the next request).
    fn recycle(&self, mut conn: IdleConnection) {
        if self
            .settings
            .max_requests_per_connection
            .is_some_and(|max| conn.used >= max)
        {
            return;
        }
        let idle = self.idle_http1.clone();
        let breaker = self.breaker.clone();
        let draining = self.draining.clone();
        tokio::spawn(async move {
            if conn.sender.ready().await.is_err() {
                return;
            }
            let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
            // Checked under the lock `drain` clears under, so no connection
            // slips into a drained pool.
            if draining.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            // Past max_connection_duration: close instead (resilience).
            if !conn.lifetime.went_idle() {
                return;
            }
            idle.push(conn);
            drop(idle);
            breaker.connection_idle();
        });
    }

    async fn send_http2(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = {
            let mut current = self.http2.lock().await;
            match current.as_ref() {
                Some(s) if !s.is_closed() => s.clone(),
                _ => {
                    if !self.try_connection() {
                        // HTTP/2 has no queue for a connection here: over
                        // the limit is an overflow at once.
                        self.breaker.stats.upstream_rq_pending_overflow.inc();
                        return Err(UpstreamError::Overflow {
                            address: self.address,
                            overflow: Overflow::Pending(0),
                        });
                    }
                    let stream = match self.connect(Some(true)).await {
                        Ok(s) => s,
                        Err(e) => {
                            self.release_connection();
                            return Err(e);
                        }
                    };
                    let (sender, conn) =
                        http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                            .await
                            .map_err(|source| {
                                self.release_connection();
                                UpstreamError::Handshake {
                                    address: self.address,
                                    source,
                                }
                            })?;
                    self.spawn_connection(async move {
                        let _ = conn.await;
                    });
                    *current = Some(sender.clone());
                    sender
                }
            }
        };
        sender
            .send_request(req)
            .await
            .map_err(|source| UpstreamError::Reset {
                address: self.address,
                source,
            })
    }

    /// Reserves a connection under the host limit and the cluster limit.
    fn try_connection(&self) -> bool {
        use std::sync::atomic::Ordering;
        let host_max = self.breaker.per_host_max_connections().unwrap_or(u32::MAX);
        let Ok(before) = self
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < host_max).then_some(n + 1)
            })
        else {
            self.breaker.stats.upstream_cx_overflow.inc();
            return false;
        };
        if !self.breaker.try_connection() {
            if before == 0 {
                // No connection to this host at all: open one anyway, or
                // its pending requests could wait for ever.
                self.breaker.force_connection();
                return true;
            }
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn release_connection(&self) {
        self.connections
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.breaker.release_connection();
    }

    /// Connects, then runs the TLS handshake when this endpoint uses TLS;
    /// `http2` is the HTTP version the connection will carry (for ALPN).
    async fn connect(&self, http2: Option<bool>) -> Result<UpstreamIo, UpstreamError> {
        let timeout = self.settings.connect_timeout;
        let result = tokio::time::timeout(timeout, TcpStream::connect(self.address)).await;
        let stream = match result {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                self.host_stats.cx_connect_fail.inc();
                self.cluster_stats.cx_connect_fail.inc();
                return Err(UpstreamError::Connect {
                    address: self.address,
                    source,
                });
            }
            Err(_) => {
                self.host_stats.cx_connect_fail.inc();
                self.cluster_stats.cx_connect_fail.inc();
                self.cluster_stats.cx_connect_timeout.inc();
                return Err(UpstreamError::ConnectTimeout {
                    address: self.address,
                    timeout,
                });
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.settings.tls else {
            return Ok(MaybeTls::Plain(stream));
        };
        match tls.handshake(stream, self.address, http2, timeout).await {
            Ok(s) => Ok(MaybeTls::Tls(Box::new(s))),
            Err(reason) => {
                self.host_stats.cx_connect_fail.inc();
                self.cluster_stats.cx_connect_fail.inc();
                Err(UpstreamError::Tls {
                    address: self.address,
                    reason,
                })
            }
        }
    }

    /// Runs a connection's I/O task, counting it while it lives.
    fn spawn_connection(&self, conn: impl Future<Output = ()> + Send + 'static) {
        let host = self.host_stats.clone();
        let cluster = self.cluster_stats.clone();
        let breaker = self.breaker.clone();
        let connections = self.connections.clone();
        host.cx_total.inc();
        host.cx_active.inc();
        cluster.cx_total.inc();
        cluster.cx_active.inc();
        tokio::spawn(async move {
            conn.await;
            host.cx_active.dec();
            cluster.cx_active.dec();
            connections.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            breaker.release_connection();
        });
    }
}
