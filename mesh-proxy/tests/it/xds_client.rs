//! The ADS client against a scripted ADS server: a real tonic server on
//! 127.0.0.1 serving envoy-types resources over a real gRPC stream, a real
//! proxy built from a bootstrap with `ads_config`, real upstreams.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use mesh_proxy::bootstrap::parse_bootstrap;
use mesh_proxy::server::{Bound, ProxyConfig, build};
use mesh_proxy::xds::{self, AdsClient, AdsClientConfig, ResourceType};
use mesh_proxy::xds_json::{from_str, pack_any};
use mesh_test_util::{AdsBootstrap, HttpClient, HttpUpstream, send, wait_until};
use prost::Name;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};

const WAIT: Duration = Duration::from_secs(20);
const NODE_ID: &str = "sidecar~127.0.0.1~test-pod.default~default.svc.cluster.local";

// ---------------------------------------------------------------------------
// Resources

fn eds_cluster(name: &str) -> Cluster {
    from_str(&format!(
        "name: {name}\ntype: EDS\nconnect_timeout: 1s\neds_cluster_config: {{eds_config: {{ads: {{}}, resource_api_version: V3}}}}\n"
    ))
    .unwrap()
}

fn cla(name: &str, addr: SocketAddr) -> ClusterLoadAssignment {
    from_str(&format!(
        "cluster_name: {name}\nendpoints:\n- lb_endpoints:\n  - endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}\n",
        addr.ip(),
        addr.port()
    ))
    .unwrap()
}

fn listener(name: &str, route: &str) -> Listener {
    listener_on(name, route, "127.0.0.1:0".parse().unwrap())
}

fn listener_on(name: &str, route: &str, addr: SocketAddr) -> Listener {
    from_str(&format!(
        r#"
name: {name}
address: {{socket_address: {{address: {}, port_value: {}}}}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: outbound
      rds: {{route_config_name: {route}, config_source: {{ads: {{}}, resource_api_version: V3}}}}
      http_filters:
      - name: envoy.filters.http.router
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#,
        addr.ip(),
        addr.port()
    ))
    .unwrap()
}

fn route(name: &str, cluster: &str) -> RouteConfiguration {
    from_str(&format!(
        "name: {name}\nvirtual_hosts:\n- name: all\n  domains: ['*']\n  routes:\n  - match: {{prefix: /}}\n    route: {{cluster: {cluster}}}\n"
    ))
    .unwrap()
}

fn bootstrap(ads: SocketAddr) -> String {
    AdsBootstrap::new(NODE_ID, ads)
        .metadata("{NAMESPACE: default}")
        .yaml()
}

// ---------------------------------------------------------------------------
// A scripted ADS server (state of the world): it holds one version of each
// type; a new subscription (or changed names) gets the current resources, a
// change of the held resources is pushed to every stream subscribed to the
// type. Every request received is recorded, with what was sent.

#[derive(Debug, Clone)]
struct Sent {
    type_url: String,
    version: String,
    nonce: String,
}

#[derive(Default)]
struct Store {
    /// type_url -> (version, [(name, resource)])
    resources: BTreeMap<String, (String, Vec<(String, Any)>)>,
    requests: Vec<DiscoveryRequest>,
    sent: Vec<Sent>,
    streams: u64,
    next_nonce: u64,
}

struct Script {
    store: Mutex<Store>,
    changed: watch::Sender<u64>,
}

impl Script {
    fn new() -> Arc<Script> {
        Arc::new(Script {
            store: Mutex::new(Store::default()),
            changed: watch::channel(0).0,
        })
    }

    fn set<T: prost::Message + Name>(&self, version: &str, items: Vec<(String, T)>) {
        let mut s = self.store.lock().unwrap();
        s.resources.insert(
            T::type_url(),
            (
                version.to_string(),
                items
                    .iter()
                    .map(|(n, r)| (n.clone(), pack_any(r)))
                    .collect(),
            ),
        );
        drop(s);
        self.changed.send_modify(|n| *n += 1);
    }

    fn requests(&self) -> Vec<DiscoveryRequest> {
        self.store.lock().unwrap().requests.clone()
    }

    fn requests_of(&self, ty: ResourceType) -> Vec<DiscoveryRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.type_url == ty.type_url())
            .collect()
    }

    fn sent_of(&self, ty: ResourceType, version: &str) -> Vec<Sent> {
        self.store
            .lock()
            .unwrap()
            .sent
            .iter()
            .filter(|s| s.type_url == ty.type_url() && s.version == version)
            .cloned()
            .collect()
    }

    /// The ACK of `version` of a type: a request carrying that version, the
    /// nonce the server sent it with, and no error.
    fn acked(&self, ty: ResourceType, version: &str) -> bool {
        let nonces: Vec<String> = self
            .sent_of(ty, version)
            .into_iter()
            .map(|s| s.nonce)
            .collect();
        self.requests_of(ty).iter().any(|r| {
            r.version_info == version
                && nonces.contains(&r.response_nonce)
                && r.error_detail.is_none()
        })
    }

    fn streams(&self) -> u64 {
        self.store.lock().unwrap().streams
    }

    /// The response for a type, filtered by the subscribed names.
    fn response(&self, type_url: &str, names: &[String]) -> Option<DiscoveryResponse> {
        let mut s = self.store.lock().unwrap();
        let (version, items) = s.resources.get(type_url)?.clone();
        s.next_nonce += 1;
        let nonce = format!("n{}", s.next_nonce);
        s.sent.push(Sent {
            type_url: type_url.to_string(),
            version: version.clone(),
            nonce: nonce.clone(),
        });
        Some(DiscoveryResponse {
            version_info: version,
            type_url: type_url.to_string(),
            nonce,
            resources: items
                .into_iter()
                .filter(|(n, _)| names.is_empty() || names.contains(n))
                .map(|(_, r)| r)
                .collect(),
            ..Default::default()
        })
    }

    fn version(&self, type_url: &str) -> Option<String> {
        let s = self.store.lock().unwrap();
        s.resources.get(type_url).map(|(v, _)| v.clone())
    }
}

