//! Wires the parts together: sources -> config store -> ADS server (on the
//! plaintext port and, with the CA and secrets, on the TLS port), plus the
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

use mesh_ca::{CaService, CertificateAuthority, DEFAULT_TRUST_DOMAIN};

use crate::ads::{AdsContext, AdsServer, SecretAuthority, SecretCache, SyncRegistry};
use crate::debug::DebugState;
use crate::metrics::Metrics;
use crate::secure::{DEFAULT_SECURE_XDS_ADDRESS, SecureError};
use crate::source::{
    ConfigSource, ConfigStore, DEFAULT_DEBOUNCE, DEFAULT_POLL_INTERVAL, DirectorySource, Snapshot,
    SourceError,
};
use crate::token_review::TokenReviewAuthenticator;

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
    /// The TLS port (CSR service, ADS and SDS); `None` turns it, the CA and
    /// SDS off.
    pub secure_xds_address: Option<SocketAddr>,
    /// The CA's directory (Istio's plugged-in layout, or where a generated
    /// root is kept); `None`: a root generated in memory for this run.
    pub ca_dir: Option<PathBuf>,
    /// Trust domain of every identity (`cluster.local` by default).
    pub trust_domain: String,
    /// Bearer tokens (`TOKEN NAMESPACE SERVICE_ACCOUNT` per line).
    pub ca_tokens: Option<PathBuf>,
    /// Kubernetes service-account tokens, checked by the API server's TokenReview.
    pub token_review: Option<TokenReviewAuthenticator>,
    /// The CA's root in the cluster's Secrets and published to its namespaces (unless
    /// `ca_dir` is set).
    pub kubernetes_ca: Option<KubernetesCa>,
    /// Longest certificate lifetime the CA grants.
    pub max_cert_ttl: Duration,
    /// Lifetime of certificates delivered over SDS; `None`: the CA's default (24 h).
    pub sds_cert_ttl: Option<Duration>,
    /// Lifetime of the control plane's own certificate; `None`: the CA's default.
    pub serving_cert_ttl: Option<Duration>,
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
            secure_xds_address: Some(parse_default(DEFAULT_SECURE_XDS_ADDRESS)),
            ca_dir: None,
            trust_domain: DEFAULT_TRUST_DOMAIN.to_string(),
            ca_tokens: None,
            token_review: None,
            kubernetes_ca: None,
            max_cert_ttl: mesh_ca::authority::DEFAULT_MAX_WORKLOAD_CERT_TTL,
            sds_cert_ttl: None,
            serving_cert_ttl: None,
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
            secure_xds_address: Some(any),
            ..ServerConfig::new(config_dir)
        }
    }
}

