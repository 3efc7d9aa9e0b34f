//! Wires the parts together: sources -> config store -> ADS server, plus the
//! debug listener. [`build`] binds every listener (port 0 allowed) and starts
//! serving; the returned [`Bound`] holds the real addresses and drains
//! everything on [`Bound::shutdown`] (or drop).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::ads::{AdsContext, AdsServer, SyncRegistry};
use crate::debug::DebugState;
use crate::metrics::Metrics;
use crate::source::{
    ConfigSource, ConfigStore, DEFAULT_DEBOUNCE, DEFAULT_POLL_INTERVAL, DirectorySource, Snapshot,
    SourceError,
};

/// Plaintext xDS, as istiod's 15010.
pub const DEFAULT_XDS_ADDRESS: &str = "127.0.0.1:15010";
/// Debug and metrics, as istiod's 15014.
pub const DEFAULT_DEBUG_ADDRESS: &str = "127.0.0.1:15014";
/// Quiet time before a configuration change is pushed (Istio's
/// `PILOT_DEBOUNCE_AFTER`).
pub const DEFAULT_PUSH_DEBOUNCE: Duration = Duration::from_millis(100);
/// How long shutdown waits for streams and tasks to end.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Directory of Istio YAML, watched.
    pub config_dir: PathBuf,
    pub xds_address: SocketAddr,
    pub debug_address: SocketAddr,
    /// Quiet time before a change is pushed.
    pub push_debounce: Duration,
    /// Directory scan interval.
    pub poll_interval: Duration,
    /// Quiet time before a change in the directory is read.
    pub file_debounce: Duration,
}

impl ServerConfig {
    /// The defaults, for a config directory.
    pub fn new(config_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            config_dir: config_dir.into(),
            xds_address: parse_default(DEFAULT_XDS_ADDRESS),
            debug_address: parse_default(DEFAULT_DEBUG_ADDRESS),
            push_debounce: DEFAULT_PUSH_DEBOUNCE,
            poll_interval: DEFAULT_POLL_INTERVAL,
            file_debounce: DEFAULT_DEBOUNCE,
        }
    }

    /// Every listener on 127.0.0.1 port 0 (tests).
    pub fn ephemeral(config_dir: impl Into<PathBuf>) -> ServerConfig {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        ServerConfig {
            xds_address: any,
            debug_address: any,
            ..ServerConfig::new(config_dir)
        }
    }
}

fn parse_default(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot listen on {what} address {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running control plane.
pub struct Bound {
    xds_address: SocketAddr,
    debug_address: SocketAddr,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    sync: Arc<SyncRegistry>,
    metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Binds and starts the control plane with a watched directory as its source.
pub async fn build(config: ServerConfig) -> Result<Bound, ServerError> {
    let dir = DirectorySource::new(config.config_dir.clone())
        .with_timing(config.poll_interval, config.file_debounce);
    build_with_sources(config, vec![Box::new(dir)]).await
}

/// Binds and starts the control plane with the given sources.
pub async fn build_with_sources(
    config: ServerConfig,
    sources: Vec<Box<dyn ConfigSource>>,
) -> Result<Bound, ServerError> {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::new());
    let sync = Arc::new(SyncRegistry::default());
    // Load before binding: a proxy that connects gets the configuration at once.
    let store = ConfigStore::start(
        sources,
        config.push_debounce,
        metrics.clone(),
        shutdown_rx.clone(),
    )?;
    let mut tasks = store.tasks;

    let xds = bind("xDS", config.xds_address).await?;
    let debug = bind("debug", config.debug_address).await?;
    let xds_address = local_addr("xDS", &xds, config.xds_address)?;
    let debug_address = local_addr("debug", &debug, config.debug_address)?;

    let ads = AdsServer::new(AdsContext {
        snapshots: store.snapshots.clone(),
        sync: sync.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown_rx.clone(),
        next_connection: AtomicU64::new(0),
    });
    let mut rx = shutdown_rx.clone();
    let grpc = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // Find proxies that vanished without closing their stream.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(ads.into_service())
        .serve_with_incoming_shutdown(TcpListenerStream::new(xds), async move {
            until_shutdown(&mut rx).await;
        });
    tasks.push(tokio::spawn(async move {
        if let Err(e) = grpc.await {
            tracing::error!("xDS server failed: {e}");
        }
    }));

    let debug_state = Arc::new(DebugState {
        snapshots: store.snapshots.clone(),
        sync: sync.clone(),
        metrics: metrics.clone(),
    });
    tasks.push(tokio::spawn(crate::debug::serve(
        debug,
        debug_state,
        shutdown_rx,
    )));

    Ok(Bound {
        xds_address,
        debug_address,
        snapshots: store.snapshots,
        sync,
        metrics,
        shutdown,
        tasks,
    })
}

/// Resolves once shutdown is signalled (or its sender is gone).
pub(crate) async fn until_shutdown(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it here, not in callers' select!.
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

fn local_addr(
    what: &'static str,
    l: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, ServerError> {
    l.local_addr()
        .map_err(|source| ServerError::Bind { what, addr, source })
}

impl Bound {
    pub fn xds_address(&self) -> SocketAddr {
        self.xds_address
    }

    pub fn debug_address(&self) -> SocketAddr {
        self.debug_address
    }

    /// The configuration generations, as published to every stream.
    pub fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.clone()
    }

    pub fn sync(&self) -> &SyncRegistry {
        &self.sync
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Stops accepting, ends every ADS stream (proxies keep their last
    /// configuration and reconnect), and waits for the tasks to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let tasks = std::mem::take(&mut self.tasks);
        let all = futures::future::join_all(tasks);
        if tokio::time::timeout(DRAIN_TIMEOUT, all).await.is_err() {
            tracing::warn!("drain timed out after {DRAIN_TIMEOUT:?}");
        }
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