struct ScriptedAds(Arc<Script>);

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, tonic::Status>> + Send>>;
type DeltaStream =
    Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for ScriptedAds {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<ResponseStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let script = self.0.clone();
        script.store.lock().unwrap().streams += 1;
        let (tx, rx) = mpsc::unbounded_channel::<Result<DiscoveryResponse, tonic::Status>>();
        tokio::spawn(async move {
            let mut changed = script.changed.subscribe();
            let mut subs: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut sent_version: BTreeMap<String, String> = BTreeMap::new();
            let push = |type_url: &str, names: &[String], sent: &mut BTreeMap<String, String>| {
                if let Some(resp) = script.response(type_url, names) {
                    sent.insert(type_url.to_string(), resp.version_info.clone());
                    let _ = tx.send(Ok(resp));
                }
            };
            loop {
                tokio::select! {
                    msg = inbound.message() => {
                        let Ok(Some(req)) = msg else { break };
                        script.store.lock().unwrap().requests.push(req.clone());
                        let fresh = subs.get(&req.type_url) != Some(&req.resource_names);
                        subs.insert(req.type_url.clone(), req.resource_names.clone());
                        if fresh {
                            push(&req.type_url, &req.resource_names, &mut sent_version);
                        }
                    }
                    r = changed.changed() => {
                        if r.is_err() { break; }
                        for (type_url, names) in &subs {
                            if script.version(type_url) != sent_version.get(type_url).cloned() {
                                push(type_url, names, &mut sent_version);
                            }
                        }
                    }
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(
            UnboundedReceiverStream::new(rx),
        )))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<DeltaStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("delta xDS"))
    }
}

