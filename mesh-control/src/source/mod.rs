//! Where configuration comes from. A [`ConfigSource`] yields
//! [`SourceSnapshot`]s: the resources it holds in force and the state of each
//! of its origins (files, later Kubernetes objects), errors included, so the
//! server never depends on how a source learns about changes: the watched
//! [`DirectorySource`] (local mode) and the [`KubernetesSource`] (an API
//! server's objects), alone or together.

mod dir;
pub mod kubernetes;
mod store;

use std::future::Future;
use std::pin::Pin;
use std::time::{Instant, SystemTime};

use mesh_api::{Resource, Skipped};
use serde::Serialize;
use tokio::sync::watch;

pub use dir::{DEFAULT_DEBOUNCE, DEFAULT_POLL_INTERVAL, DirectorySource};
pub use kubernetes::KubernetesSource;
pub use store::{ConfigStore, Snapshot};

/// A future a source runs until the server shuts down.
pub type WatchFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The first load of a source.
pub type LoadFuture<'a> =
    Pin<Box<dyn Future<Output = Result<SourceSnapshot, SourceError>> + Send + 'a>>;

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read config directory {path}")]
    Directory {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config directory {path}: not a directory")]
    NotADirectory { path: String },
    #[error("Kubernetes API server {server}: {what}")]
    Kubernetes {
        server: String,
        what: String,
        #[source]
        source: Option<kube::Error>,
    },
}

/// A provider of Istio configuration.
pub trait ConfigSource: Send + 'static {
    /// How the source names itself in logs and `/debug/configz`
    /// (`directory /etc/mesh`).
    fn describe(&self) -> String;

    /// Reads the current configuration once, before the server starts
    /// listening, so the first proxy to connect already gets it. An error here
    /// is fatal (the source cannot work at all); errors in single inputs are
    /// reported inside the snapshot instead.
    fn load(&mut self) -> LoadFuture<'_>;

    /// Watches for changes, publishing every new snapshot on `updates`, until
    /// `shutdown` turns true.
    fn watch(
        self: Box<Self>,
        updates: watch::Sender<SourceSnapshot>,
        shutdown: watch::Receiver<bool>,
    ) -> WatchFuture;
}

/// Everything one source holds in force at one moment.
#[derive(Debug, Clone)]
pub struct SourceSnapshot {
    /// [`ConfigSource::describe`] of the source.
    pub source: String,
    /// Resources in force: for every origin its last good version.
    pub resources: Vec<Resource>,
    /// Documents of kinds the mesh ignores.
    pub skipped: Vec<Skipped>,
    /// State of every origin, in name order.
    pub origins: Vec<OriginStatus>,
    /// When the change behind this snapshot was first noticed (for the
    /// convergence time metric).
    pub changed_at: Instant,
}

impl SourceSnapshot {
    /// Origins whose latest version was rejected.
    pub fn error_count(&self) -> usize {
        self.origins.iter().filter(|o| !o.errors.is_empty()).count()
    }
}

/// State of one origin (a file, a Kubernetes object) of a source.
#[derive(Debug, Clone, Serialize)]
pub struct OriginStatus {
    /// The file name, or `KIND NAMESPACE/NAME` of a Kubernetes object.
    pub name: String,
    /// Resources of this origin in force (from its last good version).
    pub resources: usize,
    /// When the version in force was loaded; `None` if no version ever loaded.
    #[serde(serialize_with = "serialize_time")]
    pub loaded_at: Option<SystemTime>,
    /// Why the latest version was rejected (empty when it is in force).
    pub errors: Vec<String>,
    /// When the latest version was rejected.
    #[serde(serialize_with = "serialize_time")]
    pub rejected_at: Option<SystemTime>,
}

impl OriginStatus {
    /// `ok` when the latest version is in force, `error (last good version in
    /// force)` or `error (nothing in force)` otherwise.
    pub fn state(&self) -> &'static str {
        match (self.errors.is_empty(), self.loaded_at.is_some()) {
            (true, _) => "ok",
            (false, true) => "error: last good version in force",
            (false, false) => "error: nothing in force",
        }
    }
}

/// The versions of one origin: the last good one, in force, and why the latest was rejected.
#[derive(Debug, Default)]
pub(crate) struct Versions {
    good: Option<GoodVersion>,
    errors: Vec<String>,
    rejected_at: Option<SystemTime>,
}

#[derive(Debug)]
struct GoodVersion {
    resources: Vec<Resource>,
    skipped: Vec<Skipped>,
    loaded_at: SystemTime,
}

impl Versions {
    /// Loads and validates a new version (a file's bytes, an object's JSON): in force if
    /// good (returns how many resources it holds), else rejected with the last good version
    /// kept and the errors logged; `what` names the origin in logs.
    pub(crate) fn load(&mut self, what: &str, name: &str, bytes: &[u8]) -> Option<usize> {
        match dir::load_file(name, bytes) {
            Ok((resources, skipped)) => {
                let count = resources.len();
                self.good = Some(GoodVersion {
                    resources,
                    skipped,
                    loaded_at: SystemTime::now(),
                });
                self.errors.clear();
                self.rejected_at = None;
                Some(count)
            }
            Err(errors) => {
                self.reject(what, name, errors);
                None
            }
        }
    }

    /// Puts in force a version that holds nothing the mesh applies, only `skipped`, which
    /// says why (as the loader does for a kind the mesh does not implement).
    pub(crate) fn skip(&mut self, skipped: Skipped) {
        self.good = Some(GoodVersion {
            resources: Vec::new(),
            skipped: vec![skipped],
            loaded_at: SystemTime::now(),
        });
        self.errors.clear();
        self.rejected_at = None;
    }

    /// What the version in force skipped.
    pub(crate) fn skipped(&self) -> &[Skipped] {
        self.good.as_ref().map_or(&[], |g| &g.skipped)
    }

    /// Rejects the latest version; the last good one stays in force.
    pub(crate) fn reject(&mut self, what: &str, name: &str, errors: Vec<String>) {
        for e in &errors {
            tracing::warn!(
                origin = %name,
                keeps_last_good = self.good.is_some(),
                "{what} rejected: {e}"
            );
        }
        self.reject_quietly(errors);
    }

    /// [`Self::reject`] for errors already logged where they happened.
    pub(crate) fn reject_quietly(&mut self, errors: Vec<String>) {
        self.errors = errors;
        self.rejected_at = Some(SystemTime::now());
    }
}

/// Builds a source's snapshot from its origins, in the order given.
pub(crate) fn snapshot_of<'a>(
    source: String,
    origins: impl IntoIterator<Item = (String, &'a Versions)>,
    changed_at: Instant,
) -> SourceSnapshot {
    let mut snapshot = SourceSnapshot {
        source,
        resources: Vec::new(),
        skipped: Vec::new(),
        origins: Vec::new(),
        changed_at,
    };
    for (name, v) in origins {
        if let Some(good) = &v.good {
            snapshot.resources.extend(good.resources.iter().cloned());
            snapshot.skipped.extend(good.skipped.iter().cloned());
        }
        snapshot.origins.push(OriginStatus {
            name,
            resources: v.good.as_ref().map_or(0, |g| g.resources.len()),
            loaded_at: v.good.as_ref().map(|g| g.loaded_at),
            errors: v.errors.clone(),
            rejected_at: v.rejected_at,
        });
    }
    snapshot
}

pub(crate) fn serialize_time<S: serde::Serializer>(
    t: &Option<SystemTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&mesh_ca::rfc3339_millis(*t)),
        None => s.serialize_none(),
    }
}
