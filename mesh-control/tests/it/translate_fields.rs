//! Translation unit tests asserting the Istio semantics of specific fields: cluster names,
//! weights, retry policy, fault percentages, load balancing, circuit breakers, visibility.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::listener::v3::filter;
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, route, route_action,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{HttpFault, fault_abort};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use mesh_control::node::{LocalPorts, ProxyNode};
use mesh_control::registry::{Registry, Resolution};
use mesh_control::translate::{
    HTTP_PROXY_ROUTE, MeshState, OUTBOUND_HTTP_PROXY_LISTENER, VIRTUAL_INBOUND_LISTENER,
    XdsResources, translate,
};
use prost::Message;

const REVIEWS: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1}
spec: {address: 127.0.0.1, ports: {http: 16001}, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2}
spec: {address: 127.0.0.1, ports: {http: 16002}, labels: {app: reviews, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

const CLUSTER: &str = "outbound|9080||reviews.default.svc.cluster.local";
const V1: &str = "outbound|9080|v1|reviews.default.svc.cluster.local";
const V2: &str = "outbound|9080|v2|reviews.default.svc.cluster.local";

fn state(extra: &str) -> MeshState {
    let config = mesh_api::load_str("test.yaml", &format!("{REVIEWS}\n---\n{extra}"));
    assert!(!config.has_errors(), "{:?}", config.errors);
    MeshState::new(config)
}

fn local_sidecar(ns: &str) -> ProxyNode {
    let mut p = ProxyNode::sidecar("127.0.0.1", "sleep-1", ns);
    p.local = Some(LocalPorts {
        outbound: Some("127.0.0.1:15001".parse().unwrap()),
        ..Default::default()
    });
    p
}

fn run(extra: &str) -> XdsResources {
    translate(&state(extra), &local_sidecar("default"))
}

fn reviews_routes(x: &XdsResources) -> Vec<Route> {
    let rc: &RouteConfiguration = &x.routes[HTTP_PROXY_ROUTE];
    rc.virtual_hosts
        .iter()
        .find(|v| v.name == "reviews.default.svc.cluster.local:9080")
        .expect("reviews virtual host")
        .routes
        .clone()
}

fn action(r: &Route) -> &RouteAction {
    match &r.action {
        Some(route::Action::Route(a)) => a,
        other => panic!("not a route action: {other:?}"),
    }
}

fn fault(r: &Route) -> HttpFault {
    HttpFault::decode(
        r.typed_per_filter_config["envoy.filters.http.fault"]
            .value
            .as_slice(),
    )
    .unwrap()
}

#[test]
fn clusters_per_port_and_subset_with_filtered_endpoints() {
    let x = run("");
    for name in [CLUSTER, V1, V2] {
        let c: &Cluster = &x.clusters[name];
        assert_eq!(
            c.cluster_discovery_type,
            Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32
            ))
        );
        let eds = c.eds_cluster_config.as_ref().unwrap();
        assert_eq!(eds.service_name, name);
        assert!(
            eds.eds_config
                .as_ref()
                .unwrap()
                .config_source_specifier
                .is_some()
        );
        // Istio's default load balancer.
        assert_eq!(c.lb_policy, cluster::LbPolicy::LeastRequest as i32);
    }
    let ports = |name: &str| -> Vec<u32> {
        x.endpoints[name]
            .endpoints
            .iter()
            .flat_map(|l| &l.lb_endpoints)
            .map(|e| {
                let Some(envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else { panic!() };
                let Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(sa)) = &ep.address.as_ref().unwrap().address else { panic!() };
                match sa.port_specifier {
                    Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(p)) => p,
                    _ => panic!(),
                }
            })
            .collect()
    };
    assert_eq!(ports(CLUSTER), vec![16001, 16002]);
    assert_eq!(ports(V1), vec![16001]);
    assert_eq!(ports(V2), vec![16002]);
}

#[test]
fn default_route_has_istio_defaults() {
    let x = run("");
    let routes = reviews_routes(&x);
    assert_eq!(routes.len(), 1);
    let a = action(&routes[0]);
    assert_eq!(
        a.cluster_specifier,
        Some(route_action::ClusterSpecifier::Cluster(CLUSTER.into()))
    );
    // Timeouts disabled, default retry policy.
    assert_eq!(a.timeout.as_ref().unwrap().seconds, 0);
    let rp = a.retry_policy.as_ref().unwrap();
    assert_eq!(rp.num_retries.as_ref().unwrap().value, 2);
    assert_eq!(
        rp.retry_on,
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    );
    assert_eq!(rp.host_selection_retry_max_attempts, 5);
    assert_eq!(
        rp.retry_host_predicate[0].name,
        "envoy.retry_host_predicates.previous_hosts"
    );
}

