//! The Aggregated Discovery Service, state of the world.
//!
//! One task per stream ([`connection`]): the first request's `Node` says who
//! the proxy is; every configuration [`Snapshot`](crate::source::Snapshot) is
//! translated for it, and the types it subscribed to are sent when their
//! content changed, in the order CDS, EDS, LDS, RDS, so a proxy never holds a
//! route to a cluster it does not know yet. Versions and nonces are per type;
//! ACKs and NACKs land in the [`SyncRegistry`] read by `/debug/syncz`.
//!
//! The same server runs on two ports over one shared state: the plaintext
//! port (15010) serves configuration only; the secure port (15012, TLS)
//! also serves `Secret`s ([`sds`]) to streams that authenticated with a
//! bearer token or a mesh client certificate. A `Secret` subscription on the
//! plaintext port, or from an unauthenticated stream, ends the stream with
//! `PERMISSION_DENIED` / `UNAUTHENTICATED` and the reason.

mod connection;
pub mod sds;
pub mod status;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub use sds::{SecretAuthority, SecretCache};
pub use status::{Nack, ProxyStatus, SyncRegistry, TypeStatus};

use crate::metrics::Metrics;
use crate::source::Snapshot;

/// The xDS types the server serves, in push order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XdsType {
    Cluster,
    Endpoint,
    Listener,
    Route,
    /// SDS over ADS, secure port only.
    Secret,
}

impl XdsType {
    /// Clusters before their endpoints, listeners before their routes (as
    /// Istio, secrets last: Envoy asks for them once clusters and listeners
    /// name them).
    pub const PUSH_ORDER: [XdsType; 5] = [
        XdsType::Cluster,
        XdsType::Endpoint,
        XdsType::Listener,
        XdsType::Route,
        XdsType::Secret,
    ];

    /// The configuration types every proxy is shown with in `/debug/syncz`
    /// (secrets appear once a stream subscribes to them).
    pub const CONFIG: [XdsType; 4] = [
        XdsType::Cluster,
        XdsType::Endpoint,
        XdsType::Listener,
        XdsType::Route,
    ];

    pub fn type_url(self) -> &'static str {
        match self {
            XdsType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            XdsType::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            XdsType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            XdsType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            XdsType::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
        }
    }

    pub fn from_type_url(url: &str) -> Option<XdsType> {
        XdsType::PUSH_ORDER
            .into_iter()
            .find(|t| t.type_url() == url)
    }

    /// `cds`, `eds`, `lds`, `rds`, `sds`: metric labels and `/debug/syncz` keys.
    pub fn label(self) -> &'static str {
        match self {
            XdsType::Cluster => "cds",
            XdsType::Endpoint => "eds",
            XdsType::Listener => "lds",
            XdsType::Route => "rds",
            XdsType::Secret => "sds",
        }
    }

    /// The prefix of Istio's flat syncz fields (`cluster_sent`, ...).
    pub fn istio_name(self) -> &'static str {
        match self {
            XdsType::Cluster => "cluster",
            XdsType::Endpoint => "endpoint",
            XdsType::Listener => "listener",
            XdsType::Route => "route",
            XdsType::Secret => "secret",
        }
    }

    /// CDS and LDS subscriptions cover every resource; EDS and RDS name theirs.
    pub fn is_wildcard(self) -> bool {
        matches!(self, XdsType::Cluster | XdsType::Listener)
    }
}

/// What every stream shares.
pub(crate) struct AdsContext {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub sync: Arc<SyncRegistry>,
    pub metrics: Arc<Metrics>,
    pub shutdown: watch::Receiver<bool>,
    pub next_connection: AtomicU64,
}

/// Which port a stream came in on.
#[derive(Clone)]
pub(crate) enum Port {
    /// 15010: configuration only.
    Plaintext,
    /// 15012: TLS; secrets for authenticated streams.
    Secure(Arc<SecretAuthority>),
}

/// The tonic service.
pub struct AdsServer {
    ctx: Arc<AdsContext>,
    port: Port,
}

impl AdsServer {
    /// The plaintext port's server.
    pub(crate) fn new(ctx: Arc<AdsContext>) -> AdsServer {
        AdsServer {
            ctx,
            port: Port::Plaintext,
        }
    }

    /// The secure port's server, over the same state as the plaintext one.
    pub(crate) fn secure(ctx: Arc<AdsContext>, secrets: Arc<SecretAuthority>) -> AdsServer {
        AdsServer {
            ctx,
            port: Port::Secure(secrets),
        }
    }

    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<AdsServer> {
        AggregatedDiscoveryServiceServer::new(self)
            // Large meshes produce large CDS responses.
            .max_encoding_message_size(64 << 20)
            .max_decoding_message_size(16 << 20)
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        // Token and verified client certificate (TLS port), and the address.
        let caller = mesh_ca::service::caller_context(&request);
        let peer = caller
            .remote_addr
            .map(|a| a.to_string())
            .unwrap_or_default();
        let auth = match &self.port {
            Port::Plaintext => connection::StreamAuth::Plaintext,
            Port::Secure(secrets) => {
                let identity = secrets.authenticator.authenticate(&caller).await;
                // No credentials at all may still read configuration (as on
                // the plaintext port); credentials that were presented and
                // failed are refused outright, as istiod does, so a proxy
                // with a stale or wrong token learns it at once.
                if let Err(e) = &identity
                    && !matches!(e, mesh_ca::AuthError::NoCredentials)
                {
                    tracing::warn!(%peer, reason = %e, "secure ADS stream refused");
                    return Err(Status::unauthenticated(format!("ADS stream refused: {e}")));
                }
                connection::StreamAuth::Secure {
                    identity,
                    cache: secrets.cache.clone(),
                }
            }
        };
        let requests = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(connection::run(self.ctx.clone(), peer, auth, requests, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        // Envoy falls back to state of the world when told so in its bootstrap
        // (`api_type: GRPC`); delta is not served yet.
        Err(Status::unimplemented(
            "delta xDS is not served: use state of the world (api_type: GRPC)",
        ))
    }
}
