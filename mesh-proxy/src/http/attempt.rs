//! One upstream attempt: pick a host with the cluster's load balancer and
//! send through that host's connection pool. The retry stage will call this
//! once per try; the counters here are per attempt, as Envoy's are.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::local_reply::{LocalReply, ResponseFlag};
use crate::body::{DownstreamBodyError, ProxyBody};
use crate::upstream::circuit_breaker::Overflow;
use crate::upstream::cluster::{ClusterRuntime, Host};
use crate::upstream::outlier::Outcome;
use crate::upstream::pool::{Protocol, UpstreamError};

/// Why an attempt produced no response.
#[derive(Debug)]
pub enum AttemptFailure {
    /// The load balancer found no routable host (503 `UH`).
    NoHealthyHost,
    /// The cluster's circuit breaker refused the request (503 `UO`).
    Overflow {
        host: SocketAddr,
        overflow: Overflow,
    },
    /// The client's request body failed while it streamed upstream (bad
    /// chunked framing, or the client went away): the client's fault, so
    /// never charged to the host.
    Downstream {
        host: SocketAddr,
        reason: String,
        client_gone: bool,
    },
    /// Connecting or exchanging with the chosen host failed.
    Upstream {
        host: SocketAddr,
        error: UpstreamError,
    },
}

impl AttemptFailure {
    pub fn host(&self) -> Option<SocketAddr> {
        match self {
            AttemptFailure::NoHealthyHost => None,
            AttemptFailure::Overflow { host, .. }
            | AttemptFailure::Downstream { host, .. }
            | AttemptFailure::Upstream { host, .. } => Some(*host),
        }
    }

    /// The local reply: 503 `UF` for connect failures, 503 `UC` when the
    /// connection went away before the response head.
    pub fn into_reply(self, cluster: &str) -> LocalReply {
        match self {
            AttemptFailure::NoHealthyHost => LocalReply::no_healthy_upstream(cluster),
            AttemptFailure::Overflow { overflow, .. }
            | AttemptFailure::Upstream {
                error: UpstreamError::Overflow { overflow, .. },
                ..
            } => LocalReply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ResponseFlag::UpstreamOverflow,
                format!(
                    "upstream overflow: circuit breaker open for cluster {cluster}: {overflow}"
                ),
            ),
            // Envoy answers a malformed body 400 (its codec's error) and
            // logs `DPE`; a client that left gets `DC` (nobody reads it).
            AttemptFailure::Downstream {
                reason,
                client_gone,
                ..
            } => LocalReply::new(
                StatusCode::BAD_REQUEST,
                if client_gone {
                    ResponseFlag::DownstreamConnectionTermination
                } else {
                    ResponseFlag::DownstreamProtocolError
                },
                reason,
            ),
            AttemptFailure::Upstream { error, .. } => {
                let flag = if error.is_connect_failure() {
                    ResponseFlag::UpstreamConnectionFailure
                } else {
                    ResponseFlag::UpstreamConnectionTermination
                };
                LocalReply::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    flag,
                    format!("{error} ({cluster})"),
                )
            }
        }
    }
}

/// Picks a host (with the request hash for hash-based balancers; avoiding
/// `avoid` for up to `reselect` extra picks) and sends.
/// `chosen` learns the host as soon as it is picked, so a timeout that
/// cancels this future can still say which host was too slow.
pub async fn send(
    cluster: &Arc<ClusterRuntime>,
    hash: Option<u64>,
    request: Request<ProxyBody>,
    protocol: Protocol,
    chosen: &mut Option<Arc<Host>>,
    avoid: &[SocketAddr],
    reselect: u32,
) -> Result<(Response<Incoming>, Arc<Host>, RequestGuard), AttemptFailure> {
    let Some(host) = cluster.pick_avoiding(hash, avoid, reselect) else {
        cluster.stats.upstream_cx_none_healthy.inc();
        return Err(AttemptFailure::NoHealthyHost);
    };
    *chosen = Some(host.clone());
    tracing::debug!(
        target: "mesh_proxy::http::forward",
        cluster = %cluster.config.name,
        host = %host.state.address,
        "upstream host chosen"
    );
    if let Err(overflow) = cluster.breaker.try_request() {
        return Err(AttemptFailure::Overflow {
            host: host.state.address,
            overflow,
        });
    }
    let guard = RequestGuard::start(cluster, &host);
    match host.state.pool.send(request, protocol).await {
        Ok(resp) => Ok((resp, host, guard)),
        Err(error) => {
            if let Some(cause) = DownstreamBodyError::find(&error) {
                return Err(AttemptFailure::Downstream {
                    host: host.state.address,
                    reason: cause.to_string(),
                    client_gone: cause.client_gone(),
                });
            }
            if !matches!(error, UpstreamError::Overflow { .. }) {
                guard.failed();
            }
            Err(AttemptFailure::Upstream {
                host: host.state.address,
                error,
            })
        }
    }
}

/// Keeps the per-host and per-cluster active request counts right however
/// the request ends (response body done, error, timeout, client gone).
#[derive(Debug)]
pub struct RequestGuard {
    cluster: Arc<ClusterRuntime>,
    host: Arc<Host>,
}

impl RequestGuard {
    fn start(cluster: &Arc<ClusterRuntime>, host: &Arc<Host>) -> RequestGuard {
        cluster.stats.upstream_rq_total.inc();
        cluster.stats.upstream_rq_active.inc();
        host.state.stats.rq_total.inc();
        host.state.stats.rq_active.inc();
        RequestGuard {
            cluster: cluster.clone(),
            host: host.clone(),
        }
    }

    fn failed(&self) {
        self.host.state.stats.rq_error.inc();
        self.cluster
            .record_outcome(&self.host, Outcome::LocalFailure);
    }

    /// Counts the response by status class (5xx is an error for the host).
    pub fn responded(&self, status: u16) {
        self.cluster.stats.record_status(status);
        self.cluster
            .record_outcome(&self.host, Outcome::Status(status));
        if status >= 500 {
            self.host.state.stats.rq_error.inc();
        } else {
            self.host.state.stats.rq_success.inc();
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.cluster.stats.upstream_rq_active.dec();
        self.host.state.stats.rq_active.dec();
        self.cluster.breaker.release_request();
    }
}
