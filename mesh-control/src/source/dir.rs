//! A directory of Istio YAML, watched by polling.
//!
//! Why polling and not inotify: the directory holds a handful of small files,
//! so reading and hashing all of them every [`DEFAULT_POLL_INTERVAL`] costs
//! next to nothing, needs no extra dependency, and sees every kind of change
//! the same way: in-place writes within one timestamp tick (Linux file times
//! move in coarse ticks, so `mtime` alone can miss a same-size edit), editors'
//! write-and-rename, and the symlink swaps of Kubernetes ConfigMap mounts,
//! which inotify reports on the wrong path.
//!
//! A change is applied once the directory has been quiet for the debounce
//! time, so an editor's burst of writes becomes one update. Each file is
//! loaded and validated on its own: a file that fails keeps its last good
//! version in force and reports why; the other files are unaffected.
//!
//! The watch runs on a thread of its own, not on the async runtime: a big
//! file (a hundred thousand VirtualServices) takes seconds to load and
//! validate, and on a runtime thread it would stall `/ready`, the debug
//! endpoints and ADS with it. One load at a time: changes that arrive during
//! a load are coalesced into the next scan, and a state that changed again
//! while it was being loaded is not published (the newer one follows).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mesh_api::analysis::{Analyzer, Level, analyze_with};
use mesh_api::{Resource, Skipped};
use tokio::sync::watch;

use super::{
    ConfigSource, LoadFuture, SourceError, SourceSnapshot, Versions, WatchFuture, snapshot_of,
};

/// How often the directory is scanned.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long the directory must stay unchanged before a change is applied.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);

/// A watched directory of YAML/JSON files (recursively, as `mesh_api::load_path`).
#[derive(Debug)]
pub struct DirectorySource {
    dir: PathBuf,
    poll_interval: Duration,
    debounce: Duration,
    files: BTreeMap<PathBuf, FileState>,
}

#[derive(Debug, Default)]
struct FileState {
    /// Hash of the bytes last processed (good or bad), to notice changes.
    hash: Option<u64>,
    versions: Versions,
}

/// One scan: every file with its content (or why it could not be read).
type Scan = BTreeMap<PathBuf, Result<Vec<u8>, String>>;

