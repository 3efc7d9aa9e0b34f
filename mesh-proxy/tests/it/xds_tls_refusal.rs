//! The ADS client when a control plane refuses its credentials, as istiod
//! refuses an unauthenticated stream on 15012: a real TLS gRPC server
//! (mesh_ca's TLS accept loop and a server certificate for istiod's SPIFFE
//! ID from a real CA) whose ADS service checks the bearer token with
//! mesh_ca's `TokenAuthenticator`. A refused stream is logged with the
//! server's reason and retried with backoff; no configuration is applied;
//! once the token is accepted the same client connects and ACKs.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use mesh_ca::tls::{self, ClientAuth, TlsIncoming};
use mesh_ca::{Authenticator, CaConfig, CertificateAuthority, SpiffeId, TokenAuthenticator};
use mesh_proxy::bootstrap::parse_bootstrap;
use mesh_proxy::xds::{self, AdsClientConfig};
use mesh_test_util::wait_until;
use tokio::net::TcpListener;
use tokio_stream::Stream;

const WAIT: Duration = Duration::from_secs(30);
const TD: &str = "cluster.local";

type Responses = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, tonic::Status>> + Send>>;
type DeltaResponses =
    Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, tonic::Status>> + Send>>;

/// Refuses streams whose token it does not know; answers every request of
/// an accepted stream with an empty set of its type.
struct GuardedAds {
    tokens: Arc<RwLock<TokenAuthenticator>>,
    refused: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for GuardedAds {
    type StreamAggregatedResourcesStream = Responses;
    type DeltaAggregatedResourcesStream = DeltaResponses;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Responses>, tonic::Status> {
        let caller = mesh_ca::service::caller_context(&request);
        let tokens = self.tokens.read().unwrap().clone();
        if let Err(e) = tokens.authenticate(&caller).await {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(tonic::Status::unauthenticated(format!(
                "authentication failure: {e}"
            )));
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut nonce = 0u64;
            while let Ok(Some(req)) = inbound.message().await {
                // An ACK carries the nonce of what it acknowledges.
                if !req.response_nonce.is_empty() {
                    continue;
                }
                nonce += 1;
                let _ = tx.send(Ok(DiscoveryResponse {
                    version_info: "1".into(),
                    type_url: req.type_url.clone(),
                    nonce: nonce.to_string(),
                    ..DiscoveryResponse::default()
                }));
            }
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        )))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<DeltaResponses>, tonic::Status> {
        Err(tonic::Status::unimplemented("state of the world only"))
    }
}

struct Server {
    addr: SocketAddr,
    tokens: Arc<RwLock<TokenAuthenticator>>,
    refused: Arc<AtomicU64>,
    dir: tempfile::TempDir,
}

async fn start_server() -> Server {
    let ca = CertificateAuthority::generate(CaConfig::default()).unwrap();
    let istiod = SpiffeId::new(TD, "istio-system", "istiod").unwrap();
    let serving = ca.issue_identity(&istiod, &[], None).unwrap();
    let config = tls::server_config(&serving, ClientAuth::Optional).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("root-cert.pem"), ca.trust_bundle().to_pem()).unwrap();
    let tokens = Arc::new(RwLock::new(TokenAuthenticator::new(TD)));
    let refused = Arc::new(AtomicU64::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = AggregatedDiscoveryServiceServer::new(GuardedAds {
        tokens: tokens.clone(),
        refused: refused.clone(),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TlsIncoming::new(listener, Arc::new(config))),
    );
    Server {
        addr,
        tokens,
        refused,
        dir,
    }
}

fn bootstrap(addr: SocketAddr, root: &Path, token: &str) -> String {
    format!(
        r#"
node: {{id: "sidecar~127.0.0.1~web-1.shop~shop.svc.cluster.local", cluster: web.shop}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    grpc_services:
    - envoy_grpc: {{cluster_name: xds-grpc}}
      initial_metadata: [{{key: authorization, value: "Bearer {token}"}}]
  cds_config: {{ads: {{}}}}
  lds_config: {{ads: {{}}}}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {ip}, port_value: {port}}}}}}}}}]}}]
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          alpn_protocols: [h2]
          validation_context:
            trusted_ca: {{filename: {root}}}
            match_typed_subject_alt_names:
            - {{san_type: URI, matcher: {{exact: "spiffe://cluster.local/ns/istio-system/sa/istiod"}}}}
"#,
        ip = addr.ip(),
        port = addr.port(),
        root = root.display(),
    )
}

/// Counts what the client hands to the runtime.
#[derive(Clone, Default)]
struct Applied(Arc<AtomicU64>);

impl xds::ConfigSink for Applied {
    async fn apply(
        &self,
        _snapshot: mesh_proxy::model::Snapshot,
        _resources: mesh_proxy::xds::resources::XdsResources,
    ) -> Result<(), String> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn a_refused_token_is_reported_with_the_reason_retried_and_then_accepted() {
    let server = start_server().await;
    // A token the server does not know yet.
    let mut issuer = TokenAuthenticator::new(TD);
    let token = issuer.issue_token("shop", "web").unwrap();
    let root = server.dir.path().join("root-cert.pem");
    let b = parse_bootstrap(&bootstrap(server.addr, &root, &token)).unwrap();
    let mut config = AdsClientConfig::from_bootstrap(&b).unwrap().unwrap();
    config.backoff_initial = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(200);
    let applied = Applied::default();
    let client = xds::spawn(config, applied.clone());

    wait_until(WAIT, async || server.refused.load(Ordering::SeqCst) >= 3)
        .await
        .expect("the client retries after a refusal");
    let status = client.status();
    let error = status.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("authentication failure")
            && error.contains("not known")
            && error.contains("Unauthenticated"),
        "the server's reason and code are reported: {error}"
    );
    assert!(!error.contains(&token), "the token is never shown: {error}");
    assert_eq!(status.acks, 0, "{status:?}");
    assert_eq!(applied.0.load(Ordering::SeqCst), 0, "no configuration");

    // The operator fixes the server's token list: the next attempt is let in.
    *server.tokens.write().unwrap() = issuer;
    wait_until(WAIT, async || client.status().acks >= 2)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", client.status()));
    let status = client.status();
    assert!(
        status.connected && status.last_error.is_none(),
        "{status:?}"
    );
    assert!(applied.0.load(Ordering::SeqCst) >= 1);
}
