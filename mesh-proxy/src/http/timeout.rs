//! The route timeout stage: the whole wait for the upstream response head
//! is bounded by the route's `timeout` (504 `UT` when exceeded).

use std::time::Duration;

use http::StatusCode;

use super::local_reply::{LocalReply, ResponseFlag};

/// Runs `fut` under the route timeout; `None` means no timeout (`0s`).
pub async fn within<T>(
    timeout: Option<Duration>,
    fut: impl Future<Output = T>,
) -> Result<T, Elapsed> {
    match timeout {
        Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| Elapsed(t)),
        None => Ok(fut.await),
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Elapsed(pub Duration);

impl Elapsed {
    pub fn into_reply(self, cluster: &str) -> LocalReply {
        LocalReply::new(
            StatusCode::GATEWAY_TIMEOUT,
            ResponseFlag::UpstreamRequestTimeout,
            format!(
                "upstream request timeout: no response within {:?} from cluster {cluster}",
                self.0
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn elapses_and_passes() {
        let slow = within(
            Some(Duration::from_millis(10)),
            tokio::time::sleep(Duration::from_secs(5)),
        )
        .await;
        assert!(slow.is_err());
        assert_eq!(within(None, async { 7 }).await.ok(), Some(7));
        let reply = Elapsed(Duration::from_millis(10)).into_reply("c");
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(reply.flag, Some(ResponseFlag::UpstreamRequestTimeout));
    }
}
