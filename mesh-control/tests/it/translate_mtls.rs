//! Mesh mTLS translation, field by field: DestinationRule ISTIO_MUTUAL and its precedence,
//! auto-mTLS (transport socket matches and EDS metadata), DISABLE, the trust domain, and the
//! inbound side from PeerAuthentication (mesh, namespace, workload, `portLevelMtls`).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::ForwardClientCertDetails,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::subject_alt_name_matcher::SanType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, UpstreamTlsContext,
    common_tls_context::ValidationContextType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::google::protobuf::value::Kind;
use mesh_control::node::{LocalPorts, ProxyKind, ProxyNode};
use mesh_control::translate::{
    MATCH_TLS_MODE_DISABLED, MATCH_TLS_MODE_ISTIO, MeshState, SDS_DEFAULT, SDS_ROOTCA,
    TLS_INSPECTOR, TRANSPORT_SOCKET_MATCH_KEY, VIRTUAL_INBOUND_LISTENER, XdsResources, translate,
};
use prost::Message;

const MESH: &str = include_str!("../fixtures/mtls-mesh.yaml");

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
const REVIEWS_V1: &str = "outbound|9080|v1|reviews.default.svc.cluster.local";
const REVIEWS_V2: &str = "outbound|9080|v2|reviews.default.svc.cluster.local";
const RATINGS_HTTP: &str = "outbound|9080||ratings.ratings.svc.cluster.local";
const RATINGS_GRPC: &str = "outbound|9090||ratings.ratings.svc.cluster.local";
const EXTERNAL: &str = "outbound|80||api.example.com";
const REVIEWS_ID: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews";
const LEGACY_ID: &str = "spiffe://cluster.local/ns/default/sa/legacy";

fn state(extra: &str) -> MeshState {
    let config = mesh_api::load_str("mtls.yaml", &format!("{MESH}\n---\n{extra}"));
    assert!(!config.has_errors(), "{:?}", config.errors);
    MeshState::new(config)
}

/// The local-mode sidecar of reviews-v1 (inbound 16001 is what its WorkloadEntry lists).
fn reviews_v1() -> ProxyNode {
    let mut p = ProxyNode::sidecar("127.0.0.1", "reviews-v1-1", "default");
    p.labels = BTreeMap::from([
        ("app".to_string(), "reviews".to_string()),
        ("version".to_string(), "v1".to_string()),
    ]);
    p.service_account = "bookinfo-reviews".to_string();
    p.local = Some(LocalPorts {
        outbound: Some("127.0.0.1:15001".parse().unwrap()),
        inbound: Some("127.0.0.1:16001".parse().unwrap()),
        app: Some("127.0.0.1:18001".parse().unwrap()),
        ..Default::default()
    });
    p
}

fn run(extra: &str) -> XdsResources {
    translate(&state(extra), &reviews_v1())
}

fn unpack<M: Message + Default>(ts: &TransportSocket) -> M {
    match &ts.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) => {
            M::decode(any.value.as_slice()).expect("decodes")
        }
        None => panic!("transport socket {} has no typed config", ts.name),
    }
}

fn cluster<'a>(x: &'a XdsResources, name: &str) -> &'a Cluster {
    x.clusters
        .get(name)
        .unwrap_or_else(|| panic!("no cluster {name}: {:?}", x.clusters.keys()))
}

