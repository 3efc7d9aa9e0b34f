//! Builders for snapshots written in code, and a proxy started from one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_proxy::model::*;
use mesh_proxy::server::{Bound, ProxyConfig, build};

pub const LISTENER: &str = "http";

pub fn endpoint(address: SocketAddr) -> Endpoint {
    Endpoint {
        address,
        weight: 1,
        health: HealthStatus::Healthy,
        hostname: String::new(),
        transport_socket_match: Default::default(),
    }
}

pub fn endpoints(name: &str, addrs: &[SocketAddr]) -> EndpointSet {
    EndpointSet {
        cluster_name: name.into(),
        localities: vec![LocalityEndpoints {
            endpoints: addrs.iter().copied().map(endpoint).collect(),
            ..LocalityEndpoints::default()
        }],
    }
}

pub fn cluster_with(name: &str, set: EndpointSet, lb_policy: LbPolicy) -> ClusterConfig {
    ClusterConfig {
        name: name.into(),
        discovery: Discovery::Static(Arc::new(set)),
        connect_timeout: Duration::from_secs(2),
        lb_policy,
        protocol: UpstreamProtocol::Http1,
        circuit_breakers: CircuitBreakers::default(),
        outlier_detection: None,
        idle_timeout: None,
        max_connection_duration: None,
        max_requests_per_connection: None,
        tls: None,
        transport_socket_matches: vec![],
        buffer_limit_bytes: 1024 * 1024,
    }
}

pub fn cluster(name: &str, addrs: &[SocketAddr], lb_policy: LbPolicy) -> ClusterConfig {
    cluster_with(name, endpoints(name, addrs), lb_policy)
}

pub fn matcher(path: PathMatch) -> RouteMatch {
    RouteMatch {
        path,
        case_sensitive: true,
        headers: vec![],
        query_parameters: vec![],
        runtime_fraction: None,
        grpc: false,
    }
}

pub fn prefix(p: &str) -> RouteMatch {
    matcher(PathMatch::Prefix(p.into()))
}

pub fn forward_action(destination: Destination) -> ForwardAction {
    ForwardAction {
        destination,
        prefix_rewrite: None,
        regex_rewrite: None,
        host_rewrite: None,
        timeout: Some(DEFAULT_ROUTE_TIMEOUT),
        idle_timeout: None,
        retry_policy: None,
        hash_policy: vec![],
        mirrors: vec![],
        upgrades: vec![],
    }
}

pub fn route(name: &str, m: RouteMatch, action: RouteAction) -> Route {
    Route {
        name: name.into(),
        matcher: m,
        action,
        headers: HeaderMutations::default(),
        fault: None,
        cors: None,
    }
}

pub fn to_cluster(name: &str, m: RouteMatch, cluster: &str) -> Route {
    route(
        name,
        m,
        RouteAction::Forward(Box::new(forward_action(Destination::Cluster(
            cluster.into(),
        )))),
    )
}

pub fn vhost(name: &str, domains: Vec<DomainPattern>, routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains,
        routes,
        headers: HeaderMutations::default(),
        retry_policy: None,
        fault: None,
        cors: None,
    }
}

pub fn table(name: &str, vhosts: Vec<VirtualHost>) -> RouteTable {
    RouteTable::new(name.into(), vhosts, HeaderMutations::default())
}

pub fn hcm(routes: RouteSource, access_log: Vec<AccessLogConfig>) -> HttpConnectionManagerConfig {
    HttpConnectionManagerConfig {
        stat_prefix: "ingress_http".into(),
        codec: HttpCodec::Auto,
        routes,
        http_filters: vec![],
        access_log,
        idle_timeout: None,
        max_connection_duration: None,
        max_requests_per_connection: None,
        stream_idle_timeout: Some(DEFAULT_STREAM_IDLE_TIMEOUT),
        request_timeout: None,
        request_headers_timeout: Some(DEFAULT_REQUEST_HEADERS_TIMEOUT),
        use_remote_address: true,
        xff_num_trusted_hops: 0,
        generate_request_id: true,
        upgrades: vec!["websocket".into()],
        server_name: "mesh-proxy".into(),
        accept_absolute_form: true,
        forward_client_cert: Default::default(),
        client_cert_details: Default::default(),
    }
}

pub fn listener(name: &str, filter: NetworkFilter) -> ListenerConfig {
    ListenerConfig {
        name: name.into(),
        address: "127.0.0.1:0".parse().unwrap(),
        direction: TrafficDirection::Outbound,
        use_original_dst: false,
        bind_to_port: true,
        inspect_tls: false,
        inspect_http: false,
        ignore_global_conn_limit: false,
        filter_chains: vec![FilterChain {
            name: format!("{name}-chain"),
            matcher: FilterChainMatch::default(),
            tls: None,
            filter,
        }],
        default_filter_chain: None,
    }
}

/// A snapshot with one HTTP listener (`LISTENER`) using RDS route `routes`.
pub fn http_snapshot(
    t: RouteTable,
    clusters: Vec<ClusterConfig>,
    access_log: Vec<AccessLogConfig>,
) -> Snapshot {
    let h = hcm(RouteSource::Rds(t.name.clone()), access_log);
    http_snapshot_with(h, t, clusters)
}

/// [`http_snapshot`] with a connection manager of the caller's.
pub fn http_snapshot_with(
    h: HttpConnectionManagerConfig,
    t: RouteTable,
    clusters: Vec<ClusterConfig>,
) -> Snapshot {
    let mut s = Snapshot::default();
    s.listeners.insert(
        LISTENER.into(),
        Arc::new(listener(LISTENER, NetworkFilter::Http(Arc::new(h)))),
    );
    s.routes.insert(t.name.clone(), Arc::new(t));
    for c in clusters {
        s.clusters.insert(c.name.clone(), Arc::new(c));
    }
    s
}

/// A proxy for `snapshot`. Its connection managers are edge ones
/// (`use_remote_address`, see [`hcm`]); local reply details are shown to
/// every client all the same, as the tests read them.
pub async fn start(snapshot: Snapshot) -> Bound {
    let mut config = ProxyConfig::new(snapshot);
    config.admin_address = Some("127.0.0.1:0".parse().unwrap());
    config.reason_header = mesh_proxy::http::reason_header::ReasonHeader::Always;
    build(config).await.expect("proxy builds")
}

pub fn string_exact(v: &str) -> StringMatcher {
    StringMatcher {
        pattern: StringMatch::Exact(v.into()),
        ignore_case: false,
    }
}

pub fn header_exact(name: &str, value: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        kind: HeaderMatchKind::String(string_exact(value)),
        invert: false,
        treat_missing_as_empty: false,
    }
}

pub fn file_log(path: &std::path::Path) -> AccessLogConfig {
    AccessLogConfig {
        sink: AccessLogSink::File(path.to_path_buf()),
        format: AccessLogFormat::Default,
    }
}

pub fn get(host: &str, path: &str) -> http::Request<&'static str> {
    http::Request::get(path)
        .header("host", host)
        .body("")
        .unwrap()
}