/// The server runs on its own runtime in its own thread, so that `kill`
/// drops every connection at once, as a dying process would.
struct AdsServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AdsServer {
    fn start(addr: SocketAddr, script: Arc<Script>) -> AdsServer {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                // Restart on the port the proxy's bootstrap names.
                socket.set_reuseaddr(true).unwrap();
                socket.bind(addr).unwrap();
                let listener = socket.listen(128).unwrap();
                ready_tx.send(listener.local_addr().unwrap()).unwrap();
                let server = tonic::transport::Server::builder()
                    .add_service(AggregatedDiscoveryServiceServer::new(ScriptedAds(script)))
                    .serve_with_incoming(TcpListenerStream::new(listener));
                tokio::select! {
                    _ = server => {}
                    _ = stop_rx => {}
                }
            });
            rt.shutdown_background();
        });
        let addr = ready_rx.recv().unwrap();
        AdsServer {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AdsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// The proxy

struct Mesh {
    // Field order: the client stops before the proxy handle goes.
    ads: AdsClient,
    bound: Bound,
}

async fn start_proxy(ads_addr: SocketAddr) -> Mesh {
    let b = parse_bootstrap(&bootstrap(ads_addr)).expect("bootstrap");
    let mut config = AdsClientConfig::from_bootstrap(&b)
        .expect("ads config")
        .expect("ads_config present");
    config.backoff_max = Duration::from_secs(1);
    let bound = build(ProxyConfig::from_bootstrap(b))
        .await
        .expect("proxy builds");
    let ads = xds::spawn(config, bound.proxy.clone());
    Mesh { ads, bound }
}

impl Mesh {
    async fn outbound(&self) -> SocketAddr {
        wait_until(WAIT, async || {
            self.bound
                .proxy
                .listener_addrs()
                .get("outbound")
                .copied()
                .ok_or_else(|| anyhow::anyhow!("no listener yet; ads: {:?}", self.ads.status()))
        })
        .await
        .unwrap()
    }

    /// GET / through the outbound listener; the body names the upstream.
    async fn get(&self) -> anyhow::Result<String> {
        let addr = self.outbound().await;
        let resp = send(
            addr,
            http::Request::get("/").header("host", "backend").body("")?,
        )
        .await?;
        anyhow::ensure!(
            resp.status == 200,
            "status {} body {:?}",
            resp.status,
            resp.text()
        );
        Ok(resp.text())
    }

    async fn wait_body(&self, want: &str) {
        wait_until(WAIT, async || {
            let body = self.get().await?;
            anyhow::ensure!(
                body == want,
                "got {body:?}, want {want:?}; ads {:?}",
                self.ads.status()
            );
            Ok(())
        })
        .await
        .unwrap();
    }
}

fn named<T>(name: &str, r: T) -> (String, T) {
    (name.to_string(), r)
}

/// A server holding one complete configuration: listener `outbound` with
/// RDS `http_routes` to EDS cluster `backend`.
fn full_config(script: &Script, version: &str, upstream: SocketAddr) {
    script.set(version, vec![named("backend", eds_cluster("backend"))]);
    script.set(version, vec![named("backend", cla("backend", upstream))]);
    script.set(
        version,
        vec![named("outbound", listener("outbound", "http_routes"))],
    );
    script.set(
        version,
        vec![named("http_routes", route("http_routes", "backend"))],
    );
}

async fn wait_acked(script: &Script, ty: ResourceType, version: &str) {
    wait_until(WAIT, async || script.acked(ty, version))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{} {version} not ACKed: {e}; requests {:?}",
                ty.short(),
                script.requests()
            )
        });
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn initial_sync_acks_every_type_and_traffic_flows() {
    let v1 = HttpUpstream::start("v1").await.unwrap();
    let script = Script::new();
    full_config(&script, "1", v1.addr());
    let server = AdsServer::start("127.0.0.1:0".parse().unwrap(), script.clone());
    let mesh = start_proxy(server.addr).await;

    mesh.wait_body("v1").await;
    for ty in ResourceType::ALL {
        wait_acked(&script, ty, "1").await;
    }

    let requests = script.requests();
    // The node goes on the first request of the stream only (the
    // bootstrap sets set_node_on_first_message_only).
    assert_eq!(
        requests[0].node.as_ref().map(|n| n.id.as_str()),
        Some(NODE_ID)
    );
    assert!(requests[1..].iter().all(|r| r.node.is_none()));
    // CDS and LDS are wildcard; EDS and RDS name what was referenced.
    assert_eq!(requests[0].type_url, ResourceType::Cluster.type_url());
    assert!(
        script.requests_of(ResourceType::Cluster)[0]
            .resource_names
            .is_empty()
    );
    assert!(
        script.requests_of(ResourceType::Listener)[0]
            .resource_names
            .is_empty()
    );
    assert_eq!(
        script.requests_of(ResourceType::Endpoint)[0].resource_names,
        ["backend"]
    );
    assert_eq!(
        script.requests_of(ResourceType::Route)[0].resource_names,
        ["http_routes"]
    );
    // EDS was requested before the listener was applied (warming order).
    let pos = |ty: ResourceType, pred: &dyn Fn(&DiscoveryRequest) -> bool| {
        requests
            .iter()
            .position(|r| r.type_url == ty.type_url() && pred(r))
            .unwrap()
    };
    assert!(
        pos(ResourceType::Endpoint, &|_| true)
            < pos(ResourceType::Listener, &|r| r.version_info == "1")
    );
    assert!(requests.iter().all(|r| r.error_detail.is_none()));
    assert_eq!(mesh.ads.status().nacks, 0);

    // /config_dump shows the dynamic sections with their versions.
    let admin = mesh.bound.admin_addr.unwrap();
    let dump = HttpClient::http1()
        .get(&format!("http://{admin}/config_dump?include_eds"))
        .await
        .unwrap();
    let dump: serde_json::Value = serde_json::from_slice(&dump.body).unwrap();
    let section = |suffix: &str| {
        dump["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["@type"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!(".{suffix}"))
            })
            .unwrap_or_else(|| panic!("no {suffix} in {dump}"))
            .clone()
    };
    let clusters = section("ClustersConfigDump");
    assert_eq!(clusters["version_info"], "1");
    assert_eq!(clusters["dynamic_active_clusters"][0]["version_info"], "1");
    assert_eq!(
        clusters["dynamic_active_clusters"][0]["cluster"]["name"],
        "backend"
    );
    assert_eq!(
        clusters["static_clusters"][0]["cluster"]["name"],
        "xds-grpc"
    );
    let listeners = section("ListenersConfigDump");
    assert_eq!(listeners["dynamic_listeners"][0]["name"], "outbound");
    assert_eq!(
        listeners["dynamic_listeners"][0]["active_state"]["version_info"],
        "1"
    );
    let routes = section("RoutesConfigDump");
    assert_eq!(routes["dynamic_route_configs"][0]["version_info"], "1");
    assert_eq!(
        routes["dynamic_route_configs"][0]["route_config"]["name"],
        "http_routes"
    );
    let endpoints = section("EndpointsConfigDump");
    assert_eq!(
        endpoints["dynamic_endpoint_configs"][0]["endpoint_config"]["cluster_name"],
        "backend"
    );
    drop(mesh);
}

