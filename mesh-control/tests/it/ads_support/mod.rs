//! Shared by the ADS tests: a config directory, a running control plane on
//! port 0, a real tonic ADS client, and decoders for what it receives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use mesh_control::{Bound, ServerConfig};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// Generous: the machine is shared and loaded.
pub const WAIT: Duration = Duration::from_secs(20);

pub const NODE_ID: &str = "sidecar~127.0.0.1~client.default~default.svc.cluster.local";

pub fn service_entry() -> String {
    r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: 9080
    name: http
    protocol: HTTP
  workloadSelector:
    labels:
      app: reviews
"#
    .to_string()
}

pub fn workload_entry(version: &str, port: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-{version}
  namespace: default
spec:
  address: 127.0.0.1
  ports:
    http: {port}
  labels:
    app: reviews
    version: {version}
  serviceAccount: reviews
"#
    )
}

pub fn destination_rule() -> String {
    r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews.default.svc.cluster.local
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
"#
    .to_string()
}

pub fn virtual_service(v1: u32, v2: u32) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: {v1}
    - destination: {{host: reviews, subset: v2}}
      weight: {v2}
"#
    )
}

/// A config directory with a reviews service, two workloads and a 90/10 split.
pub fn config_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "service-entry.yaml", &service_entry());
    write(
        dir.path(),
        "workloads-v1.yaml",
        &workload_entry("v1", 20001),
    );
    write(
        dir.path(),
        "workloads-v2.yaml",
        &workload_entry("v2", 20002),
    );
    write(dir.path(), "destination-rule.yaml", &destination_rule());
    write(dir.path(), "virtual-service.yaml", &virtual_service(90, 10));
    dir
}

/// Writes atomically (temp file + rename), as editors and `kubectl cp` do,
/// so the watcher never reads half a file.
pub fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, dir.join(name)).expect("rename config");
}