fn parse_default(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Where the CA keeps its root in Kubernetes mode, and who this replica is.
#[derive(Clone)]
pub struct KubernetesCa {
    pub client: kube::Client,
    /// The control plane's namespace (`istio-system`): its Secrets and Lease.
    pub namespace: String,
    /// This replica's name in the Lease (its pod name).
    pub identity: String,
    pub lease: crate::kube_ca::LeaseTiming,
}

impl std::fmt::Debug for KubernetesCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesCa")
            .field("namespace", &self.namespace)
            .field("identity", &self.identity)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Secure(#[from] SecureError),
    #[error("the CA on Kubernetes")]
    KubernetesCa(#[from] crate::kube_ca::KubeCaError),
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
    secure_xds_address: Option<SocketAddr>,
    ca: Option<Arc<CertificateAuthority>>,
    serving: Option<Arc<crate::secure::ServingCertificate>>,
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
    // The CA and the tokens first: a bad CA directory or token file stops
    // the start before anything listens.
    let secure_parts = match config.secure_xds_address {
        None => None,
        Some(_) => {
            if let Some(ttl) = config.sds_cert_ttl
                && ttl > config.max_cert_ttl
            {
                return Err(SecureError::WorkloadTtl {
                    ttl,
                    max: config.max_cert_ttl,
                }
                .into());
            }
            let ca = match (&config.kubernetes_ca, &config.ca_dir) {
                (Some(k), None) => {
                    let ca_config =
                        crate::secure::ca_config(&config.trust_domain, config.max_cert_ttl);
                    crate::kube_ca::load_ca(&k.client, &k.namespace, ca_config).await?
                }
                _ => crate::secure::load_ca(
                    config.ca_dir.as_deref(),
                    &config.trust_domain,
                    config.max_cert_ttl,
                )
                .map_err(SecureError::from)?,
            };
            let auth = crate::secure::authenticator(
                config.ca_tokens.as_ref(),
                config.token_review.clone(),
                &config.trust_domain,
            )
            .map_err(SecureError::from)?;
            Some((Arc::new(ca), Arc::new(auth)))
        }
    };
    // Load before binding: a proxy that connects gets the configuration at once.
    let store = ConfigStore::start(
        sources,
        config.push_debounce,
        config.trust_domain.clone(),
        metrics.clone(),
        shutdown_rx.clone(),
    )
    .await?;
    let mut tasks = store.tasks;

    let xds = bind("xDS", config.xds_address).await?;
    let debug = bind("debug", config.debug_address).await?;
    let xds_address = local_addr("xDS", &xds, config.xds_address)?;
    let debug_address = local_addr("debug", &debug, config.debug_address)?;
    let secure = match config.secure_xds_address {
        Some(addr) => {
            let l = bind("secure xDS", addr).await?;
            let bound = local_addr("secure xDS", &l, addr)?;
            Some((l, bound))
        }
        None => None,
    };

    let ctx = Arc::new(AdsContext {
        snapshots: store.snapshots.clone(),
        sync: sync.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown_rx.clone(),
        next_connection: AtomicU64::new(0),
    });
    let ads = AdsServer::new(ctx.clone());
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

    let mut secure_xds_address = None;
    let mut ca = None;
    let mut serving = None;
    if let (Some((listener, addr)), Some((authority, auth))) = (secure, secure_parts) {
        let tls = crate::secure::listen(
            listener,
            &authority,
            config.serving_cert_ttl,
            shutdown_rx.clone(),
        )?;
        tasks.push(tls.renewal);
        if let Some(k) = &config.kubernetes_ca {
            tasks.push(tokio::spawn(crate::kube_ca::publish_root(
                k.client.clone(),
                k.namespace.clone(),
                k.identity.clone(),
                authority.trust_bundle().to_pem(),
                k.lease,
                shutdown_rx.clone(),
            )));
            tasks.push(tokio::spawn(crate::kube_ca::watch_plugged_in(
                k.client.clone(),
                k.namespace.clone(),
                authority.pems().ca_cert,
                shutdown_rx.clone(),
            )));
        }
        let secrets = Arc::new(SecretAuthority {
            authenticator: auth.clone(),
            cache: Arc::new(SecretCache::new(
                authority.clone(),
                config.sds_cert_ttl,
                metrics.clone(),
            )),
        });
        let csr = CaService::new(authority.clone(), auth).into_server();
        let ads = AdsServer::secure(ctx.clone(), secrets);
        let mut rx = shutdown_rx.clone();
        let grpc = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(csr)
            .add_service(ads.into_service())
            .serve_with_incoming_shutdown(tls.incoming, async move {
                until_shutdown(&mut rx).await;
            });
        tasks.push(tokio::spawn(async move {
            if let Err(e) = grpc.await {
                tracing::error!("secure xDS server failed: {e}");
            }
        }));
        secure_xds_address = Some(addr);
        ca = Some(authority);
        serving = Some(tls.serving);
    }

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
        secure_xds_address,
        ca,
        serving,
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

    /// The TLS port (CSR service, ADS, SDS), unless it is off.
    pub fn secure_xds_address(&self) -> Option<SocketAddr> {
        self.secure_xds_address
    }

    /// The mesh CA, when the secure port is on.
    pub fn certificate_authority(&self) -> Option<&Arc<CertificateAuthority>> {
        self.ca.as_ref()
    }

    /// The control plane's serving certificate in force on the secure port.
    pub fn serving_identity(&self) -> Option<Arc<mesh_ca::IssuedIdentity>> {
        self.serving.as_ref().map(|s| s.identity())
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