#[tokio::test]
async fn a_bad_cluster_is_nacked_and_the_last_good_config_keeps_serving() {
    let v1 = HttpUpstream::start("v1").await.unwrap();
    let script = Script::new();
    full_config(&script, "1", v1.addr());
    let server = AdsServer::start("127.0.0.1:0".parse().unwrap(), script.clone());
    let mesh = start_proxy(server.addr).await;
    mesh.wait_body("v1").await;
    wait_acked(&script, ResourceType::Cluster, "1").await;

    let mut bad = eds_cluster("backend");
    bad.lb_policy = 6; // CLUSTER_PROVIDED
    script.set("2", vec![named("backend", bad)]);
    let nack = wait_until(WAIT, async || {
        let nonces: Vec<_> = script
            .sent_of(ResourceType::Cluster, "2")
            .into_iter()
            .map(|s| s.nonce)
            .collect();
        script
            .requests_of(ResourceType::Cluster)
            .into_iter()
            .find(|r| nonces.contains(&r.response_nonce))
            .ok_or_else(|| anyhow::anyhow!("no answer to CDS 2 yet"))
    })
    .await
    .unwrap();
    assert_eq!(
        nack.version_info, "1",
        "a NACK carries the version in force"
    );
    let reason = nack.error_detail.expect("NACK has error_detail").message;
    assert!(
        reason.contains("cluster \"backend\"") && reason.contains("lb_policy"),
        "{reason}"
    );
    assert_eq!(
        mesh.ads.status().last_nack.as_deref(),
        Some(reason.as_str())
    );
    assert_eq!(
        mesh.ads.status().versions.get("CDS").map(String::as_str),
        Some("1")
    );
    for _ in 0..5 {
        assert_eq!(mesh.get().await.unwrap(), "v1");
    }

    // A fixed version is accepted again.
    let mut good = eds_cluster("backend");
    good.lb_policy = 3; // RANDOM
    script.set("3", vec![named("backend", good)]);
    wait_acked(&script, ResourceType::Cluster, "3").await;
    assert_eq!(mesh.get().await.unwrap(), "v1");
}