/// A control plane on 127.0.0.1:0 watching `dir`, polling fast.
pub async fn start(dir: &Path) -> Bound {
    let config = ServerConfig {
        poll_interval: Duration::from_millis(50),
        file_debounce: Duration::from_millis(50),
        push_debounce: Duration::from_millis(50),
        ..ServerConfig::ephemeral(dir)
    };
    mesh_control::build(config)
        .await
        .expect("control plane starts")
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

/// A local-mode sidecar's node, as an Istio-bootstrapped Envoy sends it.
pub fn node(id: &str) -> Node {
    let mut labels = HashMap::new();
    labels.insert("app".to_string(), string("client"));
    let mut fields = HashMap::new();
    fields.insert(
        "LABELS".to_string(),
        Value {
            kind: Some(Kind::StructValue(Struct { fields: labels })),
        },
    );
    fields.insert("NAMESPACE".to_string(), string("default"));
    fields.insert("SERVICE_ACCOUNT".to_string(), string("client"));
    fields.insert("WORKLOAD_NAME".to_string(), string("client"));
    fields.insert("CLUSTER_ID".to_string(), string("Kubernetes"));
    fields.insert("MESH_LOCAL_MODE".to_string(), string("true"));
    fields.insert(
        "MESH_OUTBOUND_ADDRESS".to_string(),
        string("127.0.0.1:21001"),
    );
    fields.insert(
        "MESH_INBOUND_ADDRESS".to_string(),
        string("127.0.0.1:21006"),
    );
    fields.insert("MESH_APP_ADDRESS".to_string(), string("127.0.0.1:21080"));
    Node {
        id: id.to_string(),
        cluster: "client.default".to_string(),
        metadata: Some(Struct { fields }),
        ..Node::default()
    }
}

/// A real ADS client over a real gRPC stream.
pub struct AdsClient {
    requests: mpsc::Sender<DiscoveryRequest>,
    responses: tonic::Streaming<DiscoveryResponse>,
    node: Option<Node>,
}

impl AdsClient {
    pub async fn connect(addr: SocketAddr, node: Node) -> AdsClient {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect to xDS");
        let (tx, rx) = mpsc::channel(16);
        // The call resolves only once the server answers headers, which it does
        // at once; requests flow through the channel afterwards.
        let responses = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("open ADS stream")
            .into_inner();
        AdsClient {
            requests: tx,
            responses,
            node: Some(node),
        }
    }

    /// Over an existing channel (TLS to the secure port), sending `token` as
    /// `authorization: Bearer` on the stream.
    pub async fn over(
        channel: tonic::transport::Channel,
        node: Node,
        token: Option<&str>,
    ) -> Result<AdsClient, tonic::Status> {
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(16);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("header value"),
            );
        }
        let responses = client
            .stream_aggregated_resources(request)
            .await?
            .into_inner();
        Ok(AdsClient {
            requests: tx,
            responses,
            node: Some(node),
        })
    }

    /// Sends a request; the first one carries the node.
    pub async fn request(
        &mut self,
        type_url: &str,
        names: &[String],
        version: &str,
        nonce: &str,
        error: Option<&str>,
    ) {
        let req = DiscoveryRequest {
            version_info: version.to_string(),
            node: self.node.take(),
            resource_names: names.to_vec(),
            type_url: type_url.to_string(),
            response_nonce: nonce.to_string(),
            error_detail: error.map(|m| RpcStatus {
                code: 3,
                message: m.to_string(),
                details: vec![],
            }),
            ..DiscoveryRequest::default()
        };
        self.requests.send(req).await.expect("send request");
    }

    pub async fn subscribe(&mut self, type_url: &str, names: &[String]) {
        self.request(type_url, names, "", "", None).await;
    }

    pub async fn ack(&mut self, r: &DiscoveryResponse, names: &[String]) {
        self.request(&r.type_url, names, &r.version_info, &r.nonce, None)
            .await;
    }

    /// The next response, failing the test after [`WAIT`].
    pub async fn recv(&mut self) -> DiscoveryResponse {
        match tokio::time::timeout(WAIT, self.responses.message()).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => panic!("ADS stream closed by the server"),
            Ok(Err(status)) => panic!("ADS stream failed: {status}"),
            Err(_) => panic!("no ADS response within {WAIT:?}"),
        }
    }

    /// The next response if one comes within `wait`.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<DiscoveryResponse> {
        match tokio::time::timeout(wait, self.responses.message()).await {
            Ok(Ok(Some(r))) => Some(r),
            Ok(Ok(None)) => panic!("ADS stream closed by the server"),
            Ok(Err(status)) => panic!("ADS stream failed: {status}"),
            Err(_) => None,
        }
    }

    /// The next response, which must be of `type_url`.
    pub async fn recv_type(&mut self, type_url: &str) -> DiscoveryResponse {
        let r = self.recv().await;
        assert_eq!(r.type_url, type_url, "unexpected response type");
        r
    }

    /// Waits for the server to end the stream: true when it ends with OK.
    pub async fn recv_end(&mut self) -> bool {
        loop {
            match tokio::time::timeout(WAIT, self.responses.message()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => return true,
                Ok(Err(status)) => {
                    eprintln!("stream ended with {status}");
                    return false;
                }
                Err(_) => panic!("stream still open after {WAIT:?}"),
            }
        }
    }

    /// The error the server ends the stream with.
    pub async fn recv_error(&mut self) -> tonic::Status {
        match tokio::time::timeout(WAIT, self.responses.message()).await {
            Ok(Err(status)) => status,
            Ok(Ok(r)) => panic!("expected an error, got {r:?}"),
            Err(_) => panic!("no ADS error within {WAIT:?}"),
        }
    }
}

/// The four types, synced and ACKed as Envoy does: CDS, EDS for every
/// cluster, LDS, RDS for every route config the listeners name.
pub struct Synced {
    pub cds: DiscoveryResponse,
    pub eds: DiscoveryResponse,
    pub lds: DiscoveryResponse,
    pub rds: DiscoveryResponse,
    pub eds_names: Vec<String>,
    pub rds_names: Vec<String>,
}

pub async fn sync_all(client: &mut AdsClient) -> Synced {
    client.subscribe(CDS, &[]).await;
    let cds = client.recv_type(CDS).await;
    client.ack(&cds, &[]).await;
    let eds_names = eds_names(&cds);
    client.subscribe(EDS, &eds_names).await;
    let eds = client.recv_type(EDS).await;
    client.ack(&eds, &eds_names).await;
    client.subscribe(LDS, &[]).await;
    let lds = client.recv_type(LDS).await;
    client.ack(&lds, &[]).await;
    let rds_names = rds_names(&lds);
    client.subscribe(RDS, &rds_names).await;
    let rds = client.recv_type(RDS).await;
    client.ack(&rds, &rds_names).await;
    Synced {
        cds,
        eds,
        lds,
        rds,
        eds_names,
        rds_names,
    }
}