/// Asserts the mesh certificate and roots come from SDS over ADS and returns the SANs.
fn mesh_sds_and_sans(common: &CommonTlsContext) -> Vec<String> {
    assert_eq!(common.tls_certificate_sds_secret_configs.len(), 1);
    let cert = &common.tls_certificate_sds_secret_configs[0];
    assert_eq!(cert.name, SDS_DEFAULT);
    assert!(
        cert.sds_config
            .as_ref()
            .is_some_and(|c| c.resource_api_version == 2)
    );
    let Some(ValidationContextType::CombinedValidationContext(combined)) =
        &common.validation_context_type
    else {
        panic!("expected a combined validation context: {common:?}");
    };
    let roots = combined
        .validation_context_sds_secret_config
        .as_ref()
        .unwrap();
    assert_eq!(roots.name, SDS_ROOTCA);
    assert!(roots.sds_config.is_some());
    combined
        .default_validation_context
        .as_ref()
        .unwrap()
        .match_typed_subject_alt_names
        .iter()
        .map(|m| {
            assert_eq!(m.san_type, SanType::Uri as i32, "identities are URI SANs");
            match m.matcher.as_ref().and_then(|m| m.match_pattern.as_ref()) {
                Some(MatchPattern::Exact(s)) => s.clone(),
                other => panic!("SAN matcher is not exact: {other:?}"),
            }
        })
        .collect()
}

fn upstream(ts: &TransportSocket) -> (UpstreamTlsContext, Vec<String>) {
    assert_eq!(ts.name, "envoy.transport_sockets.tls");
    let ctx: UpstreamTlsContext = unpack(ts);
    let sans = mesh_sds_and_sans(ctx.common_tls_context.as_ref().unwrap());
    (ctx, sans)
}

/// The ISTIO_MUTUAL socket of a cluster under auto-mTLS (asserting the match shape).
fn auto_mtls(c: &Cluster) -> (UpstreamTlsContext, Vec<String>) {
    assert!(
        c.transport_socket.is_none(),
        "{}: transport_socket set",
        c.name
    );
    let m = &c.transport_socket_matches;
    assert_eq!(m.len(), 2, "{}: {m:?}", c.name);
    assert_eq!(m[0].name, MATCH_TLS_MODE_ISTIO);
    let crit = m[0].r#match.as_ref().unwrap();
    assert_eq!(
        crit.fields["tlsMode"].kind,
        Some(Kind::StringValue("istio".into()))
    );
    assert_eq!(m[1].name, MATCH_TLS_MODE_DISABLED);
    assert!(m[1].r#match.as_ref().unwrap().fields.is_empty());
    let raw = m[1].transport_socket.as_ref().unwrap();
    assert_eq!(raw.name, "envoy.transport_sockets.raw_buffer");
    upstream(m[0].transport_socket.as_ref().unwrap())
}

fn plaintext(c: &Cluster) {
    assert!(
        c.transport_socket.is_none(),
        "{}: {:?}",
        c.name,
        c.transport_socket
    );
    assert!(c.transport_socket_matches.is_empty(), "{}", c.name);
}

/// Per endpoint port, whether it carries the `tlsMode: istio` transport socket metadata.
fn endpoint_marks(cla: &ClusterLoadAssignment) -> BTreeMap<u32, bool> {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
    let mut out = BTreeMap::new();
    for lb in cla.endpoints.iter().flat_map(|l| &l.lb_endpoints) {
        let Some(HostIdentifier::Endpoint(ep)) = &lb.host_identifier else {
            panic!("not an endpoint")
        };
        let Some(address::Address::SocketAddress(sa)) =
            ep.address.as_ref().and_then(|a| a.address.as_ref())
        else {
            panic!("not a socket address")
        };
        let Some(socket_address::PortSpecifier::PortValue(port)) = sa.port_specifier else {
            panic!("no port")
        };
        let marked = lb
            .metadata
            .as_ref()
            .and_then(|m| m.filter_metadata.get(TRANSPORT_SOCKET_MATCH_KEY))
            .is_some_and(|s| {
                s.fields.get("tlsMode").and_then(|v| v.kind.clone())
                    == Some(Kind::StringValue("istio".into()))
            });
        out.insert(port, marked);
    }
    out
}

#[test]
fn auto_mtls_matches_sidecar_endpoints_only() {
    let x = run("");
    let (ctx, sans) = auto_mtls(cluster(&x, REVIEWS));
    assert_eq!(sans, vec![REVIEWS_ID.to_string(), LEGACY_ID.to_string()]);
    assert_eq!(
        ctx.sni,
        "outbound_.9080_._.reviews.default.svc.cluster.local"
    );
    assert_eq!(
        ctx.common_tls_context.unwrap().alpn_protocols,
        ["istio-peer-exchange", "istio"]
    );
    // The two sidecar endpoints are marked, the legacy one (no label) is not.
    assert_eq!(
        endpoint_marks(&x.endpoints[REVIEWS]),
        BTreeMap::from([(16001, true), (16002, true), (16009, false)])
    );
    // Subset clusters too (no DestinationRule: no subsets, so only the service cluster here);
    // ratings in another namespace and service account, HTTP/2 port adds h2.
    let (ctx, sans) = auto_mtls(cluster(&x, RATINGS_GRPC));
    assert_eq!(
        sans,
        ["spiffe://cluster.local/ns/ratings/sa/bookinfo-ratings"]
    );
    assert_eq!(
        ctx.common_tls_context.unwrap().alpn_protocols,
        ["istio-peer-exchange", "istio", "h2"]
    );
    auto_mtls(cluster(&x, RATINGS_HTTP));
    // MESH_EXTERNAL: no auto-mTLS even with a labelled endpoint.
    plaintext(cluster(&x, EXTERNAL));
}

#[test]
fn auto_mtls_needs_a_sidecar_endpoint() {
    let config = mesh_api::load_str(
        "plain.yaml",
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: default}
spec:
  hosts: [legacy]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: 17000}}]