impl DirectorySource {
    pub fn new(dir: impl Into<PathBuf>) -> DirectorySource {
        DirectorySource {
            dir: dir.into(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            debounce: DEFAULT_DEBOUNCE,
            files: BTreeMap::new(),
        }
    }

    pub fn with_timing(mut self, poll_interval: Duration, debounce: Duration) -> Self {
        self.poll_interval = poll_interval;
        self.debounce = debounce;
        self
    }

    /// Reads and validates every file once.
    pub fn load_now(&mut self) -> Result<SourceSnapshot, SourceError> {
        let scan = self.scan()?;
        self.apply(&scan);
        Ok(self.snapshot(Instant::now()))
    }

    fn scan(&self) -> Result<Scan, SourceError> {
        let meta = std::fs::metadata(&self.dir).map_err(|source| SourceError::Directory {
            path: self.dir.display().to_string(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(SourceError::NotADirectory {
                path: self.dir.display().to_string(),
            });
        }
        let mut scan = Scan::new();
        collect(&self.dir, &mut scan).map_err(|source| SourceError::Directory {
            path: self.dir.display().to_string(),
            source,
        })?;
        Ok(scan)
    }

    /// Brings the per-file state up to date with a scan; true if anything changed.
    fn apply(&mut self, scan: &Scan) -> bool {
        let before = self.files.len();
        self.files.retain(|path, _| scan.contains_key(path));
        let mut changed = self.files.len() != before;
        for (path, content) in scan {
            let hash = content_hash(content);
            let state = self.files.entry(path.clone()).or_default();
            if state.hash == Some(hash) {
                continue;
            }
            changed = true;
            state.hash = Some(hash);
            let name = path.display().to_string();
            match content {
                Err(e) => state.versions.reject("config file", &name, vec![e.clone()]),
                Ok(bytes) => {
                    if let Some(resources) = state.versions.load("config file", &name, bytes) {
                        tracing::info!(file = %name, resources, "config file loaded");
                    }
                }
            }
        }
        changed
    }

    fn snapshot(&self, changed_at: Instant) -> SourceSnapshot {
        let origins = self
            .files
            .iter()
            .map(|(path, state)| (path.display().to_string(), &state.versions));
        snapshot_of(self.describe(), origins, changed_at)
    }
}

/// Loads and validates one file (or one Kubernetes object as JSON): its resources, or every
/// reason to reject it.
pub(super) fn load_file(
    name: &str,
    bytes: &[u8],
) -> Result<(Vec<Resource>, Vec<Skipped>), Vec<String>> {
    let text = std::str::from_utf8(bytes).map_err(|e| vec![format!("{name}: not UTF-8: {e}")])?;
    let config = mesh_api::load_str(name, text);
    let mut errors: Vec<String> = config.errors.iter().map(|e| e.to_string()).collect();
    if errors.is_empty() {
        // The same rules Istio's validating webhook applies to each object.
        errors.extend(
            analyze_with(&config, &[Analyzer::Schema])
                .into_iter()
                .filter(|m| m.level() == Level::Error)
                .map(|m| m.to_string()),
        );
    }
    if errors.is_empty() {
        Ok((config.resources, config.skipped))
    } else {
        Err(errors)
    }
}

fn content_hash(content: &Result<Vec<u8>, String>) -> u64 {
    match content {
        Ok(bytes) => xxhash_rust::xxh64::xxh64(bytes, 0),
        Err(e) => xxhash_rust::xxh64::xxh64(e.as_bytes(), 1),
    }
}

fn collect(dir: &Path, scan: &mut Scan) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        // Kubernetes ConfigMap mounts keep the real files in `..data`-style
        // hidden directories and link them from the top: follow the links,
        // skip the hidden copies.
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
        {
            continue;
        }
        if path.is_dir() {
            if let Err(e) = collect(&path, scan) {
                scan.insert(path, Err(format!("cannot read directory: {e}")));
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            let content = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()));
            scan.insert(path, content);
        }
    }
    Ok(())
}

impl ConfigSource for DirectorySource {
    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }

    fn load(&mut self) -> LoadFuture<'_> {
        let loaded = self.load_now();
        Box::pin(std::future::ready(loaded))
    }

    fn watch(
        self: Box<Self>,
        updates: watch::Sender<SourceSnapshot>,
        shutdown: watch::Receiver<bool>,
    ) -> WatchFuture {
        Box::pin(async move {
            // A thread, not the blocking pool: the runtime waits for the pool
            // when it is dropped, and a load in progress must not hold up exit.
            let (done, ended) = tokio::sync::oneshot::channel::<()>();
            let dir = self.dir.display().to_string();
            let spawned = std::thread::Builder::new()
                .name("config-dir".to_string())
                .spawn(move || {
                    (*self).watch_blocking(&updates, &shutdown);
                    drop(done);
                });
            match spawned {
                Ok(_) => {
                    let _ = ended.await;
                }
                Err(e) => tracing::error!("cannot watch config directory {dir}: {e}"),
            }
        })
    }
}