#[tokio::test]
async fn a_new_cluster_warms_before_the_route_switches_to_it() {
    let v1 = HttpUpstream::start("v1").await.unwrap();
    let v2 = HttpUpstream::start("v2").await.unwrap();
    let script = Script::new();
    full_config(&script, "1", v1.addr());
    let server = AdsServer::start("127.0.0.1:0".parse().unwrap(), script.clone());
    let mesh = start_proxy(server.addr).await;
    mesh.wait_body("v1").await;
    wait_acked(&script, ResourceType::Route, "1").await;

    // Cluster v2 and a route to it, but no endpoints for it yet.
    script.set(
        "2",
        vec![
            named("backend", eds_cluster("backend")),
            named("backend2", eds_cluster("backend2")),
        ],
    );
    script.set(
        "2",
        vec![named("http_routes", route("http_routes", "backend2"))],
    );
    wait_acked(&script, ResourceType::Route, "2").await;
    wait_until(WAIT, async || {
        script
            .requests_of(ResourceType::Endpoint)
            .iter()
            .any(|r| r.resource_names.contains(&"backend2".to_string()))
    })
    .await
    .unwrap();
    assert_eq!(mesh.ads.status().warming, ["cluster \"backend2\""]);
    // The route is accepted but held back: traffic stays on v1.
    for _ in 0..5 {
        assert_eq!(mesh.get().await.unwrap(), "v1");
    }

    script.set(
        "2",
        vec![
            named("backend", cla("backend", v1.addr())),
            named("backend2", cla("backend2", v2.addr())),
        ],
    );
    mesh.wait_body("v2").await;
    assert!(mesh.ads.status().warming.is_empty());
    assert!(v2.request_count() >= 1);
}

#[tokio::test]
async fn control_plane_down_keeps_traffic_and_a_restart_resynchronises() {
    let v1 = HttpUpstream::start("v1").await.unwrap();
    let v2 = HttpUpstream::start("v2").await.unwrap();
    let script = Script::new();
    full_config(&script, "1", v1.addr());
    let mut server = AdsServer::start("127.0.0.1:0".parse().unwrap(), script.clone());
    let addr = server.addr;
    let mesh = start_proxy(addr).await;
    mesh.wait_body("v1").await;
    for ty in ResourceType::ALL {
        wait_acked(&script, ty, "1").await;
    }

    server.kill();
    wait_until(WAIT, async || !mesh.ads.status().connected)
        .await
        .unwrap();
    // Let the client go through a few failed reconnects.
    let streams_before = mesh.ads.status().streams;
    wait_until(WAIT, async || {
        mesh.ads
            .status()
            .last_error
            .is_some_and(|e| e.starts_with("connect "))
    })
    .await
    .unwrap();
    for _ in 0..10 {
        assert_eq!(mesh.get().await.unwrap(), "v1", "serving the last config");
    }

    // A restarted control plane with a change made meanwhile.
    let script2 = Script::new();
    script2.set(
        "2",
        vec![
            named("backend", eds_cluster("backend")),
            named("backend2", eds_cluster("backend2")),
        ],
    );
    script2.set(
        "2",
        vec![
            named("backend", cla("backend", v1.addr())),
            named("backend2", cla("backend2", v2.addr())),
        ],
    );
    script2.set(
        "2",
        vec![named("outbound", listener("outbound", "http_routes"))],
    );
    script2.set(
        "2",
        vec![named("http_routes", route("http_routes", "backend2"))],
    );
    let _server2 = AdsServer::start(addr, script2.clone());
    mesh.wait_body("v2").await;
    assert!(mesh.ads.status().streams > streams_before);
    assert_eq!(script2.streams(), 1);

    // The new stream opened with the versions the proxy held, as Envoy does.
    let first = script2.requests();
    assert_eq!(first[0].node.as_ref().map(|n| n.id.as_str()), Some(NODE_ID));
    let opening = |ty: ResourceType| {
        first
            .iter()
            .find(|r| r.type_url == ty.type_url())
            .unwrap()
            .clone()
    };
    for ty in ResourceType::ALL {
        let r = opening(ty);
        assert_eq!(
            r.version_info,
            "1",
            "{} opens with the held version",
            ty.short()
        );
        assert_eq!(r.response_nonce, "", "{} opens without a nonce", ty.short());
    }
    assert_eq!(opening(ResourceType::Endpoint).resource_names, ["backend"]);
    assert_eq!(opening(ResourceType::Route).resource_names, ["http_routes"]);
    for ty in ResourceType::ALL {
        wait_acked(&script2, ty, "2").await;
    }
    assert_eq!(mesh.ads.status().nacks, 0);
}