"#,
    );
    let x = translate(&MeshState::new(config), &reviews_v1());
    let c = cluster(&x, "outbound|80||legacy.default.svc.cluster.local");
    plaintext(c);
    let marks = endpoint_marks(&x.endpoints["outbound|80||legacy.default.svc.cluster.local"]);
    assert_eq!(marks, BTreeMap::from([(17000, false)]));
}

#[test]
fn istio_mutual_with_istio_precedence() {
    let x = run(r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      tls: {mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://cluster.local/ns/default/sa/custom], sni: v2.mesh}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: ratings}
spec:
  host: ratings.ratings.svc.cluster.local
  trafficPolicy:
    tls: {mode: DISABLE}
    portLevelSettings:
    - port: {number: 9090}
      tls: {mode: ISTIO_MUTUAL}
"#);
    // Top level: a plain transport_socket (not matches), SANs of every endpoint's identity.
    let c = cluster(&x, REVIEWS);
    assert!(c.transport_socket_matches.is_empty());
    let (ctx, sans) = upstream(c.transport_socket.as_ref().unwrap());
    assert_eq!(sans, [REVIEWS_ID, LEGACY_ID]);
    assert_eq!(
        ctx.sni,
        "outbound_.9080_._.reviews.default.svc.cluster.local"
    );
    // Subset v1 inherits it, with its own SNI; the SANs stay the service's.
    let (ctx, sans) = upstream(cluster(&x, REVIEWS_V1).transport_socket.as_ref().unwrap());
    assert_eq!(sans, [REVIEWS_ID, LEGACY_ID]);
    assert_eq!(
        ctx.sni,
        "outbound_.9080_.v1_.reviews.default.svc.cluster.local"
    );
    // Subset v2's own settings win.
    let (ctx, sans) = upstream(cluster(&x, REVIEWS_V2).transport_socket.as_ref().unwrap());
    assert_eq!(sans, ["spiffe://cluster.local/ns/default/sa/custom"]);
    assert_eq!(ctx.sni, "v2.mesh");
    // ratings: DISABLE at the top, ISTIO_MUTUAL on port 9090 only.
    plaintext(cluster(&x, RATINGS_HTTP));
    let (ctx, _) = upstream(cluster(&x, RATINGS_GRPC).transport_socket.as_ref().unwrap());
    assert_eq!(
        ctx.sni,
        "outbound_.9090_._.ratings.ratings.svc.cluster.local"
    );
    assert_eq!(
        ctx.common_tls_context.unwrap().alpn_protocols,
        ["istio-peer-exchange", "istio", "h2"]
    );
}

#[test]
fn disable_overrides_auto_mtls_at_any_level() {
    let x = run(r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: DISABLE}
  subsets:
  - {name: v1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: ratings}
spec:
  host: ratings.ratings.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: plain, labels: {version: v1}, trafficPolicy: {tls: {mode: DISABLE}}}
"#);
    plaintext(cluster(&x, REVIEWS));
    plaintext(cluster(&x, REVIEWS_V1));
    auto_mtls(cluster(&x, RATINGS_HTTP));
    auto_mtls(cluster(
        &x,
        "outbound|9080|v1|ratings.ratings.svc.cluster.local",
    ));
    plaintext(cluster(
        &x,
        "outbound|9080|plain|ratings.ratings.svc.cluster.local",
    ));
}

#[test]
fn namespace_disable_turns_auto_mtls_off_for_its_services() {
    let x = run(r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: ratings}
spec: {mtls: {mode: DISABLE}}
"#);
    plaintext(cluster(&x, RATINGS_HTTP));
    plaintext(cluster(&x, RATINGS_GRPC));
    auto_mtls(cluster(&x, REVIEWS));
}

#[test]
fn trust_domain_sets_the_identities() {
    let s = state("").with_trust_domain("example.org");
    let x = translate(&s, &reviews_v1());
    let (_, sans) = auto_mtls(cluster(&x, REVIEWS));
    assert_eq!(
        sans,
        [
            "spiffe://example.org/ns/default/sa/bookinfo-reviews",
            "spiffe://example.org/ns/default/sa/legacy"
        ]
    );
    assert_eq!(
        MeshState::new(mesh_api::Config::default()).trust_domain,
        "cluster.local"
    );
}

#[test]
fn gateway_clusters_use_auto_mtls() {
    let mut gw = ProxyNode::sidecar("127.0.0.1", "ingress-1", "istio-system");
    gw.kind = ProxyKind::Router;
    gw.labels = BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]);
    gw.local = Some(LocalPorts::default());
    let x = translate(&state(""), &gw);
    auto_mtls(cluster(&x, REVIEWS));
    assert!(!x.listeners.contains_key(VIRTUAL_INBOUND_LISTENER));
}

