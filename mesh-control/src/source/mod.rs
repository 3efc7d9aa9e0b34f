//! Where configuration comes from. A [`ConfigSource`] yields
//! [`SourceSnapshot`]s: the resources it holds in force and the state of each
//! of its origins (files, later Kubernetes objects), errors included, so the
//! server never depends on how a source learns about changes. Today there is
//! one source, the watched [`DirectorySource`]; the Kubernetes watchers plug in
//! behind the same trait.

mod dir;
mod store;

use std::future::Future;
use std::pin::Pin;
use std::time::{Instant, SystemTime};

use mesh_api::{Resource, Skipped};
use serde::Serialize;
use tokio::sync::watch;

pub use dir::{DEFAULT_DEBOUNCE, DEFAULT_POLL_INTERVAL, DirectorySource};
pub use store::{ConfigStore, Snapshot};

/// A future a source runs until the server shuts down.
pub type WatchFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

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
    fn load(&mut self) -> Result<SourceSnapshot, SourceError>;

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

/// State of one origin (a file) of a source.
#[derive(Debug, Clone, Serialize)]
pub struct OriginStatus {
    /// The file name.
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

pub(crate) fn serialize_time<S: serde::Serializer>(
    t: &Option<SystemTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&mesh_ca::rfc3339_millis(*t)),
        None => s.serialize_none(),
    }
}
