//! The TCP proxy filter: pick a cluster and host, connect (retrying other
//! hosts up to `max_connect_attempts`), then copy bytes both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

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
    mut downstream: TcpStream,
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

    if let Some((mut stream, host, cluster)) = upstream {
        let _ = stream.set_nodelay(true);
        host.state.stats.cx_active.inc();
        cluster.stats.pool.cx_active.inc();
        // `idle_timeout` is not enforced yet (resilience work).
        let copied = tokio::io::copy_bidirectional(&mut downstream, &mut stream).await;
        host.state.stats.cx_active.dec();
        cluster.stats.pool.cx_active.dec();
        if let Ok((up, down)) = copied {
            log.bytes_received = up;
            log.bytes_sent = down;
        }
    }
    log.duration = started.elapsed();
    shared.access_logs.write(&config.access_log, &log);
}
