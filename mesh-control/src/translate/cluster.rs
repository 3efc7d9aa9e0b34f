//! Outbound clusters and their endpoints: one cluster per service port (`outbound|PORT||HOST`)
//! and per DestinationRule subset (`outbound|PORT|SUBSET|HOST`), with the rule's traffic
//! policy (load balancer, connection pool as circuit breakers, outlier detection, client TLS).
//! Client TLS follows `mtls.rs`: ISTIO_MUTUAL and auto-mTLS to sidecars use mesh certificates.
//!
//! Policies resolve as in Istio: port-level settings replace the rule-level ones field by
//! field, and a subset's policy (itself with port-level settings) replaces the result.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlier, circuit_breakers::Thresholds,
    cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, Http1ProtocolOptions, Http2ProtocolOptions,
    HttpProtocolOptions as CommonHttpOptions, Locality, TransportSocket, data_source,
    transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, TlsCertificate, UpstreamTlsContext,
    common_tls_context::ValidationContextType,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options::ExplicitHttpConfig,
    http_protocol_options::UpstreamProtocolOptions, http_protocol_options::explicit_http_config,
};
use envoy_types::pb::google::protobuf::UInt64Value;
use mesh_api::common::ConnectionPoolSettings;
use mesh_api::constants::outbound_cluster_name;
use mesh_api::networking::destination_rule::{
    ClientTlsMode, ClientTlsSettings, DestinationRuleSpec, LoadBalancerSettings, OutlierDetection,
    SimpleLb, TrafficPolicy,
};

use super::envoy::{ads, any, duration, istio_config_metadata, u32v};
use super::mtls::{
    auto_mtls_applies, auto_mtls_matches, istio_mutual_socket, istio_sni, sidecar_endpoint_metadata,
};
use super::{Scope, XdsResources};
use crate::registry::{Resolution, Service, ServicePort};
use mesh_api::ResourceMeta;

/// Where routes with no usable destination point; a static cluster with no endpoints.
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
/// Istio's default `connectTimeout` (mesh config).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Istio's default ring size for consistent hashing.
const DEFAULT_RING_SIZE: u64 = 1024;
const HTTP_PROTOCOL_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";

/// The effective traffic policy of one cluster.
#[derive(Clone, Copy, Default)]
pub(crate) struct Policy<'a> {
    pub load_balancer: Option<&'a LoadBalancerSettings>,
    pub connection_pool: Option<&'a ConnectionPoolSettings>,
    pub outlier_detection: Option<&'a OutlierDetection>,
    pub tls: Option<&'a ClientTlsSettings>,
}

impl<'a> Policy<'a> {
    fn overlay(mut self, tp: Option<&'a TrafficPolicy>, port: u32) -> Policy<'a> {
        let Some(tp) = tp else { return self };
        self.load_balancer = tp.load_balancer.as_ref().or(self.load_balancer);
        self.connection_pool = tp.connection_pool.as_ref().or(self.connection_pool);
        self.outlier_detection = tp.outlier_detection.as_ref().or(self.outlier_detection);
        self.tls = tp.tls.as_ref().or(self.tls);
        if let Some(pl) = tp
            .port_level_settings
            .iter()
            .find(|p| p.port.as_ref().and_then(|s| s.number) == Some(port))
        {
            self.load_balancer = pl.load_balancer.as_ref().or(self.load_balancer);
            self.connection_pool = pl.connection_pool.as_ref().or(self.connection_pool);
            self.outlier_detection = pl.outlier_detection.as_ref().or(self.outlier_detection);
            self.tls = pl.tls.as_ref().or(self.tls);
        }
        self
    }
}

/// The policy for `port` and `subset` of a service governed by `dr`.
pub(crate) fn policy_for<'a>(
    dr: Option<&'a DestinationRuleSpec>,
    port: u32,
    subset: Option<&str>,
) -> Policy<'a> {
    let Some(dr) = dr else {
        return Policy::default();
    };
    let base = Policy::default().overlay(dr.traffic_policy.as_ref(), port);
    match subset.and_then(|s| dr.subset(s)) {
        Some(s) => base.overlay(s.traffic_policy.as_ref(), port),
        None => base,
    }
}

/// Adds the outbound clusters (and EDS assignments) of every service in scope.
pub(crate) fn build(scope: &Scope<'_>, out: &mut XdsResources) {
    for svc in &scope.services {
        let dr = scope.destination_rule_with_meta(svc);
        for port in &svc.ports {
            add(scope, svc, port, None, dr, out);
            if let Some((_, spec)) = dr {
                for subset in &spec.subsets {
                    add(scope, svc, port, Some(subset), dr, out);
                }
            }
        }
    }
    out.clusters.insert(
        BLACKHOLE_CLUSTER.to_string(),
        Cluster {
            name: BLACKHOLE_CLUSTER.to_string(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Static as i32,
            )),
            connect_timeout: Some(duration(DEFAULT_CONNECT_TIMEOUT)),
            ..Default::default()
        },
    );
}

