//! Listeners and the route configurations behind them.
//!
//! Local mode (no traffic capture; see the control-plane contract): one outbound HTTP proxy
//! listener whose routes (`http_proxy`) hold a virtual host per service port, and one inbound
//! listener forwarding to the workload's application. Kubernetes mode follows Istio's shape:
//! `virtualOutbound` on 15001 handing connections to per-port listeners `0.0.0.0_PORT` whose
//! routes are named by port, and `virtualInbound` on 15006. Gateways get a listener per server
//! port with routes `http.PORT` built from the VirtualServices bound to them.
//!
//! Inbound mTLS follows the workload's PeerAuthentication (`mtls.rs`): a TLS inspector and, per
//! port, an mTLS chain (STRICT), an mTLS and a plaintext chain (PERMISSIVE) or a plaintext chain
//! (DISABLE). Inbound HTTP connection managers append the verified peer to
//! `x-forwarded-client-cert` as Istio's do.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use http_connection_manager::{ForwardClientCertDetails, SetCurrentClientCertDetails};
use mesh_api::constants::{
    MESH_GATEWAY, PROXY_INBOUND_PORT, PROXY_OUTBOUND_PORT, inbound_cluster_name,
    outbound_cluster_name,
};
use mesh_api::networking::virtual_service::RouteDestination;

use super::envoy::{ads, any, boolv, duration, istio_config_metadata, socket_address, u32v};
use super::mtls::{
    EffectivePeerAuthentication, InboundMtls, inbound_chains, peer_authentication, tls_inspector,
};
use super::route::{CORS_FILTER, FAULT_FILTER, default_route, vs_routes};
use super::{Scope, XdsResources};
use crate::registry::{Protocol, Service};

/// The local-mode outbound listener (an HTTP proxy).
pub const OUTBOUND_HTTP_PROXY_LISTENER: &str = "outbound_http_proxy";
/// The route configuration of the local-mode outbound listener.
pub const HTTP_PROXY_ROUTE: &str = "http_proxy";
/// The inbound listener.
pub const VIRTUAL_INBOUND_LISTENER: &str = "virtualInbound";
/// The Kubernetes-mode capture listener for outbound traffic.
pub const VIRTUAL_OUTBOUND_LISTENER: &str = "virtualOutbound";
/// Gateway route configurations are `http.PORT`.
pub const GATEWAY_ROUTE_PREFIX: &str = "http.";

const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";
const ROUTER_FILTER: &str = "envoy.filters.http.router";

/// A gateway's `ns/name` and one server's hosts.
type ServerHosts = (String, Vec<String>);

enum RouteSource {
    Rds(String),
    Inline(Box<RouteConfiguration>),
}

/// Where an HTTP connection manager sits, which decides a few of its settings.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HcmRole {
    /// Outbound per-port listeners.
    Outbound,
    /// A gateway's listener: it faces clients outside the mesh.
    Gateway,
    /// The local-mode outbound listener, an HTTP proxy.
    OutboundProxy,
    /// The sidecar's inbound listener.
    Inbound,
}

/// An HTTP connection manager with Istio's filter order: fault, CORS, router.
fn hcm(stat_prefix: &str, routes: RouteSource, role: HcmRole) -> Filter {
    let filters = vec![
        HttpFilter {
            name: FAULT_FILTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any(
                &HttpFault::default(),
            ))),
            ..Default::default()
        },
        HttpFilter {
            name: CORS_FILTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any(&Cors::default()))),
            ..Default::default()
        },
        HttpFilter {
            name: ROUTER_FILTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(
                any(&Router::default()),
            )),
            ..Default::default()
        },
    ];
    let route_specifier = match routes {
        RouteSource::Rds(name) => http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: name,
        }),
        RouteSource::Inline(rc) => http_connection_manager::RouteSpecifier::RouteConfig(*rc),
    };
    let mut h = HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(route_specifier),
        http_filters: filters,
        // A gateway is the edge, as Istio configures it: it appends the
        // client's address to x-forwarded-for, and the proxy keeps local
        // reply details (`x-mesh-reason`) from clients outside the mesh.
        use_remote_address: Some(boolv(role == HcmRole::Gateway)),
        ..Default::default()
    };
    if role == HcmRole::Inbound {
        // Istio's inbound: the application learns the caller's verified identity from
        // `x-forwarded-client-cert`.
        h.forward_client_cert_details = ForwardClientCertDetails::AppendForward as i32;
        h.set_current_client_cert_details = Some(SetCurrentClientCertDetails {
            subject: Some(boolv(true)),
            dns: true,
            uri: true,
            ..Default::default()
        });
    }
    if role == HcmRole::OutboundProxy {
        // Clients configured with http_proxy send absolute-form request targets.
        h.http_protocol_options = Some(
            envoy_types::pb::envoy::config::core::v3::Http1ProtocolOptions {
                allow_absolute_url: Some(boolv(true)),
                ..Default::default()
            },
        );
    }
    Filter {
        name: HCM_FILTER.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(any(&h))),
    }
}