#[tokio::test]
async fn a_listener_that_cannot_bind_is_nacked_with_the_runtime_error() {
    let v1 = HttpUpstream::start("v1").await.unwrap();
    let taken = HttpUpstream::start("taken").await.unwrap();
    let script = Script::new();
    full_config(&script, "1", v1.addr());
    let server = AdsServer::start("127.0.0.1:0".parse().unwrap(), script.clone());
    let mesh = start_proxy(server.addr).await;
    mesh.wait_body("v1").await;
    wait_acked(&script, ResourceType::Listener, "1").await;

    script.set(
        "2",
        vec![
            named("outbound", listener("outbound", "http_routes")),
            named("second", listener_on("second", "http_routes", taken.addr())),
        ],
    );
    let reason = wait_until(WAIT, async || {
        mesh.ads
            .status()
            .last_nack
            .ok_or_else(|| anyhow::anyhow!("no NACK yet: {:?}", script.requests()))
    })
    .await
    .unwrap();
    assert!(
        reason.contains("second") && reason.contains(&taken.addr().to_string()),
        "{reason}"
    );
    let nack = script
        .requests_of(ResourceType::Listener)
        .into_iter()
        .find(|r| r.error_detail.is_some())
        .expect("NACK on the wire");
    assert_eq!(nack.version_info, "1");
    assert_eq!(
        mesh.ads.status().versions.get("LDS").map(String::as_str),
        Some("1")
    );
    assert!(!mesh.bound.proxy.listener_addrs().contains_key("second"));
    assert_eq!(mesh.get().await.unwrap(), "v1");
}

/// A proxy whose control plane is away at start serves nothing, and says so: `/ready` answers
/// 503 `INITIALIZING` (as Envoy's does) until the first listeners arrive, then `LIVE`.
#[tokio::test]
async fn ready_says_initializing_until_the_control_plane_configures_the_proxy() {
    let v1 = HttpUpstream::start("v1").await.unwrap();
    // A port where no control plane listens yet.
    let ads_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let b = parse_bootstrap(&bootstrap(ads_addr)).expect("bootstrap");
    let mut config = AdsClientConfig::from_bootstrap(&b).unwrap().unwrap();
    config.backoff_max = Duration::from_millis(200);
    let mut proxy_config = ProxyConfig::from_bootstrap(b);
    proxy_config.admin_address = Some("127.0.0.1:0".parse().unwrap());
    let bound = build(proxy_config).await.unwrap();
    let admin = bound.admin_addr.unwrap();
    let ads = xds::start_client(config, &bound.proxy);
    let ready = async || {
        let r = send(admin, http::Request::get("/ready").body("").unwrap())
            .await
            .unwrap();
        (r.status.as_u16(), r.text())
    };
    wait_until(WAIT, async || {
        ads.status().streams > 0 || ads.status().last_error.is_some()
    })
    .await
    .unwrap();
    assert_eq!(ready().await, (503, "INITIALIZING\n".to_string()));

    let script = Script::new();
    full_config(&script, "1", v1.addr());
    let _server = AdsServer::start(ads_addr, script.clone());
    wait_until(WAIT, async || {
        let (status, text) = ready().await;
        anyhow::ensure!(status == 200, "{status} {text}");
        Ok(text)
    })
    .await
    .unwrap();
    assert_eq!(bound.proxy.state(), "LIVE");
}
