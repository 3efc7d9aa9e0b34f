//! Request mirroring (`request_mirror_policies`): a sampled copy of the
//! request goes to a shadow cluster with `-shadow` added to its host. It is
//! fire and forget: the copy runs on its own task, its response is read and
//! dropped, and nothing about it reaches the original request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;

use super::attempt;
use super::retry::{Replay, Template};
use crate::upstream::cluster::ClusterRuntime;

/// Upper bound on a mirror's life when the route has no timeout, so a
/// hanging shadow never holds resources forever.
const MIRROR_CAP: Duration = Duration::from_secs(60);

/// `host` with `-shadow` appended to its name, before any port
/// (`svc:8080` becomes `svc-shadow:8080`).
pub fn shadow_host(host: &str) -> String {
    // A bracketed IPv6 literal keeps its brackets; the suffix follows them.
    if let Some((name, port)) = host.rsplit_once(':')
        && !name.is_empty()
        && port.chars().all(|c| c.is_ascii_digit())
        && (!name.contains(':') || name.ends_with(']'))
    {
        return format!("{name}-shadow:{port}");
    }
    format!("{host}-shadow")
}

/// Sends the copy on its own task.
pub fn spawn(
    cluster: Arc<ClusterRuntime>,
    template: Template,
    body: (Bytes, Option<HeaderMap>),
    protocol: crate::upstream::pool::Protocol,
    hash: Option<u64>,
    timeout: Option<Duration>,
) {
    let limit = timeout.unwrap_or(MIRROR_CAP).min(MIRROR_CAP);
    tokio::spawn(async move {
        let request = template.request(
            Replay {
                data: Some(body.0).filter(|d| !d.is_empty()),
                trailers: body.1,
            }
            .boxed(),
        );
        let exchange = async {
            let mut chosen = None;
            if let Ok((resp, _host, guard)) =
                attempt::send(&cluster, hash, request, protocol, &mut chosen, &[], 0).await
            {
                guard.responded(resp.status().as_u16());
                let _ = resp.into_body().collect().await;
            }
        };
        if tokio::time::timeout(limit, exchange).await.is_err() {
            tracing::debug!(cluster = %cluster.config.name, "mirrored request timed out");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::shadow_host;

    #[test]
    fn shadow_suffix_goes_before_the_port() {
        assert_eq!(shadow_host("reviews"), "reviews-shadow");
        assert_eq!(shadow_host("reviews:9080"), "reviews-shadow:9080");
        assert_eq!(shadow_host("[::1]:80"), "[::1]-shadow:80");
    }
}
