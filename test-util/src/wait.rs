use std::fmt::Debug;
use std::time::Duration;

use tokio::time::Instant;

/// What a check passed to [`wait_until`] returns: `true`/`Ok` means done.
pub trait Outcome {
    /// The value handed back once the check passes.
    type Value;
    /// `Ok` when the check passed, else a description of the last failure.
    fn into_outcome(self) -> Result<Self::Value, String>;
}

impl Outcome for bool {
    type Value = ();
    fn into_outcome(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("condition was false".to_owned())
        }
    }
}

impl<T, E: Debug> Outcome for Result<T, E> {
    type Value = T;
    fn into_outcome(self) -> Result<T, String> {
        self.map_err(|err| format!("{err:?}"))
    }
}

/// Runs `check` until it returns `true`/`Ok` or `timeout` passes, then returns the value or
/// an error carrying the last failure. Polls every 10ms, backing off to 100ms.
///
/// ```no_run
/// # use std::time::Duration;
/// # use mesh_test_util::{HttpUpstream, send, wait_until};
/// # async fn demo() -> anyhow::Result<()> {
/// let upstream = HttpUpstream::start("v1").await?;
/// wait_until(Duration::from_secs(10), async || upstream.request_count() >= 3).await?;
/// let resp = wait_until(Duration::from_secs(10), async || {
///     send(upstream.addr(), http::Request::get("/").body("")?).await
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn wait_until<O: Outcome>(
    timeout: Duration,
    mut check: impl AsyncFnMut() -> O,
) -> anyhow::Result<O::Value> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match check().await.into_outcome() {
            Ok(value) => return Ok(value),
            Err(last) => {
                if Instant::now() >= deadline {
                    anyhow::bail!(
                        "not met within {timeout:?} after {attempts} attempts; last: {last}"
                    );
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// [`wait_until`] for tests without a runtime: runs `check` on this thread until it returns
/// `true`/`Ok` or `timeout` passes, with the same pauses.
pub fn block_until<O: Outcome>(
    timeout: Duration,
    mut check: impl FnMut() -> O,
) -> anyhow::Result<O::Value> {
    let deadline = std::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match check().into_outcome() {
            Ok(value) => return Ok(value),
            Err(last) => {
                if std::time::Instant::now() >= deadline {
                    anyhow::bail!(
                        "not met within {timeout:?} after {attempts} attempts; last: {last}"
                    );
                }
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
