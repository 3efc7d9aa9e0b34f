//! The ADS client: the proxy's link to the control plane named by the
//! bootstrap's `dynamic_resources.ads_config` (aggregated, state of the
//! world, xDS v3).
//!
//! ```text
//! bootstrap --AdsClientConfig::from_bootstrap--> spawn(config, proxy) -> AdsClient
//!   loop: connect (backoff 100 ms .. 5 s, jittered)
//!         stream: CDS + LDS wildcard, then EDS/RDS for the names they refer to
//!         response --state::prepare/servable--> ConfigSink::apply (Proxy::update_xds)
//!                  --> ACK (version + nonce) or NACK (previous version + reason)
//!   stream lost: the runtime keeps the snapshot in force; on reconnect the
//!   held versions are sent again and the server resends everything.
//! ```
//!
//! The protocol logic lives in [`state`] without I/O; [`client`] runs it on
//! a tonic stream; [`ConfigSink`] is where snapshots go, so the client can be
//! tested against a scripted ADS server without a proxy.
//!
//! The transport follows the ADS cluster as Envoy reads it: plaintext h2
//! (the control plane's 15010), or, when the cluster has an
//! `UpstreamTlsContext` `transport_socket`, TLS set up by the proxy's own
//! TLS layer ([`crate::tls::TlsContexts`], the verifier every upstream
//! uses: `trusted_ca`, `match_subject_alt_names`, ALPN, SNI) to the secure
//! port (15012). When the context names no client certificate but the
//! proxy has a workload identity (the local `default` secret its identity
//! manager installs), that certificate is presented, so the control plane
//! knows the stream by certificate as well as by the bearer token the
//! bootstrap puts in `grpc_services[0].initial_metadata`. Every connection
//! builds its TLS configuration from the secrets in force, so a rotated
//! certificate is used from the next reconnect on.

pub mod backoff;
pub mod client;
pub mod resources;
pub mod state;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bootstrap::{BootstrapConfig, GrpcMetadata};
use crate::model::{Discovery, Snapshot, UpstreamProtocol, UpstreamTls};
use crate::server::Proxy;
use crate::tls::{SecretStore, UpstreamTlsStats};
use crate::xds::resources::XdsResources;

pub use backoff::{Backoff, DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX};
pub use state::{DEFAULT_WARMING_TIMEOUT, ResourceType};

/// How long a connection attempt to the control plane may take when the
/// ADS cluster sets no `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How the client reaches the control plane.
#[derive(Debug, Clone)]
pub enum XdsTransport {
    /// h2 over plain TCP (the control plane's 15010).
    Plaintext,
    /// h2 over TLS (the control plane's 15012), as the ADS cluster's
    /// `UpstreamTlsContext` says.
    Tls(Box<UpstreamTls>),
}

impl XdsTransport {
    pub fn is_tls(&self) -> bool {
        matches!(self, XdsTransport::Tls(_))
    }
}

/// Everything the client needs, taken from the bootstrap.
#[derive(Debug, Clone)]
pub struct AdsClientConfig {
    /// Sent on the first request of every stream (and on every request
    /// unless `set_node_on_first_message_only`).
    pub node: Node,
    pub set_node_on_first_message_only: bool,
    /// The ADS cluster's name (for logs) and its endpoints, tried in turn.
    pub cluster: String,
    pub servers: Vec<SocketAddr>,
    pub transport: XdsTransport,
    /// `grpc_services[0].initial_metadata`, sent on every stream (the
    /// bearer token of the secure port).
    pub initial_metadata: Vec<GrpcMetadata>,
    /// Where the TLS transport finds SDS-named material and the workload
    /// certificate it presents (the proxy's store; [`start`] sets it).
    pub secrets: Arc<SecretStore>,
    /// `cluster.<ads cluster>.ssl.*` counters of the TLS transport.
    pub tls_stats: UpstreamTlsStats,
    pub connect_timeout: Duration,
    /// Whether clusters and listeners come from ADS (`cds_config` /
    /// `lds_config` set to `ads: {}`).
    pub cds: bool,
    pub lds: bool,
    /// The bootstrap's static resources, merged under every dynamic set.
    pub static_snapshot: Snapshot,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub warming_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum XdsConfigError {
    #[error("dynamic_resources.ads_config: cluster {0:?} is not a static cluster of the bootstrap")]
    UnknownCluster(String),
    #[error(
        "dynamic_resources.ads_config: cluster {0:?} must be STATIC (its endpoints cannot come from xDS)"
    )]
    NotStatic(String),
    #[error("dynamic_resources.ads_config: cluster {0:?} has no endpoints")]
    NoEndpoints(String),
    #[error(
        "dynamic_resources.ads_config: cluster {0:?}: transport_socket_matches are not supported on the ADS cluster (use transport_socket)"
    )]
    TransportSocketMatches(String),
}