// ---- inbound ----

fn inbound(x: &XdsResources) -> &Listener {
    x.listeners
        .get(VIRTUAL_INBOUND_LISTENER)
        .expect("virtualInbound")
}

fn has_tls_inspector(l: &Listener) -> bool {
    l.listener_filters.iter().any(|f| f.name == TLS_INSPECTOR)
}

/// `(destination_port, transport_protocol, terminates TLS)` of each chain.
fn chain_shape(l: &Listener) -> Vec<(Option<u32>, String, bool)> {
    l.filter_chains
        .iter()
        .map(|c| {
            let m = c.filter_chain_match.clone().unwrap_or_default();
            (
                m.destination_port.map(|p| p.value),
                m.transport_protocol,
                c.transport_socket.is_some(),
            )
        })
        .collect()
}

fn hcm(chain: &FilterChain) -> HttpConnectionManager {
    let f = &chain.filters[0];
    let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
        panic!("no typed config")
    };
    HttpConnectionManager::decode(any.value.as_slice()).unwrap()
}

const MESH_STRICT: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
"#;

#[test]
fn strict_serves_mtls_only() {
    let x = run(MESH_STRICT);
    let l = inbound(&x);
    assert!(has_tls_inspector(l));
    assert_eq!(chain_shape(l), [(None, "tls".to_string(), true)]);
    let chain = &l.filter_chains[0];
    let ctx: DownstreamTlsContext = unpack(chain.transport_socket.as_ref().unwrap());
    assert_eq!(ctx.require_client_certificate.map(|b| b.value), Some(true));
    let common = ctx.common_tls_context.unwrap();
    assert!(mesh_sds_and_sans(&common).is_empty());
    assert_eq!(common.alpn_protocols, ["h2", "http/1.1"]);
    let h = hcm(chain);
    assert_eq!(
        h.forward_client_cert_details,
        ForwardClientCertDetails::AppendForward as i32
    );
    let details = h.set_current_client_cert_details.unwrap();
    assert!(details.subject.is_some_and(|b| b.value) && details.dns && details.uri);
}

