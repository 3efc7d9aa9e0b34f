//! The TCP proxy filter: pick a cluster and host, connect (retrying other
//! hosts up to `max_connect_attempts`), then copy bytes both ways until one
//! side closes or no byte moved either way for `idle_timeout` (default 1 h,
//! `0s` disables; counted in `tcp.P.idle_timeout`, as Envoy does).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use xxhash_rust::xxh64::xxh64;

use crate::access_log::LogEntry;
use crate::http::local_reply::ResponseFlag;
use crate::model::{TcpDestination, TcpProxyConfig};
use crate::server::Shared;
use crate::stats::Scope;

pub async fn serve(
    shared: Arc<Shared>,
    config: Arc<TcpProxyConfig>,
    downstream: crate::tls::DownstreamStream,
    peer: SocketAddr,
    local: SocketAddr,
) {
    let started = Instant::now();
    let scope = Scope::tcp(&config.stat_prefix);
    shared.stats.counter(&scope, "downstream_cx_total").inc();
    let active = shared.active.load_full();
    let mut log = LogEntry {
        start: Some(SystemTime::now()),
        downstream_remote: Some(peer),
        downstream_local: Some(local),
        downstream_tls: downstream.tls.clone(),
        ..LogEntry::default()
    };

    let cluster_name = match &config.cluster {
        TcpDestination::Cluster(name) => name.clone(),
        TcpDestination::Weighted(list) => {
            let total: u64 = list.iter().map(|(_, w)| u64::from(*w)).sum();
            let mut roll = if total == 0 {
                0
            } else {
                rand::random_range(0..total)
            };
            list.iter()
                .find(|(_, w)| {
                    let hit = roll < u64::from(*w);
                    roll = roll.saturating_sub(u64::from(*w));
                    hit
                })
                .or(list.last())
                .map(|(n, _)| n.clone())
                .unwrap_or_default()
        }
    };
    log.upstream_cluster = Some(cluster_name.clone());

    let upstream = match active.clusters.get(&cluster_name) {
        None => {
            log.flags.insert(ResponseFlag::NoClusterFound);
            None
        }
        Some(cluster) => {
            let hash = Some(xxh64(peer.ip().to_string().as_bytes(), 0));
            let mut connected = None;
            for _ in 0..config.max_connect_attempts.max(1) {
                let Some(host) = cluster.pick(hash) else {
                    log.flags.insert(ResponseFlag::NoHealthyUpstream);
                    break;
                };
                log.upstream_host = Some(host.state.address);
                let attempt = tokio::time::timeout(
                    cluster.config.connect_timeout,
                    TcpStream::connect(host.state.address),
                )
                .await;
                match attempt {
                    Ok(Ok(stream)) => {
                        let _ = stream.set_nodelay(true);
                        // The endpoint's transport socket (mTLS to a sidecar).
                        let stream = match &host.state.pool.settings().tls {
                            None => crate::tls::stream::MaybeTls::Plain(stream),
                            Some(tls) => {
                                match tls
                                    .handshake(
                                        stream,
                                        host.state.address,
                                        None,
                                        cluster.config.connect_timeout,
                                    )
                                    .await
                                {
                                    Ok(s) => crate::tls::stream::MaybeTls::Tls(Box::new(s)),
                                    Err(reason) => {
                                        tracing::info!(cluster = %cluster_name, host = %host.state.address, %reason, "upstream TLS failed");
                                        log.details = Some(format!("upstream TLS: {reason}"));
                                        host.state.stats.cx_connect_fail.inc();
                                        cluster.stats.pool.cx_connect_fail.inc();
                                        continue;
                                    }
                                }
                            }
                        };
                        host.state.stats.cx_total.inc();
                        cluster.stats.pool.cx_total.inc();
                        connected = Some((stream, host, cluster.clone()));
                        break;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(cluster = %cluster_name, host = %host.state.address, error = %e, "tcp connect failed");
                        host.state.stats.cx_connect_fail.inc();
                        cluster.stats.pool.cx_connect_fail.inc();
                    }
                    Err(_) => {
                        host.state.stats.cx_connect_fail.inc();
                        cluster.stats.pool.cx_connect_fail.inc();
                        cluster.stats.pool.cx_connect_timeout.inc();
                    }
                }
            }
            if connected.is_none() && !log.flags.contains(ResponseFlag::NoHealthyUpstream) {
                log.flags.insert(ResponseFlag::UpstreamConnectionFailure);
            }
            connected
        }
    };

    if let Some((stream, host, cluster)) = upstream {
        host.state.stats.cx_active.inc();
        cluster.stats.pool.cx_active.inc();
        let clock = Arc::new(ActivityClock::new());
        let mut down = Watched {
            inner: downstream.io,
            clock: clock.clone(),
            downstream: true,
        };
        let mut up = Watched {
            inner: stream,
            clock: clock.clone(),
            downstream: false,
        };
        let copied = tokio::select! {
            r = tokio::io::copy_bidirectional(&mut down, &mut up) => Some(r),
            _ = clock.idle_elapsed(config.idle_timeout) => None,
        };
        host.state.stats.cx_active.dec();
        cluster.stats.pool.cx_active.dec();
        match copied {
            Some(Ok((up, down))) => {
                log.bytes_received = up;
                log.bytes_sent = down;
            }
            Some(Err(_)) => {}
            None => {
                // Both sockets close when `down` and `up` drop below.
                shared.stats.counter(&scope, "idle_timeout").inc();
                log.bytes_received = clock.from_downstream.load(Ordering::Relaxed);
                log.bytes_sent = clock.from_upstream.load(Ordering::Relaxed);
                log.details = Some("tcp_session_idle_timeout".into());
                tracing::debug!(%peer, timeout = ?config.idle_timeout, "tcp proxy idle timeout");
            }
        }
    }
    log.duration = started.elapsed();
    shared.access_logs.write(&config.access_log, &log);
}

/// When bytes last moved on a proxied TCP session, either way.
struct ActivityClock {
    base: tokio::time::Instant,
    last_ms: AtomicU64,
    /// Bytes read from each side, for the access log of a timed-out session.
    from_downstream: AtomicU64,
    from_upstream: AtomicU64,
}

impl ActivityClock {
    fn new() -> ActivityClock {
        ActivityClock {
            base: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            from_downstream: AtomicU64::new(0),
            from_upstream: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once nothing moved for `timeout`; never without one.
    async fn idle_elapsed(&self, timeout: Option<Duration>) {
        let Some(timeout) = timeout else {
            return std::future::pending().await;
        };
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = self.base + last + timeout;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A socket whose reads and writes count as session activity.
struct Watched<S> {
    inner: S,
    clock: Arc<ActivityClock>,
    downstream: bool,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.clock.touch();
            let side = if self.downstream {
                &self.clock.from_downstream
            } else {
                &self.clock.from_upstream
            };
            side.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