fn add(
    scope: &Scope<'_>,
    svc: &Service,
    port: &ServicePort,
    subset: Option<&mesh_api::networking::destination_rule::Subset>,
    dr: Option<(&ResourceMeta, &DestinationRuleSpec)>,
    out: &mut XdsResources,
) {
    let (dr_meta, dr) = (dr.map(|(m, _)| m), dr.map(|(_, d)| d));
    let subset_name = subset.map(|s| s.name.as_str());
    let name = outbound_cluster_name(port.number, subset_name, &svc.hostname);
    let policy = policy_for(dr, port.number, subset_name);
    let selector = subset.map(|s| &s.labels);
    let assignment = load_assignment(&name, svc, port, selector);

    let mut c = Cluster {
        name: name.clone(),
        connect_timeout: Some(duration(DEFAULT_CONNECT_TIMEOUT)),
        // The DestinationRule behind the cluster, as Istio records it.
        metadata: dr_meta.map(istio_config_metadata),
        ..Default::default()
    };
    match svc.resolution {
        Resolution::Dns => {
            c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::StrictDns as i32,
            ));
            c.dns_lookup_family = cluster::DnsLookupFamily::V4Only as i32;
            c.load_assignment = Some(assignment);
        }
        // NONE (passthrough to the caller's original destination) would be an ORIGINAL_DST
        // cluster in Istio; served as EDS with whatever endpoints are known instead, which is
        // what local mode can use.
        Resolution::Static | Resolution::None => {
            c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            ));
            c.eds_cluster_config = Some(cluster::EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: name.clone(),
            });
            out.endpoints.insert(name.clone(), assignment);
        }
    }
    apply_load_balancer(&mut c, policy.load_balancer, &name);
    let mut thresholds = default_thresholds();
    let mut common = CommonHttpOptions::default();
    let mut use_h2 = port.protocol.is_http2();
    if let Some(pool) = policy.connection_pool {
        apply_connection_pool(&mut c, &mut thresholds, &mut common, &mut use_h2, pool);
    }
    c.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![thresholds],
        ..Default::default()
    });
    if port.protocol.is_http() && (use_h2 || common != CommonHttpOptions::default()) {
        let protocol = if use_h2 {
            explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                Http2ProtocolOptions::default(),
            )
        } else {
            explicit_http_config::ProtocolConfig::HttpProtocolOptions(
                Http1ProtocolOptions::default(),
            )
        };
        let options = HttpProtocolOptions {
            common_http_protocol_options: (common != CommonHttpOptions::default())
                .then_some(common),
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(protocol),
                },
            )),
            ..Default::default()
        };
        c.typed_extension_protocol_options =
            HashMap::from([(HTTP_PROTOCOL_OPTIONS_KEY.to_string(), any(&options))]);
    }
    if let Some(outlier) = policy.outlier_detection {
        apply_outlier_detection(&mut c, outlier);
    }
    let http2 = use_h2 && port.protocol.is_http();
    let mesh_sni = || istio_sni(port.number, subset_name, &svc.hostname);
    match policy.tls {
        Some(tls) => match tls.mode {
            Some(ClientTlsMode::IstioMutual) => {
                // The rule's own subjectAltNames and sni win over the derived ones, as in Istio.
                let sans = if tls.subject_alt_names.is_empty() {
                    svc.identities(scope.trust_domain)
                } else {
                    tls.subject_alt_names.clone()
                };
                let sni = tls
                    .sni
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(mesh_sni);
                c.transport_socket = Some(istio_mutual_socket(&sans, sni, http2));
            }
            Some(ClientTlsMode::Simple | ClientTlsMode::Mutual) => {
                c.transport_socket = upstream_tls(tls, &svc.hostname);
            }
            // A `tls` block without a mode is DISABLE (the proto's default): plaintext, and it
            // turns auto-mTLS off too.
            Some(ClientTlsMode::Disable) | None => {}
        },
        None if auto_mtls_applies(scope.config, svc) => {
            let mesh_tls =
                istio_mutual_socket(&svc.identities(scope.trust_domain), mesh_sni(), http2);
            c.transport_socket_matches = auto_mtls_matches(mesh_tls);
        }
        None => {}
    }
    out.clusters.insert(name, c);
}