#[test]
fn local_mode_domains_and_listener() {
    let x = run("");
    let rc = &x.routes[HTTP_PROXY_ROUTE];
    let vh = &rc.virtual_hosts[0];
    for d in [
        "reviews.default.svc.cluster.local:9080",
        "reviews:9080",
        "reviews.default:9080",
        "reviews.default.svc:9080",
        "reviews",
        "reviews.default.svc.cluster.local",
    ] {
        assert!(
            vh.domains.contains(&d.to_string()),
            "{d} missing in {:?}",
            vh.domains
        );
    }
    let l = &x.listeners[OUTBOUND_HTTP_PROXY_LISTENER];
    let f = &l.filter_chains[0].filters[0];
    let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
        panic!()
    };
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
        panic!("RDS expected")
    };
    assert_eq!(rds.route_config_name, HTTP_PROXY_ROUTE);
    let names: Vec<_> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "envoy.filters.http.fault",
            "envoy.filters.http.cors",
            "envoy.filters.http.router"
        ]
    );
    // A proxy from another namespace does not get the short name.
    let other = translate(&state(""), &local_sidecar("elsewhere"));
    let vh = &other.routes[HTTP_PROXY_ROUTE].virtual_hosts[0];
    assert!(!vh.domains.contains(&"reviews".to_string()));
    assert!(vh.domains.contains(&"reviews.default".to_string()));
}

#[test]
fn weighted_destinations_to_subset_clusters() {
    let x = run(r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 75}
    - {destination: {host: reviews.default.svc.cluster.local, subset: v2}, weight: 25}
"#);
    let routes = reviews_routes(&x);
    let Some(route_action::ClusterSpecifier::WeightedClusters(w)) =
        &action(&routes[0]).cluster_specifier
    else {
        panic!("weighted clusters expected")
    };
    let got: Vec<_> = w
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.as_ref().unwrap().value))
        .collect();
    assert_eq!(got, [(V1, 75), (V2, 25)]);
}

#[test]
fn retries_custom_and_disabled() {
    let x = run(r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /a}}]
    retries: {attempts: 4, perTryTimeout: 250ms, retryOn: "5xx,429"}
    route: [{destination: {host: reviews}}]
  - retries: {attempts: 0}
    route: [{destination: {host: reviews}}]
"#);
    let routes = reviews_routes(&x);
    let rp = action(&routes[0]).retry_policy.as_ref().unwrap();
    assert_eq!(rp.num_retries.as_ref().unwrap().value, 4);
    assert_eq!(rp.retry_on, "5xx,retriable-status-codes");
    assert_eq!(rp.retriable_status_codes, [429]);
    assert_eq!(rp.per_try_timeout.as_ref().unwrap().nanos, 250_000_000);
    assert!(action(&routes[1]).retry_policy.is_none());
}