fn tcp_proxy_filter(stat_prefix: &str, specifier: tcp_proxy::ClusterSpecifier) -> Filter {
    let t = TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        cluster_specifier: Some(specifier),
        ..Default::default()
    };
    Filter {
        name: TCP_PROXY_FILTER.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(any(&t))),
    }
}

fn listener(
    name: &str,
    addr: &SocketAddr,
    direction: TrafficDirection,
    chains: Vec<FilterChain>,
) -> Listener {
    Listener {
        name: name.to_string(),
        address: Some(socket_address(
            &addr.ip().to_string(),
            u32::from(addr.port()),
        )),
        filter_chains: chains,
        traffic_direction: direction as i32,
        ..Default::default()
    }
}

fn chain(filters: Vec<Filter>) -> FilterChain {
    FilterChain {
        filters,
        ..Default::default()
    }
}

/// Routes of a service port for sidecars: its mesh VirtualService's, else the default route.
fn service_routes(
    scope: &Scope<'_>,
    svc: &Service,
    port: u32,
) -> Vec<envoy_types::pb::envoy::config::route::v3::Route> {
    match scope.mesh_virtual_service(&svc.hostname) {
        Some(vs) if !vs.spec.http.is_empty() => vs_routes(scope, vs, port, MESH_GATEWAY),
        _ => vec![default_route(
            scope,
            svc,
            &outbound_cluster_name(port, None, &svc.hostname),
            port,
        )],
    }
}

/// Every domain a caller may use for a service port; the portless forms only when `portless`.
fn domains(scope: &Scope<'_>, svc: &Service, port: u32, portless: bool) -> Vec<String> {
    let mut names = vec![svc.hostname.clone()];
    names.extend(svc.aliases(&scope.proxy.namespace));
    let mut out = Vec::new();
    for n in &names {
        out.push(format!("{n}:{port}"));
    }
    if portless {
        out.extend(names);
    }
    out
}

/// Adds a virtual host per HTTP service port to `vhosts`, skipping domains already taken (Envoy
/// rejects duplicates; the first service in registry order keeps a contested name).
fn add_vhost(
    scope: &Scope<'_>,
    svc: &Service,
    port: u32,
    portless: bool,
    taken: &mut BTreeSet<String>,
    vhosts: &mut Vec<VirtualHost>,
) {
    let domains: Vec<String> = domains(scope, svc, port, portless)
        .into_iter()
        .filter(|d| taken.insert(d.clone()))
        .collect();
    if domains.is_empty() {
        return;
    }
    vhosts.push(VirtualHost {
        name: format!("{}:{port}", svc.hostname),
        domains,
        routes: service_routes(scope, svc, port),
        metadata: scope
            .mesh_virtual_service(&svc.hostname)
            .filter(|vs| !vs.spec.http.is_empty())
            .map(|vs| istio_config_metadata(vs.meta)),
        ..Default::default()
    });
}