impl DirectorySource {
    /// The watch loop, on its own thread: scan, debounce, apply, publish.
    fn watch_blocking(
        mut self,
        updates: &watch::Sender<SourceSnapshot>,
        shutdown: &watch::Receiver<bool>,
    ) {
        // Hash of the last scan, and since when it has been stable.
        let mut last_seen: Option<u64> = None;
        let mut pending: Option<(Instant, Instant)> = None; // (first change, last change)
        // Applied but not published, because the directory changed meanwhile.
        let mut unpublished = false;
        loop {
            let wait = if pending.is_some() {
                self.debounce / 4
            } else {
                self.poll_interval
            };
            if sleep_until_shutdown(wait, shutdown) {
                return;
            }
            let scan = match self.scan() {
                Ok(s) => s,
                Err(e) => {
                    // A directory that disappears keeps everything in force.
                    let cause = std::error::Error::source(&e)
                        .map(|c| format!(": {c}"))
                        .unwrap_or_default();
                    tracing::warn!("{e}{cause}; keeping the configuration in force");
                    continue;
                }
            };
            let fingerprint = scan_hash(&scan);
            let now = Instant::now();
            if last_seen != Some(fingerprint) {
                last_seen = Some(fingerprint);
                pending = Some(match pending {
                    Some((first, _)) => (first, now),
                    None => (now, now),
                });
                continue;
            }
            let Some((first, last)) = pending else {
                continue;
            };
            if now.duration_since(last) < self.debounce {
                continue;
            }
            pending = None;
            let changed = self.apply(&scan);
            // What loading allocated and dropped (a file's YAML tree, a
            // rejected file's whole content) goes back to the kernel.
            crate::memory::release_free_heap();
            if !changed && !unpublished {
                continue;
            }
            // Loading may have taken long: if the directory changed meanwhile,
            // what was just loaded is already stale. Publishing it would have
            // every proxy translated for it; the newer state follows instead.
            // Only once in a row, so that a directory that changes faster than
            // it loads still gets published.
            if !unpublished && let Ok(newer) = self.scan() {
                let newer = scan_hash(&newer);
                if newer != fingerprint {
                    tracing::info!(
                        "config directory changed while loading; applying the newer state"
                    );
                    unpublished = true;
                    last_seen = Some(newer);
                    pending = Some((first, Instant::now()));
                    continue;
                }
            }
            unpublished = false;
            if updates.send(self.snapshot(first)).is_err() {
                return;
            }
        }
    }
}

/// Sleeps for `wait`, waking early when shutdown is signalled: true then.
fn sleep_until_shutdown(wait: Duration, shutdown: &watch::Receiver<bool>) -> bool {
    const SLICE: Duration = Duration::from_millis(50);
    let until = Instant::now() + wait;
    loop {
        // A dropped sender means the server is gone too.
        if shutdown.has_changed().is_err() || *shutdown.borrow() {
            return true;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(left.min(SLICE));
    }
}

fn scan_hash(scan: &Scan) -> u64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    for (path, content) in scan {
        h.update(path.as_os_str().as_encoded_bytes());
        h.update(&content_hash(content).to_le_bytes());
    }
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination:\n        host: reviews\n";

    #[test]
    fn bad_file_keeps_last_good_version() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vs.yaml");
        std::fs::write(&file, VS).unwrap();
        let mut src = DirectorySource::new(dir.path());
        let snap = src.load_now().unwrap();
        assert_eq!(snap.resources.len(), 1);
        assert_eq!(snap.error_count(), 0);

        std::fs::write(&file, "kind: VirtualService\napiVersion: networking.istio.io/v1\nmetadata: {name: x}\nspec:\n  http: [{route: [{destination: {host: a}, weight: ten}]}]\n").unwrap();
        let scan = src.scan().unwrap();
        assert!(src.apply(&scan));
        let snap = src.snapshot(Instant::now());
        assert_eq!(snap.resources.len(), 1, "last good version stays in force");
        assert_eq!(snap.resources[0].meta.name, "reviews");
        assert_eq!(snap.origins[0].state(), "error: last good version in force");
        assert!(
            snap.origins[0].errors[0].contains("weight"),
            "{:?}",
            snap.origins[0].errors
        );
    }

    #[test]
    fn deleted_file_removes_its_resources() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), VS).unwrap();
        let mut src = DirectorySource::new(dir.path());
        assert_eq!(src.load_now().unwrap().resources.len(), 1);
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        let scan = src.scan().unwrap();
        assert!(src.apply(&scan));
        assert!(src.snapshot(Instant::now()).resources.is_empty());
    }

    #[test]
    fn missing_directory_is_an_error() {
        let mut src = DirectorySource::new("/nonexistent/mesh-config");
        let err = src.load_now().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/mesh-config"), "{err}");
    }
}