#[test]
fn fault_percentages_and_status() {
    let x = run(r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - fault:
      abort: {httpStatus: 418, percentage: {value: 12.5}}
      delay: {fixedDelay: 2s, percentage: {value: 100}}
    route: [{destination: {host: reviews}}]
"#);
    let f = fault(&reviews_routes(&x)[0]);
    let abort = f.abort.unwrap();
    assert_eq!(
        abort.error_type,
        Some(fault_abort::ErrorType::HttpStatus(418))
    );
    let p = abort.percentage.unwrap();
    assert_eq!(
        (p.numerator, p.denominator),
        (125_000, DenominatorType::Million as i32)
    );
    let delay = f.delay.unwrap();
    assert_eq!(delay.percentage.unwrap().numerator, 1_000_000);
    let Some(fault_delay::FaultDelaySecifier::FixedDelay(d)) = delay.fault_delay_secifier else {
        panic!()
    };
    assert_eq!(d.seconds, 2);
}

#[test]
fn source_labels_select_rules_per_proxy() {
    let s = state(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"#,
    );
    let mut pp = local_sidecar("default");
    pp.labels.insert("app".into(), "productpage".into());
    let routes = |p: &ProxyNode| {
        reviews_routes(&translate(&s, p))
            .iter()
            .map(|r| match &action(r).cluster_specifier {
                Some(route_action::ClusterSpecifier::Cluster(c)) => c.clone(),
                _ => panic!(),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(routes(&pp), [V2, V1]);
    assert_eq!(routes(&local_sidecar("default")), [V1]);
}

#[test]
fn destination_rule_policies() {
    // Host-level policy with a subset overriding only its load balancer.
    let cfg = mesh_api::load_str(
        "t.yaml",
        &REVIEWS.replace(
            "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n",
            "  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    connectionPool:\n      tcp: {maxConnections: 7}\n      http: {http1MaxPendingRequests: 3, http2MaxRequests: 9, maxRetries: 2}\n    outlierDetection: {consecutive5xxErrors: 4, interval: 10s, baseEjectionTime: 1m, maxEjectionPercent: 30}\n  subsets:\n  - name: v1\n    labels: {version: v1}\n    trafficPolicy:\n      loadBalancer: {simple: RANDOM}\n  - {name: v2, labels: {version: v2}}\n",
        ),
    );
    assert!(!cfg.has_errors(), "{:?}", cfg.errors);
    let x = translate(&MeshState::new(cfg), &local_sidecar("default"));
    let c = &x.clusters[CLUSTER];
    assert_eq!(c.lb_policy, cluster::LbPolicy::RoundRobin as i32);
    let t = &c.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(t.max_connections.as_ref().unwrap().value, 7);
    assert_eq!(t.max_pending_requests.as_ref().unwrap().value, 3);
    assert_eq!(t.max_requests.as_ref().unwrap().value, 9);
    assert_eq!(t.max_retries.as_ref().unwrap().value, 2);
    let o = c.outlier_detection.as_ref().unwrap();
    assert_eq!(o.consecutive_5xx.as_ref().unwrap().value, 4);
    assert_eq!(o.enforcing_consecutive_5xx.as_ref().unwrap().value, 100);
    assert_eq!(o.base_ejection_time.as_ref().unwrap().seconds, 60);
    assert_eq!(o.max_ejection_percent.as_ref().unwrap().value, 30);
    // The subset overrides the load balancer and inherits the rest.
    let v1 = &x.clusters[V1];
    assert_eq!(v1.lb_policy, cluster::LbPolicy::Random as i32);
    assert_eq!(
        v1.circuit_breakers.as_ref().unwrap().thresholds[0]
            .max_connections
            .as_ref()
            .unwrap()
            .value,
        7
    );
    // Without a connection pool, Istio's wide-open defaults.
    let plain = run("");
    let t = &plain.clusters[CLUSTER]
        .circuit_breakers
        .as_ref()
        .unwrap()
        .thresholds[0];
    assert_eq!(t.max_connections.as_ref().unwrap().value, u32::MAX);
}

#[test]
fn registry_resolves_every_name_form() {
    let s = state(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: web}
spec:
  hosts: [api.example.com]
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
"#,
    );
    let r: &Registry = &s.registry;
    for (host, ns) in [
        ("reviews", "default"),
        ("reviews.default", "other"),
        ("reviews.default.svc.cluster.local", "other"),
    ] {
        assert_eq!(
            r.resolve(host, ns).map(|s| s.hostname.as_str()),
            Some("reviews.default.svc.cluster.local"),
            "{host} from {ns}"
        );
    }
    assert!(r.resolve("reviews", "other").is_none());
    let ext = r.resolve("api.example.com", "default").unwrap();
    assert_eq!(ext.resolution, Resolution::Dns);
    // DNS without endpoints resolves the host itself.
    assert_eq!(ext.endpoints[0].address, "api.example.com");
    let json = serde_json::to_value(r).unwrap();
    assert!(json["services"].as_array().unwrap().len() >= 2);
}

#[test]
fn export_to_hides_services_from_other_namespaces() {
    let s = state(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: private, namespace: team}
spec:
  hosts: [private]
  exportTo: ["."]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
"#,
    );
    let name = "outbound|80||private.team.svc.cluster.local";
    assert!(
        !translate(&s, &local_sidecar("default"))
            .clusters
            .contains_key(name)
    );
    assert!(
        translate(&s, &local_sidecar("team"))
            .clusters
            .contains_key(name)
    );
}

#[test]
fn inbound_listener_in_local_mode() {
    let mut p = ProxyNode::sidecar("127.0.0.1", "reviews-v1-1", "default");
    p.labels.insert("app".into(), "reviews".into());
    p.local = Some(LocalPorts {
        inbound: Some("127.0.0.1:16001".parse().unwrap()),
        app: Some("127.0.0.1:9081".parse().unwrap()),
        ..Default::default()
    });
    let x = translate(&state(""), &p);
    let l = &x.listeners[VIRTUAL_INBOUND_LISTENER];
    assert!(format!("{:?}", l.address).contains("16001"));
    let c = &x.clusters["inbound|9081||"];
    assert!(format!("{:?}", c.load_assignment).contains("9081"));
    // No outbound address: no outbound listener.
    assert!(!x.listeners.contains_key(OUTBOUND_HTTP_PROXY_LISTENER));
}

/// Istio's `filter_metadata.istio.config` of a resource, if any.
fn istio_config(m: Option<&envoy_types::pb::envoy::config::core::v3::Metadata>) -> Option<String> {
    use envoy_types::pb::google::protobuf::value::Kind;
    match m?
        .filter_metadata
        .get("istio")?
        .fields
        .get("config")?
        .kind
        .as_ref()?
    {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

#[test]
fn clusters_routes_and_virtual_hosts_name_the_istio_resource_they_come_from() {
    let x = run(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews-split}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n",
    );
    let dr = "/apis/networking.istio.io/v1/namespaces/default/destination-rule/reviews";
    for name in [CLUSTER, V1, V2] {
        assert_eq!(
            istio_config(x.clusters[name].metadata.as_ref()).as_deref(),
            Some(dr),
            "{name}"
        );
    }
    let vs = "/apis/networking.istio.io/v1/namespaces/default/virtual-service/reviews-split";
    let routes = reviews_routes(&x);
    assert_eq!(
        istio_config(routes[0].metadata.as_ref()).as_deref(),
        Some(vs)
    );
    let rc: &RouteConfiguration = &x.routes[HTTP_PROXY_ROUTE];
    let vh = rc
        .virtual_hosts
        .iter()
        .find(|v| v.name == "reviews.default.svc.cluster.local:9080")
        .unwrap();
    assert_eq!(istio_config(vh.metadata.as_ref()).as_deref(), Some(vs));
    // Without a VirtualService the default route names none; the blackhole cluster no rule.
    let plain = run("");
    assert_eq!(
        istio_config(reviews_routes(&plain)[0].metadata.as_ref()),
        None
    );
    assert_eq!(
        istio_config(plain.clusters["BlackHoleCluster"].metadata.as_ref()),
        None
    );
}

/// In Kubernetes mode a proxy is what its Pod says (istiod's rule): the Pod named by the node
/// id (or with its IP) gives the labels that select Gateways, Sidecars and policies, over the
/// metadata's LABELS.
#[test]
fn a_proxys_pod_gives_its_labels() {
    let gateway = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
"#;
    let pod = |name: &str, ip: &str, labels: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: istio-system, labels: {labels}}}\nspec: {{containers: [{{name: istio-proxy, image: mesh-proxy}}]}}\nstatus: {{podIP: {ip}}}\n"
        )
    };
    let router = |labels: &[(&str, &str)]| {
        let mut node = ProxyNode::sidecar("10.0.0.5", "ingress-7f9-abcde", "istio-system");
        node.kind = mesh_control::node::ProxyKind::Router;
        node.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        node
    };
    let listeners = |config: &str, node: &ProxyNode| translate(&state(config), node).listeners;

    // No Pod: the metadata's labels are all there is.
    assert!(listeners(gateway, &router(&[])).is_empty());
    assert!(!listeners(gateway, &router(&[("istio", "ingressgateway")])).is_empty());
    // The Pod by name, by IP: its labels select the Gateway.
    let by_name = format!(
        "{gateway}{}",
        pod("ingress-7f9-abcde", "10.0.0.99", "{istio: ingressgateway}")
    );
    assert!(!listeners(&by_name, &router(&[])).is_empty());
    let by_ip = format!(
        "{gateway}{}",
        pod("other-name", "10.0.0.5", "{istio: ingressgateway}")
    );
    assert!(!listeners(&by_ip, &router(&[])).is_empty());
    // A proxy cannot claim labels its Pod does not have.
    let plain = format!(
        "{gateway}{}",
        pod("ingress-7f9-abcde", "10.0.0.5", "{app: web}")
    );
    assert!(listeners(&plain, &router(&[("istio", "ingressgateway")])).is_empty());
}