/// Istio's defaults: circuit breakers wide open (Envoy's 1024/3 cause 503s under churn).
fn default_thresholds() -> Thresholds {
    Thresholds {
        max_connections: Some(u32v(u32::MAX)),
        max_pending_requests: Some(u32v(u32::MAX)),
        max_requests: Some(u32v(u32::MAX)),
        max_retries: Some(u32v(u32::MAX)),
        track_remaining: true,
        ..Default::default()
    }
}

fn positive(v: Option<i32>) -> Option<u32> {
    v.filter(|v| *v > 0).and_then(|v| u32::try_from(v).ok())
}

fn apply_connection_pool(
    c: &mut Cluster,
    t: &mut Thresholds,
    common: &mut CommonHttpOptions,
    use_h2: &mut bool,
    pool: &ConnectionPoolSettings,
) {
    if let Some(tcp) = &pool.tcp {
        if let Some(v) = positive(tcp.max_connections) {
            t.max_connections = Some(u32v(v));
        }
        if let Some(d) = tcp.connect_timeout {
            c.connect_timeout = Some(duration(d));
        }
        if let Some(d) = tcp.max_connection_duration {
            common.max_connection_duration = Some(duration(d));
        }
        if let Some(d) = tcp.idle_timeout {
            common.idle_timeout = Some(duration(d));
        }
    }
    if let Some(http) = &pool.http {
        if let Some(v) = positive(http.http1_max_pending_requests) {
            t.max_pending_requests = Some(u32v(v));
        }
        if let Some(v) = positive(http.http2_max_requests) {
            t.max_requests = Some(u32v(v));
        }
        if let Some(v) = positive(http.max_retries) {
            t.max_retries = Some(u32v(v));
        }
        if let Some(v) = positive(http.max_requests_per_connection) {
            common.max_requests_per_connection = Some(u32v(v));
        }
        if let Some(d) = http.idle_timeout {
            common.idle_timeout = Some(duration(d));
        }
        if http.h2_upgrade_policy == Some(mesh_api::common::H2UpgradePolicy::Upgrade) {
            *use_h2 = true;
        }
    }
}

fn apply_outlier_detection(c: &mut Cluster, o: &OutlierDetection) {
    let enforcing = |v: u32| u32v(if v > 0 { 100 } else { 0 });
    let mut out = EnvoyOutlier {
        // Success-rate ejection is not part of Istio's API: keep it off.
        enforcing_success_rate: Some(u32v(0)),
        interval: o.interval.map(duration),
        base_ejection_time: o.base_ejection_time.map(duration),
        ..Default::default()
    };
    if let Some(v) = o.consecutive_5xx_errors {
        out.consecutive_5xx = Some(u32v(v));
        out.enforcing_consecutive_5xx = Some(enforcing(v));
    }
    let gateway = o
        .consecutive_gateway_errors
        .or(o.consecutive_errors.and_then(|v| u32::try_from(v).ok()));
    if let Some(v) = gateway {
        out.consecutive_gateway_failure = Some(u32v(v));
        out.enforcing_consecutive_gateway_failure = Some(enforcing(v));
    }
    if let Some(v) = positive(o.max_ejection_percent) {
        out.max_ejection_percent = Some(u32v(v));
    }
    if o.split_external_local_origin_errors == Some(true) {
        out.split_external_local_origin_errors = true;
        if let Some(v) = o.consecutive_local_origin_failures.filter(|v| *v > 0) {
            out.consecutive_local_origin_failure = Some(u32v(v));
            out.enforcing_consecutive_local_origin_failure = Some(u32v(100));
        }
    }
    c.outlier_detection = Some(out);
    // Istio turns panic mode off unless minHealthPercent asks for it.
    let min_health = o.min_health_percent.unwrap_or(0).clamp(0, 100);
    c.common_lb_config = Some(cluster::CommonLbConfig {
        healthy_panic_threshold: Some(envoy_types::pb::envoy::r#type::v3::Percent {
            value: f64::from(min_health),
        }),
        ..Default::default()
    });
}

