//! Merges what every source holds into one [`Snapshot`] (configuration plus
//! registry, ready to translate) and publishes it, debounced: a burst of
//! changes becomes one snapshot, so one push to each proxy.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::select_all;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{ConfigSource, SourceError, SourceSnapshot};
use crate::metrics::Metrics;
use crate::translate::MeshState;

/// Longest a change waits while further changes keep arriving (Istio's
/// `PILOT_DEBOUNCE_MAX` idea, shorter because local meshes are small).
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(1);

/// One generation of the whole configuration.
pub struct Snapshot {
    /// Increases by one with every published snapshot.
    pub generation: u64,
    pub state: Arc<MeshState>,
    /// Every source's part, for `/debug/configz`.
    pub sources: Vec<SourceSnapshot>,
    /// When the earliest change in this generation was noticed.
    pub changed_at: Instant,
    pub created_at: SystemTime,
}

impl Snapshot {
    fn build(generation: u64, sources: Vec<SourceSnapshot>, trust_domain: &str) -> Snapshot {
        let mut config = mesh_api::Config::default();
        for s in &sources {
            config.resources.extend(s.resources.iter().cloned());
            config.skipped.extend(s.skipped.iter().cloned());
        }
        let changed_at = sources
            .iter()
            .map(|s| s.changed_at)
            .min()
            .unwrap_or_else(Instant::now);
        Snapshot {
            generation,
            state: Arc::new(mesh_state(config, trust_domain)),
            sources,
            changed_at,
            created_at: SystemTime::now(),
        }
    }

    /// Origins (files) whose latest version is rejected, over every source.
    pub fn error_count(&self) -> usize {
        self.sources.iter().map(SourceSnapshot::error_count).sum()
    }
}

/// The state translated for proxies: the configuration, its registry and the
/// trust domain identities are named in.
fn mesh_state(config: mesh_api::Config, trust_domain: &str) -> MeshState {
    MeshState {
        trust_domain: trust_domain.to_string(),
        ..MeshState::new(config)
    }
}

/// The merged configuration, as a watch channel every ADS stream subscribes to.
pub struct ConfigStore {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub tasks: Vec<JoinHandle<()>>,
}

impl ConfigStore {
    /// Loads every source once (an error is fatal), then keeps watching them.
    pub async fn start(
        sources: Vec<Box<dyn ConfigSource>>,
        debounce: Duration,
        trust_domain: String,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<ConfigStore, SourceError> {
        let mut receivers = Vec::new();
        let mut tasks = Vec::new();
        let mut initial = Vec::new();
        for mut source in sources {
            let first = source.load().await?;
            tracing::info!(
                source = %first.source,
                resources = first.resources.len(),
                errors = first.error_count(),
                "configuration source loaded"
            );
            initial.push(first.clone());
            let (tx, rx) = watch::channel(first);
            receivers.push(rx);
            tasks.push(tokio::spawn(source.watch(tx, shutdown.clone())));
        }
        let snapshot = Snapshot::build(1, initial, &trust_domain);
        metrics.config_loaded(snapshot.error_count());
        let (tx, rx) = watch::channel(Arc::new(snapshot));
        tasks.push(tokio::spawn(merge(
            receivers,
            tx,
            debounce,
            trust_domain,
            metrics,
            shutdown,
        )));
        Ok(ConfigStore {
            snapshots: rx,
            tasks,
        })
    }
}

async fn merge(
    mut receivers: Vec<watch::Receiver<SourceSnapshot>>,
    tx: watch::Sender<Arc<Snapshot>>,
    debounce: Duration,
    trust_domain: String,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut generation = 1;
    loop {
        // Wait for a first change, then for quiet.
        tokio::select! {
            r = any_changed(&mut receivers) => if !r { return },
            _ = crate::server::until_shutdown(&mut shutdown) => return,
        }
        let first = Instant::now();
        loop {
            let left = DEBOUNCE_MAX.saturating_sub(first.elapsed());
            if left.is_zero() {
                break;
            }
            tokio::select! {
                r = any_changed(&mut receivers) => if !r { return },
                _ = tokio::time::sleep(debounce.min(left)) => break,
                _ = crate::server::until_shutdown(&mut shutdown) => return,
            }
        }
        generation += 1;
        let sources: Vec<SourceSnapshot> = receivers
            .iter_mut()
            .map(|r| r.borrow_and_update().clone())
            .collect();
        // Merging clones every resource and builds the registry: seconds for
        // a big configuration, so not on the runtime's threads. Changes that
        // arrive meanwhile are coalesced into the next generation.
        let domain = trust_domain.clone();
        let built =
            tokio::task::spawn_blocking(move || Snapshot::build(generation, sources, &domain))
                .await;
        let snapshot = match built {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(generation, "building the configuration failed: {e}");
                return;
            }
        };
        metrics.config_loaded(snapshot.error_count());
        tracing::info!(
            generation,
            errors = snapshot.error_count(),
            "configuration changed"
        );
        let previous = tx.send_replace(Arc::new(snapshot));
        if tx.is_closed() {
            return;
        }
        tokio::spawn(release(previous));
    }
}

/// Longest a replaced generation waits for the streams still serving it.
const RELEASE_WAIT: Duration = Duration::from_secs(30);

/// Drops a replaced generation once the streams have moved on to the next
/// (each keeps the one it serves until it has translated the next), off the
/// runtime's threads, and hands the memory back: after a big file is removed
/// the control plane shrinks back instead of keeping its peak.
async fn release(previous: Arc<Snapshot>) {
    let deadline = Instant::now() + RELEASE_WAIT;
    while Arc::strong_count(&previous) > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = tokio::task::spawn_blocking(move || {
        drop(previous);
        crate::memory::release_free_heap();
    })
    .await;
}

/// Resolves when any source published; false when every source is gone.
async fn any_changed(receivers: &mut [watch::Receiver<SourceSnapshot>]) -> bool {
    if receivers.is_empty() {
        return std::future::pending().await;
    }
    let futures = receivers.iter_mut().map(|r| Box::pin(r.changed()));
    let (result, _, _) = select_all(futures).await;
    result.is_ok()
}
