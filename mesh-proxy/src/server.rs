//! Building and running the proxy: binds the admin and traffic listeners,
//! holds the configuration in force, and applies new snapshots.
//!
//! ```text
//! build(ProxyConfig) --> Bound { proxy, admin_addr, listeners }
//! proxy.update(Snapshot): bind new listeners, swap Active, stop removed ones
//! each request: shared.active.load_full() -> the Active it keeps to the end
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

use crate::access_log::AccessLogWriter;
use crate::bootstrap::{BootstrapConfig, NodeInfo};
use crate::logging::LogControl;
use crate::model::Snapshot;
use crate::stats::{Scope, Stats};
use crate::upstream::cluster::{ClusterMap, build_clusters};
use crate::xds::resources::{Encoded, XdsResources};

/// The bootstrap as read, for `/config_dump`.
#[derive(Debug, Clone)]
pub struct BootstrapSource {
    pub encoded: Encoded<Bootstrap>,
    pub static_resources: XdsResources,
    pub loaded_at: SystemTime,
}

/// What `build` needs.
#[derive(Debug)]
pub struct ProxyConfig {
    pub snapshot: Snapshot,
    /// The admin listener (Envoy's `admin.address`); `None` runs without.
    pub admin_address: Option<SocketAddr>,
    pub node: NodeInfo,
    /// The bootstrap behind `snapshot`; without it `/config_dump` shows a
    /// summary of the compiled snapshot.
    pub bootstrap: Option<BootstrapSource>,
    /// Runtime log levels; a detached control when the caller installed no
    /// reloadable subscriber.
    pub logging: Option<Arc<LogControl>>,
    /// The global downstream connection limit; `None`: unlimited.
    pub max_downstream_connections: Option<u64>,
    /// Who sees local reply details (`x-mesh-reason`).
    pub reason_header: crate::http::reason_header::ReasonHeader,
}

impl ProxyConfig {
    /// A proxy for a snapshot built in code (tests, embedding).
    pub fn new(snapshot: Snapshot) -> ProxyConfig {
        ProxyConfig {
            snapshot,
            admin_address: None,
            node: NodeInfo::default(),
            bootstrap: None,
            logging: None,
            max_downstream_connections: None,
            reason_header: Default::default(),
        }
    }