#[test]
fn permissive_is_the_default_and_serves_both() {
    let x = run("");
    let l = inbound(&x);
    assert!(has_tls_inspector(l));
    assert_eq!(
        chain_shape(l),
        [
            (None, "tls".to_string(), true),
            (None, "raw_buffer".to_string(), false)
        ]
    );
    // Both chains forward to the application with the same connection manager settings.
    for chain in &l.filter_chains {
        assert_eq!(
            hcm(chain).forward_client_cert_details,
            ForwardClientCertDetails::AppendForward as i32
        );
    }
}

#[test]
fn disable_serves_plaintext_without_inspector() {
    let x = run(r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: DISABLE}}
"#);
    let l = inbound(&x);
    assert!(!has_tls_inspector(l));
    assert_eq!(chain_shape(l), [(None, String::new(), false)]);
}

const NS_PERMISSIVE_V1_STRICT: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews-v1, namespace: default}
spec:
  selector: {matchLabels: {app: reviews, version: v1}}
  mtls: {mode: STRICT}
"#;

#[test]
fn workload_selector_overrides_namespace() {
    let s = state(&format!("{MESH_STRICT}\n---\n{NS_PERMISSIVE_V1_STRICT}"));
    let x = translate(&s, &reviews_v1());
    assert_eq!(chain_shape(inbound(&x)), [(None, "tls".to_string(), true)]);
    // reviews-v2's sidecar: the selector does not match, the namespace's PERMISSIVE applies.
    let mut v2 = reviews_v1();
    v2.labels.insert("version".into(), "v2".into());
    v2.local.as_mut().unwrap().inbound = Some("127.0.0.1:16002".parse().unwrap());
    let x = translate(&s, &v2);
    assert_eq!(chain_shape(inbound(&x)).len(), 2);
}