fn apply_load_balancer(c: &mut Cluster, lb: Option<&LoadBalancerSettings>, name: &str) {
    use cluster::LbPolicy;
    c.lb_policy = LbPolicy::LeastRequest as i32;
    let Some(lb) = lb else { return };
    if let Some(ch) = &lb.consistent_hash {
        if let Some(maglev) = &ch.maglev {
            c.lb_policy = LbPolicy::Maglev as i32;
            c.lb_config = Some(cluster::LbConfig::MaglevLbConfig(cluster::MaglevLbConfig {
                table_size: maglev.table_size.map(|value| UInt64Value { value }),
            }));
        } else {
            let ring = ch
                .ring_hash
                .as_ref()
                .and_then(|r| r.minimum_ring_size)
                .or(ch.minimum_ring_size)
                .filter(|v| *v > 0)
                .unwrap_or(DEFAULT_RING_SIZE);
            c.lb_policy = LbPolicy::RingHash as i32;
            c.lb_config = Some(cluster::LbConfig::RingHashLbConfig(
                cluster::RingHashLbConfig {
                    minimum_ring_size: Some(UInt64Value { value: ring }),
                    ..Default::default()
                },
            ));
        }
        return;
    }
    c.lb_policy = match lb.simple {
        Some(SimpleLb::RoundRobin) => LbPolicy::RoundRobin as i32,
        Some(SimpleLb::Random) => LbPolicy::Random as i32,
        Some(SimpleLb::Passthrough) => {
            tracing::warn!(
                cluster = name,
                "loadBalancer.simple PASSTHROUGH is not supported; using LEAST_REQUEST"
            );
            LbPolicy::LeastRequest as i32
        }
        Some(SimpleLb::LeastConn | SimpleLb::LeastRequest | SimpleLb::Unspecified) | None => {
            LbPolicy::LeastRequest as i32
        }
    };
}

/// `SIMPLE` and `MUTUAL` client TLS from files (`ISTIO_MUTUAL` is built by `mtls.rs`;
/// `DISABLE` is plaintext).
fn upstream_tls(tls: &ClientTlsSettings, hostname: &str) -> Option<TransportSocket> {
    let file = |path: &Option<String>| {
        path.as_ref().map(|p| DataSource {
            specifier: Some(data_source::Specifier::Filename(p.clone())),
            ..Default::default()
        })
    };
    match tls.mode {
        Some(ClientTlsMode::Simple | ClientTlsMode::Mutual) => {}
        Some(ClientTlsMode::IstioMutual | ClientTlsMode::Disable) | None => return None,
    }
    let mut common = CommonTlsContext::default();
    if tls.ca_certificates.is_some() && tls.insecure_skip_verify != Some(true) {
        common.validation_context_type = Some(ValidationContextType::ValidationContext(
            CertificateValidationContext {
                trusted_ca: file(&tls.ca_certificates),
                ..Default::default()
            },
        ));
    }
    if tls.mode == Some(ClientTlsMode::Mutual) {
        common.tls_certificates = vec![TlsCertificate {
            certificate_chain: file(&tls.client_certificate),
            private_key: file(&tls.private_key),
            ..Default::default()
        }];
    }
    let sni = tls.sni.clone().unwrap_or_else(|| {
        if hostname.starts_with('*') {
            String::new()
        } else {
            hostname.to_string()
        }
    });
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(common),
        sni,
        ..Default::default()
    };
    Some(TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
    })
}

/// The endpoints of a service port, optionally restricted to a subset's labels, grouped by
/// locality (each group weighted by the sum of its endpoints' weights).
fn load_assignment(
    name: &str,
    svc: &Service,
    port: &ServicePort,
    selector: Option<&BTreeMap<String, String>>,
) -> ClusterLoadAssignment {
    let mut groups: BTreeMap<String, Vec<LbEndpoint>> = BTreeMap::new();
    let mut weights: BTreeMap<String, u32> = BTreeMap::new();
    for ep in &svc.endpoints {
        if selector.is_some_and(|s| !ep.matches(s)) {
            continue;
        }
        let locality = ep.locality.clone().unwrap_or_default();
        *weights.entry(locality.clone()).or_default() += ep.weight;
        groups.entry(locality).or_default().push(LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(EnvoyEndpoint {
                address: Some(super::envoy::socket_address(&ep.address, ep.port_for(port))),
                ..Default::default()
            })),
            load_balancing_weight: Some(u32v(ep.weight)),
            // Picks the `tlsMode-istio` transport socket under auto-mTLS.
            metadata: ep.sidecar.then(sidecar_endpoint_metadata),
            ..Default::default()
        });
    }
    let endpoints = groups
        .into_iter()
        .map(|(locality, lb_endpoints)| {
            let mut parts = locality.splitn(3, '/');
            let loc = Locality {
                region: parts.next().unwrap_or("").to_string(),
                zone: parts.next().unwrap_or("").to_string(),
                sub_zone: parts.next().unwrap_or("").to_string(),
            };
            LocalityLbEndpoints {
                locality: (!locality.is_empty()).then_some(loc),
                load_balancing_weight: Some(u32v(weights[&locality])),
                lb_endpoints,
                ..Default::default()
            }
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints,
        ..Default::default()
    }
}