    /// A proxy for a loaded bootstrap file.
    pub fn from_bootstrap(b: BootstrapConfig) -> ProxyConfig {
        ProxyConfig {
            snapshot: b.snapshot,
            admin_address: b.admin_address,
            node: b.node,
            bootstrap: Some(BootstrapSource {
                encoded: b.encoded,
                static_resources: b.static_resources,
                loaded_at: b.loaded_at,
            }),
            logging: None,
            max_downstream_connections: b.max_downstream_connections,
            reason_header: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("listener \"{name}\": cannot bind {address}: {source}")]
    Bind {
        name: String,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("admin listener: cannot bind {address}: {source}")]
    AdminBind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The configuration in force: a snapshot and the cluster runtimes built
/// for it. Requests hold the `Arc<Active>` they started with.
#[derive(Debug)]
pub struct Active {
    pub snapshot: Arc<Snapshot>,
    pub clusters: ClusterMap,
    pub version: u64,
    pub applied_at: SystemTime,
    /// The xDS resources behind `snapshot` as received, for `/config_dump`
    /// (`None` when running from static resources only).
    pub dynamic_resources: Option<Arc<XdsResources>>,
}

struct RunningListener {
    configured: SocketAddr,
    local: SocketAddr,
    task: JoinHandle<()>,
}

/// State shared by every task of one proxy.
pub struct Shared {
    pub active: ArcSwap<Active>,
    pub stats: Stats,
    pub logging: Arc<LogControl>,
    pub access_logs: AccessLogWriter,
    pub node: NodeInfo,
    pub bootstrap: Option<BootstrapSource>,
    pub started: Instant,
    pub shutdown: watch::Sender<bool>,
    /// TLS secrets in force (snapshot's and local), read at each handshake.
    pub secrets: Arc<crate::tls::SecretStore>,
    /// rustls configurations derived from `secrets`.
    pub tls: Arc<crate::tls::TlsContexts>,
    /// Downstream connections of every listener but those with
    /// `ignore_global_conn_limit`, against the global limit.
    pub connection_limit: Option<Arc<crate::overload::ConnectionLimit>>,
    pub reason_header: crate::http::reason_header::ReasonHeader,
    /// Waiting for the control plane's first configuration (Envoy's
    /// `INITIALIZING`): `/ready` answers 503 until it is applied, so that
    /// a proxy restarted while the control plane is away says it serves
    /// nothing rather than refusing connections unexplained.
    initializing: std::sync::atomic::AtomicBool,
    listeners: tokio::sync::Mutex<BTreeMap<String, RunningListener>>,
    listener_addrs: std::sync::Mutex<BTreeMap<String, SocketAddr>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// `LIVE`, or `INITIALIZING` until the first configuration from the
    /// control plane is applied.
    pub fn state(&self) -> &'static str {
        if self.initializing.load(std::sync::atomic::Ordering::Acquire) {
            "INITIALIZING"
        } else {
            "LIVE"
        }
    }

    pub fn request_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    pub fn listener_addrs(&self) -> BTreeMap<String, SocketAddr> {
        self.listener_addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Resolves once shutdown is requested; the watch guard never outlives it.
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Stops everything when the last [`Proxy`] handle goes away.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.request_shutdown();
    }
}

/// A handle on a running proxy.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
    _stop: Arc<StopOnDrop>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

/// A built proxy and the addresses it really bound (port 0 resolved).
#[derive(Debug)]
pub struct Bound {
    pub proxy: Proxy,
    pub admin_addr: Option<SocketAddr>,
    pub listeners: BTreeMap<String, SocketAddr>,
}

impl Bound {
    /// The bound address of a listener by name.
    pub fn listener(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.get(name).copied()
    }
}

/// Binds every listener and the admin endpoint, and starts serving.
pub async fn build(config: ProxyConfig) -> Result<Bound, BuildError> {
    let (shutdown, _) = watch::channel(false);
    let stats = Stats::default();
    let secrets = Arc::new(crate::tls::SecretStore::new());
    secrets.set_snapshot_secrets(&config.snapshot.secrets);
    let tls = Arc::new(crate::tls::TlsContexts::new(secrets.clone()));
    let clusters = build_clusters(&config.snapshot, &ClusterMap::new(), &stats, &tls);
    let shared = Arc::new(Shared {
        active: ArcSwap::from_pointee(Active {
            snapshot: Arc::new(config.snapshot),
            clusters,
            version: 1,
            applied_at: SystemTime::now(),
            dynamic_resources: None,
        }),
        stats,
        logging: config
            .logging
            .unwrap_or_else(|| Arc::new(LogControl::detached())),
        access_logs: AccessLogWriter::default(),
        node: config.node,
        bootstrap: config.bootstrap,
        started: Instant::now(),
        shutdown,
        secrets,
        tls,
        connection_limit: config
            .max_downstream_connections
            .map(crate::overload::ConnectionLimit::new),
        reason_header: config.reason_header,
        initializing: std::sync::atomic::AtomicBool::new(false),
        listeners: tokio::sync::Mutex::new(BTreeMap::new()),
        listener_addrs: std::sync::Mutex::new(BTreeMap::new()),
    });
    let proxy = Proxy {
        shared: shared.clone(),
        _stop: Arc::new(StopOnDrop(shared.clone())),
    };

    let admin_addr = match config.admin_address {
        Some(address) => {
            let listener = TcpListener::bind(address)
                .await
                .map_err(|source| BuildError::AdminBind { address, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| BuildError::AdminBind { address, source })?;
            tokio::spawn(crate::admin::serve(shared.clone(), listener));
            Some(local)
        }
        None => None,
    };

    let snapshot = shared.active.load().snapshot.clone();
    proxy.sync_listeners(&snapshot).await?;
    let listeners = shared.listener_addrs();
    Ok(Bound {
        proxy,
        admin_addr,
        listeners,
    })
}

impl Proxy {
    /// Marks the proxy `INITIALIZING` (`live: false`) or `LIVE`.
    pub fn set_live(&self, live: bool) {
        self.shared
            .initializing
            .store(!live, std::sync::atomic::Ordering::Release);
    }

    /// `LIVE` or `INITIALIZING`, as `/ready` says.
    pub fn state(&self) -> &'static str {
        self.shared.state()
    }

    /// Applies a new snapshot: listeners that are new (or moved) are bound
    /// first, so a bind failure leaves the old configuration in force;
    /// then the snapshot is swapped whole and removed listeners stop
    /// accepting. Connections and requests in flight finish on the
    /// configuration they started with.
    pub async fn update(&self, snapshot: Snapshot) -> Result<(), BuildError> {
        let dynamic = self.shared.active.load().dynamic_resources.clone();
        let snapshot = Arc::new(snapshot);
        self.sync_listeners_inner(&snapshot.clone(), Some((snapshot, dynamic)))
            .await
    }

    /// [`Self::update`] for the xDS client: the compiled snapshot and the
    /// resources it came from (shown by `/config_dump`) swap together.
    pub async fn update_xds(
        &self,
        snapshot: Snapshot,
        resources: XdsResources,
    ) -> Result<(), BuildError> {
        let snapshot = Arc::new(snapshot);
        self.sync_listeners_inner(
            &snapshot.clone(),
            Some((snapshot, Some(Arc::new(resources)))),
        )
        .await
    }

    async fn sync_listeners(&self, snapshot: &Arc<Snapshot>) -> Result<(), BuildError> {
        self.sync_listeners_inner(snapshot, None).await
    }

    async fn sync_listeners_inner(
        &self,
        snapshot: &Arc<Snapshot>,
        swap: Option<(Arc<Snapshot>, Option<Arc<XdsResources>>)>,
    ) -> Result<(), BuildError> {
        let shared = &self.shared;
        let mut running = shared.listeners.lock().await;
        let mut fresh = Vec::new();
        for (name, l) in &snapshot.listeners {
            if !l.bind_to_port {
                continue;
            }
            if running.get(name).is_some_and(|r| r.configured == l.address) {
                continue;
            }
            let listener =
                TcpListener::bind(l.address)
                    .await
                    .map_err(|source| BuildError::Bind {
                        name: name.clone(),
                        address: l.address,
                        source,
                    })?;
            let local = listener.local_addr().map_err(|source| BuildError::Bind {
                name: name.clone(),
                address: l.address,
                source,
            })?;
            fresh.push((name.clone(), l.address, local, listener));
        }
        if let Some((snapshot, dynamic_resources)) = swap {
            let old = shared.active.load_full();
            shared.secrets.set_snapshot_secrets(&snapshot.secrets);
            let clusters = build_clusters(&snapshot, &old.clusters, &shared.stats, &shared.tls);
            // A removed cluster's stats go with it, as in Envoy: a mesh whose
            // services come and go would otherwise grow its registry forever.
            for gone in old.clusters.keys().filter(|n| !clusters.contains_key(*n)) {
                shared.stats.remove_scope(&Scope::cluster(gone));
            }
            shared.active.store(Arc::new(Active {
                snapshot,
                clusters,
                version: old.version + 1,
                applied_at: SystemTime::now(),
                dynamic_resources,
            }));
        }
        let keep: Vec<String> = running
            .iter()
            .filter(|(name, r)| {
                snapshot
                    .listeners
                    .get(*name)
                    .is_some_and(|l| l.bind_to_port && l.address == r.configured)
            })
            .map(|(name, _)| name.clone())
            .collect();
        let stale: Vec<String> = running
            .keys()
            .filter(|n| !keep.contains(n))
            .cloned()
            .collect();
        for name in stale {
            if let Some(r) = running.remove(&name) {
                r.task.abort();
                tracing::info!(listener = %name, address = %r.local, "listener stopped");
            }
        }
        for (name, configured, local, listener) in fresh {
            let task = tokio::spawn(crate::listener::accept_loop(
                shared.clone(),
                name.clone(),
                listener,
            ));
            tracing::info!(listener = %name, address = %local, "listener started");
            running.insert(
                name,
                RunningListener {
                    configured,
                    local,
                    task,
                },
            );
        }
        let addrs = running.iter().map(|(n, r)| (n.clone(), r.local)).collect();
        *shared
            .listener_addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = addrs;
        Ok(())
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.active.load().snapshot.clone()
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The TLS secrets in force; the identity manager installs the
    /// workload's `default` and `ROOTCA` here with `set_local`.
    pub fn secrets(&self) -> &Arc<crate::tls::SecretStore> {
        &self.shared.secrets
    }

    pub fn listener_addrs(&self) -> BTreeMap<String, SocketAddr> {
        self.shared.listener_addrs()
    }

    pub fn shutdown(&self) {
        self.shared.request_shutdown();
    }

    /// Resolves once shutdown was requested (`/quitquitquit` or [`Self::shutdown`]).
    pub async fn stopped(&self) {
        stopped(&mut self.shared.shutdown.subscribe()).await;
    }
}