/// Outbound listeners of a sidecar (local mode: the HTTP proxy; else Istio's per-port shape).
pub(crate) fn sidecar_outbound(scope: &Scope<'_>, out: &mut XdsResources) {
    let local_outbound = scope.proxy.local.as_ref().and_then(|l| l.outbound);
    if let Some(addr) = local_outbound {
        let mut vhosts = Vec::new();
        let mut taken = BTreeSet::new();
        for svc in &scope.services {
            let http_ports: Vec<_> = svc.ports.iter().filter(|p| p.protocol.is_http()).collect();
            let portless = http_ports.len() == 1;
            for p in http_ports {
                add_vhost(scope, svc, p.number, portless, &mut taken, &mut vhosts);
            }
        }
        out.routes.insert(
            HTTP_PROXY_ROUTE.to_string(),
            RouteConfiguration {
                name: HTTP_PROXY_ROUTE.to_string(),
                virtual_hosts: vhosts,
                validate_clusters: Some(boolv(false)),
                ..Default::default()
            },
        );
        out.listeners.insert(
            OUTBOUND_HTTP_PROXY_LISTENER.to_string(),
            listener(
                OUTBOUND_HTTP_PROXY_LISTENER,
                &addr,
                TrafficDirection::Outbound,
                vec![chain(vec![hcm(
                    OUTBOUND_HTTP_PROXY_LISTENER,
                    RouteSource::Rds(HTTP_PROXY_ROUTE.to_string()),
                    HcmRole::OutboundProxy,
                )])],
            ),
        );
        return;
    }
    if scope.proxy.local.is_some() {
        return;
    }
    kubernetes_outbound(scope, out);
}

/// Istio's sidecar outbound shape: per HTTP port a listener `0.0.0.0_PORT` (not bound, reached
/// through `virtualOutbound`'s original destination) with RDS `PORT`; per TCP service port a
/// listener on the service address with a TCP proxy.
fn kubernetes_outbound(scope: &Scope<'_>, out: &mut XdsResources) {
    let mut by_port: BTreeMap<u32, (Vec<VirtualHost>, BTreeSet<String>)> = BTreeMap::new();
    for svc in &scope.services {
        for p in &svc.ports {
            if p.protocol.is_http() {
                let (vhosts, taken) = by_port.entry(p.number).or_default();
                add_vhost(scope, svc, p.number, true, taken, vhosts);
            } else {
                let ip = svc
                    .addresses
                    .first()
                    .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
                    .cloned()
                    .unwrap_or_else(|| "0.0.0.0".to_string());
                let name = format!("{ip}_{}", p.number);
                if out.listeners.contains_key(&name) {
                    continue;
                }
                let spec = tcp_destination(scope, svc, p.number);
                let mut l = listener(
                    &name,
                    &SocketAddr::new(ip.parse().unwrap_or([0, 0, 0, 0].into()), p.number as u16),
                    TrafficDirection::Outbound,
                    vec![chain(vec![tcp_proxy_filter(&name, spec)])],
                );
                l.bind_to_port = Some(boolv(false));
                out.listeners.insert(name, l);
            }
        }
    }
    for (port, (vhosts, _)) in by_port {
        let name = port.to_string();
        out.routes.insert(
            name.clone(),
            RouteConfiguration {
                name: name.clone(),
                virtual_hosts: vhosts,
                validate_clusters: Some(boolv(false)),
                ..Default::default()
            },
        );
        let lname = format!("0.0.0.0_{port}");
        let mut l = listener(
            &lname,
            &SocketAddr::from(([0, 0, 0, 0], port as u16)),
            TrafficDirection::Outbound,
            vec![chain(vec![hcm(
                &lname,
                RouteSource::Rds(name),
                HcmRole::Outbound,
            )])],
        );
        l.bind_to_port = Some(boolv(false));
        out.listeners.insert(lname, l);
    }
    // Unknown destinations are refused (REGISTRY_ONLY): passthrough needs ORIGINAL_DST clusters.
    let mut vo = listener(
        VIRTUAL_OUTBOUND_LISTENER,
        &SocketAddr::from(([0, 0, 0, 0], PROXY_OUTBOUND_PORT)),
        TrafficDirection::Outbound,
        vec![chain(vec![tcp_proxy_filter(
            super::BLACKHOLE_CLUSTER,
            tcp_proxy::ClusterSpecifier::Cluster(super::BLACKHOLE_CLUSTER.to_string()),
        )])],
    );
    vo.use_original_dst = Some(boolv(true));
    out.listeners
        .insert(VIRTUAL_OUTBOUND_LISTENER.to_string(), vo);
}