#[test]
fn port_level_mtls_in_local_mode() {
    let pa = |ports: &str| {
        format!(
            r#"{MESH_STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: reviews, namespace: default}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  portLevelMtls: {ports}
"#
        )
    };
    // Keyed by the service port (local workload ports are assigned per run).
    let x = run(&pa(r#"{"9080": {mode: DISABLE}}"#));
    assert_eq!(chain_shape(inbound(&x)), [(None, String::new(), false)]);
    // Keyed by the workload port as the WorkloadEntry lists it (Istio's key); it wins.
    let x = run(&pa(
        r#"{"9080": {mode: DISABLE}, "16001": {mode: PERMISSIVE}}"#,
    ));
    assert_eq!(chain_shape(inbound(&x)).len(), 2);
    // Another port's entry does not apply: mesh-wide STRICT stays.
    let x = run(&pa(r#"{"16002": {mode: DISABLE}}"#));
    assert_eq!(chain_shape(inbound(&x)), [(None, "tls".to_string(), true)]);
}

#[test]
fn port_level_mtls_in_kubernetes_mode() {
    let config = mesh_api::load_str(
        "db.yaml",
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: data}
spec:
  hosts: [db.data.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 80, name: http, protocol: HTTP, targetPort: 8080}
  - {number: 5432, name: tcp-postgres, protocol: TCP}
  - {number: 9000, name: http-admin, protocol: HTTP}
  workloadSelector: {labels: {app: db}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db-1, namespace: data}
spec: {address: 10.0.3.7, labels: {app: db, security.istio.io/tlsMode: istio}, serviceAccount: db}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: data}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: db, namespace: data}
spec:
  selector: {matchLabels: {app: db}}
  portLevelMtls: {"5432": {mode: DISABLE}, "8080": {mode: PERMISSIVE}}
"#,
    );
    assert!(!config.has_errors(), "{:?}", config.errors);
    let mut node = ProxyNode::sidecar("10.0.3.7", "db-1", "data");
    node.labels = BTreeMap::from([("app".to_string(), "db".to_string())]);
    let x = translate(&MeshState::new(config), &node);
    let l = inbound(&x);
    assert!(has_tls_inspector(l));
    let mut shape = chain_shape(l);
    shape.sort();
    assert_eq!(
        shape,
        [
            (Some(5432), String::new(), false),
            (Some(8080), "raw_buffer".to_string(), false),
            (Some(8080), "tls".to_string(), true),
            (Some(9000), "tls".to_string(), true),
        ]
    );
}

/// What mesh-proxy accepts of these resources (it compiles every golden case too).
#[test]
fn mesh_proxy_compiles_mtls_resources() {
    for extra in ["", MESH_STRICT, NS_PERMISSIVE_V1_STRICT] {
        let x = run(extra);
        let l: Vec<_> = x.listeners.values().cloned().collect();
        let r: Vec<_> = x.routes.values().cloned().collect();
        let c: Vec<_> = x.clusters.values().cloned().collect();
        let e: Vec<_> = x.endpoints.values().cloned().collect();
        if let Err(e) = mesh_proxy::compile::compile_snapshot(&l, &r, &c, &e) {
            panic!("mesh-proxy rejects the mTLS resources: {e}");
        }
    }
}

#[test]
fn registry_knows_sidecars_and_identities() {
    let s = state("");
    let reviews = s
        .registry
        .by_hostname("reviews.default.svc.cluster.local")
        .next()
        .unwrap();
    let sidecars: BTreeMap<String, (bool, String, String)> = reviews
        .endpoints
        .iter()
        .map(|e| {
            (
                e.workload_entry.clone().unwrap(),
                (e.sidecar, e.namespace.clone(), e.service_account.clone()),
            )
        })
        .collect();
    assert_eq!(
        sidecars,
        BTreeMap::from([
            (
                "default/reviews-legacy".to_string(),
                (false, "default".to_string(), "legacy".to_string())
            ),
            (
                "default/reviews-v1".to_string(),
                (true, "default".to_string(), "bookinfo-reviews".to_string())
            ),
            (
                "default/reviews-v2".to_string(),
                (true, "default".to_string(), "bookinfo-reviews".to_string())
            ),
        ])
    );
    assert!(reviews.has_sidecar_endpoints());
    assert_eq!(
        reviews.identities("td.example"),
        [
            "spiffe://td.example/ns/default/sa/bookinfo-reviews",
            "spiffe://td.example/ns/default/sa/legacy"
        ]
    );
    // Inline ServiceEntry endpoints take the entry's namespace; `subjectAltNames` join the
    // identities.
    let config = mesh_api::load_str(
        "se.yaml",
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm, namespace: vms}
spec:
  hosts: [vm.example.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http}]
  subjectAltNames: [spiffe://other.domain/ns/vms/sa/vm]
  endpoints: [{address: 10.1.1.1, serviceAccount: vm, labels: {security.istio.io/tlsMode: istio}}]
"#,
    );
    assert!(!config.has_errors(), "{:?}", config.errors);
    let r = mesh_control::registry::Registry::build(&config);
    let vm = r.by_hostname("vm.example.internal").next().unwrap();
    assert!(vm.endpoints[0].sidecar);
    assert_eq!(
        vm.identities("cluster.local"),
        [
            "spiffe://cluster.local/ns/vms/sa/vm",
            "spiffe://other.domain/ns/vms/sa/vm"
        ]
    );
}