pub fn clusters(r: &DiscoveryResponse) -> Vec<Cluster> {
    decode_all(r)
}

pub fn load_assignments(r: &DiscoveryResponse) -> Vec<ClusterLoadAssignment> {
    decode_all(r)
}

pub fn listeners(r: &DiscoveryResponse) -> Vec<Listener> {
    decode_all(r)
}

pub fn route_configs(r: &DiscoveryResponse) -> Vec<RouteConfiguration> {
    decode_all(r)
}

fn decode_all<M: Message + Default>(r: &DiscoveryResponse) -> Vec<M> {
    r.resources
        .iter()
        .map(|a| {
            assert_eq!(a.type_url, r.type_url, "resource type matches the response");
            M::decode(a.value.as_slice()).expect("resource decodes")
        })
        .collect()
}

/// EDS names of the EDS clusters, as Envoy subscribes to them.
pub fn eds_names(cds: &DiscoveryResponse) -> Vec<String> {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{
        ClusterDiscoveryType, DiscoveryType,
    };
    let mut names: Vec<String> = clusters(cds)
        .into_iter()
        .filter(|c| {
            c.cluster_discovery_type == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        })
        .map(|c| {
            c.eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or(c.name)
        })
        .collect();
    names.sort();
    names
}

/// Route config names the listeners' HTTP connection managers load over RDS.
pub fn rds_names(lds: &DiscoveryResponse) -> Vec<String> {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    let mut names = Vec::new();
    for l in listeners(lds) {
        for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
            for f in &chain.filters {
                if let Some(ConfigType::TypedConfig(any)) = &f.config_type
                    && any.type_url.ends_with("HttpConnectionManager")
                {
                    let hcm =
                        HttpConnectionManager::decode(any.value.as_slice()).expect("HCM decodes");
                    if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                        names.push(rds.route_config_name);
                    }
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Every (cluster, weight) of weighted routes in the route configs.
pub fn weights(rds: &DiscoveryResponse) -> Vec<(String, u32)> {
    use envoy_types::pb::envoy::config::route::v3::route::Action;
    use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
    let mut out = Vec::new();
    for rc in route_configs(rds) {
        for vh in rc.virtual_hosts {
            for r in vh.routes {
                if let Some(Action::Route(ra)) = r.action
                    && let Some(ClusterSpecifier::WeightedClusters(wc)) = ra.cluster_specifier
                {
                    for c in wc.clusters {
                        out.push((c.name, c.weight.map(|w| w.value).unwrap_or(0)));
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Every endpoint port per cluster, from EDS.
pub fn endpoint_ports(eds: &DiscoveryResponse) -> Vec<(String, u32)> {
    use envoy_types::pb::envoy::config::core::v3::address::Address;
    use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
    let mut out = Vec::new();
    for cla in load_assignments(eds) {
        for locality in &cla.endpoints {
            for lb in &locality.lb_endpoints {
                if let Some(HostIdentifier::Endpoint(e)) = &lb.host_identifier
                    && let Some(Address::SocketAddress(sa)) =
                        e.address.as_ref().and_then(|a| a.address.clone())
                    && let Some(PortSpecifier::PortValue(p)) = sa.port_specifier
                {
                    out.push((cla.cluster_name.clone(), p));
                }
            }
        }
    }
    out.sort();
    out
}

/// GET a debug endpoint as JSON.
pub async fn get_json(bound: &Bound, path: &str) -> serde_json::Value {
    let url = format!("http://{}{path}", bound.debug_address());
    let resp = mesh_test_util::HttpClient::http1()
        .get(&url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:#}"));
    assert_eq!(resp.status, 200, "GET {url}: {}", resp.text());
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// The `/debug/syncz` entry of a proxy id.
pub async fn syncz_of(bound: &Bound, id: &str) -> Option<serde_json::Value> {
    let all = get_json(bound, "/debug/syncz").await;
    all.as_array()?.iter().find(|p| p["proxy"] == id).cloned()
}