/// The TCP proxy target of a service port: its VirtualService's first `tcp` rule, else the
/// service's own cluster.
fn tcp_destination(scope: &Scope<'_>, svc: &Service, port: u32) -> tcp_proxy::ClusterSpecifier {
    if let Some(vs) = scope.mesh_virtual_service(&svc.hostname)
        && let Some(rule) = vs.spec.tcp.iter().find(|r| {
            r.matches.is_empty()
                || r.matches.iter().any(|m| {
                    m.port.is_none_or(|p| p == port)
                        && crate::registry::labels_match(&m.source_labels, &scope.proxy.labels)
                })
        })
    {
        return tcp_route(scope, &rule.route, &vs.meta.namespace, port);
    }
    tcp_proxy::ClusterSpecifier::Cluster(outbound_cluster_name(port, None, &svc.hostname))
}

fn tcp_route(
    scope: &Scope<'_>,
    route: &[RouteDestination],
    ns: &str,
    port: u32,
) -> tcp_proxy::ClusterSpecifier {
    let name = |d: &RouteDestination| {
        let host = scope.registry.qualify(&d.destination.host, ns);
        let p = d.destination.port_number().unwrap_or_else(|| {
            scope
                .service(&d.destination.host, ns)
                .and_then(|s| match s.ports.as_slice() {
                    [only] => Some(only.number),
                    _ => None,
                })
                .unwrap_or(port)
        });
        outbound_cluster_name(p, d.destination.subset.as_deref(), &host)
    };
    match route {
        [one] => tcp_proxy::ClusterSpecifier::Cluster(name(one)),
        [] => tcp_proxy::ClusterSpecifier::Cluster(super::BLACKHOLE_CLUSTER.to_string()),
        many => tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
            clusters: many
                .iter()
                .filter(|d| d.weight.unwrap_or(0) > 0)
                .map(|d| tcp_proxy::weighted_cluster::ClusterWeight {
                    name: name(d),
                    weight: d.weight.unwrap_or(0),
                    ..Default::default()
                })
                .collect(),
        }),
    }
}

/// The service ports this proxy's own workload serves: endpoints at the proxy's IP (and, in
/// local mode, at its inbound port).
fn own_instances<'a>(
    scope: &Scope<'a>,
) -> Vec<(&'a Service, &'a crate::registry::ServicePort, u32)> {
    let inbound = scope.proxy.local.as_ref().and_then(|l| l.inbound);
    let mut out = Vec::new();
    for svc in &scope.registry.services {
        if svc.namespace != scope.proxy.namespace {
            continue;
        }
        for p in &svc.ports {
            for ep in &svc.endpoints {
                let target = ep.port_for(p);
                let here = match inbound {
                    Some(addr) => {
                        ep.address == addr.ip().to_string() && target == u32::from(addr.port())
                    }
                    None => ep.address == scope.proxy.ip,
                };
                if here {
                    out.push((svc, p, target));
                    break;
                }
            }
        }
    }
    out
}

fn static_cluster(name: &str, ip: &str, port: u32) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(duration(super::DEFAULT_CONNECT_TIMEOUT)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(EnvoyEndpoint {
                        address: Some(socket_address(ip, port)),
                        ..Default::default()
                    })),
                    load_balancing_weight: Some(u32v(1)),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An inline route configuration sending everything to `cluster`, timeouts disabled.