impl AdsClientConfig {
    /// The client's configuration for a bootstrap with
    /// `dynamic_resources.ads_config`; `Ok(None)` without one.
    pub fn from_bootstrap(b: &BootstrapConfig) -> Result<Option<AdsClientConfig>, XdsConfigError> {
        let Some(ads) = &b.ads else {
            return Ok(None);
        };
        let cluster = b
            .snapshot
            .clusters
            .get(&ads.cluster)
            .ok_or_else(|| XdsConfigError::UnknownCluster(ads.cluster.clone()))?;
        let Discovery::Static(set) = &cluster.discovery else {
            return Err(XdsConfigError::NotStatic(ads.cluster.clone()));
        };
        if !cluster.transport_socket_matches.is_empty() {
            return Err(XdsConfigError::TransportSocketMatches(ads.cluster.clone()));
        }
        let transport = match &cluster.tls {
            None => XdsTransport::Plaintext,
            Some(tls) => {
                if tls.trusted_ca.is_none() {
                    // Envoy's behaviour without a validation context, kept;
                    // but anyone on the path could then feed the proxy config.
                    tracing::warn!(cluster = %ads.cluster, "ADS over TLS without trusted_ca: the control plane's certificate is not verified");
                }
                XdsTransport::Tls(Box::new(tls.clone()))
            }
        };
        if cluster.protocol != UpstreamProtocol::Http2 {
            // gRPC needs h2; Envoy insists on http2_protocol_options for
            // the ADS cluster, the client speaks h2 regardless.
            tracing::info!(cluster = %ads.cluster, "ADS cluster is not marked HTTP/2; using h2 anyway");
        }
        let servers: Vec<SocketAddr> = set.endpoints().map(|e| e.address).collect();
        if servers.is_empty() {
            return Err(XdsConfigError::NoEndpoints(ads.cluster.clone()));
        }
        Ok(Some(AdsClientConfig {
            node: b.node.proto.clone(),
            set_node_on_first_message_only: ads.set_node_on_first_message_only,
            cluster: ads.cluster.clone(),
            servers,
            transport,
            initial_metadata: ads.initial_metadata.clone(),
            secrets: Arc::new(SecretStore::new()),
            tls_stats: UpstreamTlsStats::default(),
            connect_timeout: if cluster.connect_timeout.is_zero() {
                DEFAULT_CONNECT_TIMEOUT
            } else {
                cluster.connect_timeout
            },
            cds: ads.cds,
            lds: ads.lds,
            static_snapshot: b.snapshot.clone(),
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
            warming_timeout: DEFAULT_WARMING_TIMEOUT,
        }))
    }
}

/// Where accepted configuration goes. An error is the reason of the NACK
/// (e.g. a listener address that cannot be bound).
pub trait ConfigSink: Send + Sync + 'static {
    fn apply(
        &self,
        snapshot: Snapshot,
        resources: XdsResources,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

impl ConfigSink for Proxy {
    async fn apply(&self, snapshot: Snapshot, resources: XdsResources) -> Result<(), String> {
        self.update_xds(snapshot, resources)
            .await
            .map_err(|e| e.to_string())
    }
}

/// What the client is doing, for tests, logs and admin pages.
#[derive(Debug, Clone, Default)]
pub struct AdsStatus {
    /// A stream to the control plane is open.
    pub connected: bool,
    /// Streams opened so far.
    pub streams: u64,
    /// Accepted `version_info` per type (`CDS`, `EDS`, `LDS`, `RDS`).
    pub versions: BTreeMap<&'static str, String>,
    pub acks: u64,
    pub nacks: u64,
    /// The reason of the last NACK sent.
    pub last_nack: Option<String>,
    /// Snapshots handed to the runtime.
    pub applied: u64,
    /// The last connection or stream error.
    pub last_error: Option<String>,
    /// Resources held back while they warm.
    pub warming: Vec<String>,
}

/// A running client; dropping it stops the client (the proxy keeps the
/// configuration in force).
#[derive(Debug)]
pub struct AdsClient {
    task: JoinHandle<()>,
    status: watch::Receiver<AdsStatus>,
}

impl AdsClient {
    pub fn status(&self) -> AdsStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch(&self) -> watch::Receiver<AdsStatus> {
        self.status.clone()
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for AdsClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the client, feeding `sink` (normally the [`Proxy`]).
pub fn spawn<S: ConfigSink>(config: AdsClientConfig, sink: S) -> AdsClient {
    let (tx, rx) = watch::channel(AdsStatus::default());
    let task = tokio::spawn(client::run(config, sink, tx));
    AdsClient { task, status: rx }
}

/// The binary's entry: starts the ADS client for `proxy` when the
/// bootstrap has `dynamic_resources.ads_config` (`Ok(None)` otherwise).
/// Keep the returned client alive as long as the proxy runs.
pub fn start(
    bootstrap: &BootstrapConfig,
    proxy: &Proxy,
) -> Result<Option<AdsClient>, XdsConfigError> {
    Ok(AdsClientConfig::from_bootstrap(bootstrap)?.map(|config| start_client(config, proxy)))
}

/// [`start`] for a configuration taken from the bootstrap beforehand, so
/// that the bootstrap need not be kept until the proxy is built.
pub fn start_client(mut config: AdsClientConfig, proxy: &Proxy) -> AdsClient {
    config.secrets = proxy.secrets().clone();
    config.tls_stats = UpstreamTlsStats::new(proxy.stats(), &config.cluster);
    // Envoy's initialization: clusters, then listeners, from the control
    // plane before the server is LIVE.
    let last_type = if config.lds {
        Some("LDS")
    } else if config.cds {
        Some("CDS")
    } else {
        None
    };
    let client = spawn(config, proxy.clone());
    if let Some(last_type) = last_type {
        proxy.set_live(false);
        let (proxy, mut status) = (proxy.clone(), client.watch());
        tokio::spawn(async move {
            if status
                .wait_for(|s| s.versions.contains_key(last_type))
                .await
                .is_ok()
            {
                proxy.set_live(true);
                tracing::info!("initial configuration from the control plane applied: LIVE");
            }
        });
    }
    client
}