fn inbound_routes(cluster: &str) -> RouteConfiguration {
    use envoy_types::pb::envoy::config::route::v3::{
        Route, RouteAction, RouteMatch, route, route_action, route_match,
    };
    RouteConfiguration {
        name: cluster.to_string(),
        validate_clusters: Some(boolv(false)),
        virtual_hosts: vec![VirtualHost {
            name: format!("{cluster}:*"),
            domains: vec!["*".to_string()],
            routes: vec![Route {
                name: "default".to_string(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_string())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        cluster.to_string(),
                    )),
                    timeout: Some(duration(std::time::Duration::ZERO)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn inbound_chain(cluster: &str, protocol: Protocol) -> Vec<Filter> {
    if protocol.is_http() {
        vec![hcm(
            cluster,
            RouteSource::Inline(Box::new(inbound_routes(cluster))),
            HcmRole::Inbound,
        )]
    } else {
        vec![tcp_proxy_filter(
            cluster,
            tcp_proxy::ClusterSpecifier::Cluster(cluster.to_string()),
        )]
    }
}

/// The inbound mTLS mode of a local-mode sidecar, whose one inbound listener serves every
/// port of its workload. `portLevelMtls` is keyed by the workload port in Istio; here that is
/// the port the WorkloadEntry (or ServiceEntry endpoint) lists, which in local mode is the
/// sidecar's inbound port. That number is assigned per run by `meshctl up`, so a key equal to
/// the number of a service port this workload serves (`9080` of `reviews`) applies too; the
/// workload port wins over service ports, and among service ports the lowest number.
fn local_port_mode(
    pa: &EffectivePeerAuthentication,
    workload_port: u32,
    instances: &[(&Service, &crate::registry::ServicePort, u32)],
) -> InboundMtls {
    if let Some(mode) = pa.per_port.get(&workload_port) {
        return *mode;
    }
    let mut service_ports: Vec<u32> = instances.iter().map(|(_, p, _)| p.number).collect();
    service_ports.sort_unstable();
    service_ports
        .iter()
        .find_map(|p| pa.per_port.get(p).copied())
        .unwrap_or(pa.mode)
}

/// The inbound listener and clusters for the proxy's own workload.
pub(crate) fn sidecar_inbound(scope: &Scope<'_>, out: &mut XdsResources) {
    let instances = own_instances(scope);
    let pa = peer_authentication(scope.config, &scope.proxy.namespace, &scope.proxy.labels);
    if let Some(local) = &scope.proxy.local {
        let (Some(inbound), Some(app)) = (local.inbound, local.app) else {
            return;
        };
        let protocol = instances
            .first()
            .map(|(_, p, _)| p.protocol)
            .unwrap_or(Protocol::Http);
        let cluster = inbound_cluster_name(u32::from(app.port()));
        out.clusters.insert(
            cluster.clone(),
            static_cluster(&cluster, &app.ip().to_string(), u32::from(app.port())),
        );
        let mode = local_port_mode(&pa, u32::from(inbound.port()), &instances);
        let mut l = listener(
            VIRTUAL_INBOUND_LISTENER,
            &inbound,
            TrafficDirection::Inbound,
            inbound_chains(mode, None, inbound_chain(&cluster, protocol)),
        );
        if mode != InboundMtls::Disable {
            l.listener_filters = vec![tls_inspector()];
        }
        out.listeners
            .insert(VIRTUAL_INBOUND_LISTENER.to_string(), l);
        return;
    }
    // Kubernetes mode: filter chains per target port, matched on the original port.
    let mut chains = Vec::new();
    let mut inspect_tls = false;
    let mut seen = BTreeSet::new();
    for (_, p, target) in instances {
        if !seen.insert(target) {
            continue;
        }
        let cluster = inbound_cluster_name(target);
        out.clusters.insert(
            cluster.clone(),
            static_cluster(&cluster, "127.0.0.1", target),
        );
        let mode = pa.mode_for_port(target);
        inspect_tls |= mode != InboundMtls::Disable;
        chains.extend(inbound_chains(
            mode,
            Some(target),
            inbound_chain(&cluster, p.protocol),
        ));
    }
    if chains.is_empty() {
        return;
    }
    let mut l = listener(
        VIRTUAL_INBOUND_LISTENER,
        &SocketAddr::from(([0, 0, 0, 0], PROXY_INBOUND_PORT)),
        TrafficDirection::Inbound,
        chains,
    );
    l.use_original_dst = Some(boolv(true));
    if inspect_tls {
        l.listener_filters = vec![tls_inspector()];
    }
    out.listeners
        .insert(VIRTUAL_INBOUND_LISTENER.to_string(), l);
}

/// A router's listeners: one per Gateway server port, HTTP servers with routes `http.PORT`
/// from the VirtualServices bound to the gateway, TCP servers with a TCP proxy.
pub(crate) fn gateway(scope: &Scope<'_>, out: &mut XdsResources) {
    let mut ports: BTreeMap<u32, (Protocol, Vec<ServerHosts>)> = BTreeMap::new();
    for (key, gw) in scope.gateways() {
        for server in &gw.servers {
            let protocol = Protocol::parse(&server.port.protocol);
            if server.tls.as_ref().is_some_and(|t| {
                !matches!(
                    t.mode,
                    None | Some(mesh_api::common::ServerTlsMode::Passthrough)
                ) || protocol == Protocol::Https
            }) {
                tracing::warn!(gateway = %key, port = server.port.number, "TLS gateway servers are not supported yet; server skipped");
                continue;
            }
            let entry = ports
                .entry(server.port.number)
                .or_insert((protocol, Vec::new()));
            entry.1.push((key.clone(), server.hosts.clone()));
        }
    }
    let local = scope.proxy.local.as_ref();
    for (port, (protocol, servers)) in ports {
        let addr = match local {
            Some(l) => match l.gateway_ports.get(&port) {
                Some(a) => *a,
                None => continue,
            },
            None => SocketAddr::from(([0, 0, 0, 0], port as u16)),
        };
        let lname = format!("{}_{}", addr.ip(), addr.port());
        let filters = if protocol.is_http() {
            let rname = format!("{GATEWAY_ROUTE_PREFIX}{port}");
            out.routes
                .insert(rname.clone(), gateway_routes(scope, &rname, port, &servers));
            vec![hcm(&lname, RouteSource::Rds(rname), HcmRole::Gateway)]
        } else {
            let spec = gateway_tcp(scope, port, &servers);
            vec![tcp_proxy_filter(&lname, spec)]
        };
        out.listeners.insert(
            lname.clone(),
            listener(
                &lname,
                &addr,
                TrafficDirection::Outbound,
                vec![chain(filters)],
            ),
        );
    }
}

/// Whether a VirtualService host is admitted by a server's `ns/host` list for a VS in `vs_ns`.
fn server_admits(server_hosts: &[String], vs_ns: &str, gw_key: &str, host: &str) -> bool {
    let gw_ns = gw_key.split('/').next().unwrap_or("");
    server_hosts.iter().any(|h| {
        let (ns, pattern) = mesh_api::host::split_namespaced_host(h);
        let ns_ok = match ns {
            None | Some("*") => true,
            Some(".") => vs_ns == gw_ns,
            Some(n) => n == vs_ns,
        };
        ns_ok && mesh_api::host::hosts_overlap(pattern, host)
    })
}

fn gateway_routes(
    scope: &Scope<'_>,
    name: &str,
    port: u32,
    servers: &[(String, Vec<String>)],
) -> RouteConfiguration {
    // vhost name -> (domains, routes); VirtualServices for the same host are merged in order.
    let mut vhosts: BTreeMap<String, VirtualHost> = BTreeMap::new();
    for (gw_key, hosts) in servers {
        for vs in scope
            .virtual_services
            .iter()
            .filter(|vs| vs.bound_to(gw_key))
        {
            let admitted: Vec<&String> = vs
                .spec
                .hosts
                .iter()
                .filter(|h| server_admits(hosts, &vs.meta.namespace, gw_key, h))
                .collect();
            if admitted.is_empty() {
                continue;
            }
            let routes = vs_routes(scope, vs, port, gw_key);
            for host in admitted {
                let vname = format!("{host}:{port}");
                let vh = vhosts.entry(vname.clone()).or_insert_with(|| VirtualHost {
                    name: vname,
                    domains: if host == "*" {
                        vec!["*".to_string()]
                    } else {
                        vec![host.clone(), format!("{host}:{port}")]
                    },
                    // The first VirtualService of the host (each route names its own).
                    metadata: Some(istio_config_metadata(vs.meta)),
                    ..Default::default()
                });
                vh.routes.extend(routes.iter().cloned());
            }
        }
    }
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts: vhosts.into_values().collect(),
        validate_clusters: Some(boolv(false)),
        ..Default::default()
    }
}

fn gateway_tcp(
    scope: &Scope<'_>,
    port: u32,
    servers: &[(String, Vec<String>)],
) -> tcp_proxy::ClusterSpecifier {
    for (gw_key, _) in servers {
        for vs in scope
            .virtual_services
            .iter()
            .filter(|vs| vs.bound_to(gw_key))
        {
            if let Some(rule) = vs.spec.tcp.iter().find(|r| {
                r.matches.is_empty() || r.matches.iter().any(|m| m.port.is_none_or(|p| p == port))
            }) {
                return tcp_route(scope, &rule.route, &vs.meta.namespace, port);
            }
        }
    }
    tcp_proxy::ClusterSpecifier::Cluster(super::BLACKHOLE_CLUSTER.to_string())
}
