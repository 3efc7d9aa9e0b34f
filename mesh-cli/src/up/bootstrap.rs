//! Envoy v3 bootstraps for the proxies of a local mesh: the node as Istio's agent writes it
//! (`sidecar~IP~POD.NS~NS.svc.cluster.local`, metadata `LABELS`, `NAMESPACE`, ...), plus the
//! local-mode keys that tell the control plane where each listener binds, and ADS to the
//! control plane: plaintext gRPC on its xDS port, or, with [`XdsTls`], gRPC over TLS on the
//! secure port with the proxy's bearer token. Envoy needs the secure port, as it receives its
//! certificates there (SDS over ADS); `mesh-proxy` reads the same `UpstreamTlsContext` and
//! `initial_metadata`, and also presents the workload certificate it got from the CA itself.
//! Either file runs under `mesh-proxy` and Envoy alike.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::{
    DynamicResources, StaticResources,
};
use envoy_types::pb::envoy::config::bootstrap::v3::{Admin, Bootstrap};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::api_config_source::ApiType;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::grpc_service::{EnvoyGrpc, TargetSpecifier};
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiConfigSource, ApiVersion, ConfigSource, DataSource,
    GrpcService, HeaderValue, Node, SocketAddress, TransportSocket, address, transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::subject_alt_name_matcher::SanType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, UpstreamTlsContext,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::explicit_http_config::ProtocolConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    ExplicitHttpConfig, UpstreamProtocolOptions,
};
use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Duration as ProtoDuration, Struct, Value as ProtoValue};
use mesh_api::constants::node_metadata::*;
use mesh_proxy::xds_json::{XdsJsonError, pack_any};
use serde_json::Value;

/// Name of the static cluster that reaches the control plane (Istio's name).
pub const XDS_CLUSTER: &str = "xds-grpc";
/// Cluster id the local mesh's proxies report.
pub const CLUSTER_ID: &str = "Kubernetes";
/// Istio version reported in node metadata, so tools keyed on it behave.
pub const ISTIO_VERSION: &str = "1.24.0";
/// Where the gateway writes its access log (Envoy's default format): its stdout, which `up`
/// sends to `STATE/logs/proxy-istio-ingressgateway.log` (`meshctl logs gateway`).
pub const GATEWAY_ACCESS_LOG: &str = "/dev/stdout";
/// SNI sent to the control plane's secure port (istiod's service name in Istio).
pub const XDS_TLS_SNI: &str = "istiod.istio-system.svc";

/// What makes one proxy's bootstrap.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyBootstrap {
    pub role: ProxyRole,
    /// Pod name in the node id (the workload name, or the gateway's name).
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub admin: SocketAddr,
    /// The control plane's ADS address: its plaintext xDS port, or its secure port with
    /// `xds_tls`.
    pub xds: SocketAddr,
    /// ADS over TLS, authenticated by a bearer token.
    pub xds_tls: Option<XdsTls>,
}

/// How a proxy reaches the control plane's secure port: Istio's proxies do the same (TLS to
/// istiod on 15012, its SPIFFE identity checked against the mesh root, a token in the
/// `authorization` metadata of every stream).
#[derive(Clone, PartialEq)]
pub struct XdsTls {
    /// PEM roots that verify the control plane's certificate.
    pub root_cert: PathBuf,
    /// The SPIFFE URI the control plane must present.
    pub server_identity: String,
    /// The proxy's bearer token (the bootstrap file is written owner-only for it).
    pub token: String,
}

impl std::fmt::Debug for XdsTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token itself.
        f.debug_struct("XdsTls")
            .field("root_cert", &self.root_cert)
            .field("server_identity", &self.server_identity)
            .finish_non_exhaustive()
    }
}

/// Sidecar or gateway, with the local addresses each binds.
#[derive(Debug, Clone, PartialEq)]
pub enum ProxyRole {
    Sidecar {
        outbound: SocketAddr,
        inbound: SocketAddr,
        app: SocketAddr,
    },
    /// Gateway server port -> local address.
    Router { ports: BTreeMap<u32, SocketAddr> },
}

impl ProxyBootstrap {
    /// `sidecar~127.0.0.1~NAME.NS~NS.svc.cluster.local` (or `router~...`).
    pub fn node_id(&self) -> String {
        let kind = match self.role {
            ProxyRole::Sidecar { .. } => "sidecar",
            ProxyRole::Router { .. } => "router",
        };
        format!(
            "{kind}~{}~{}.{ns}~{ns}.svc.cluster.local",
            self.admin.ip(),
            self.name,
            ns = self.namespace
        )
    }

    /// The bootstrap document (write it as JSON: Envoy and mesh-proxy both read it), built
    /// from Envoy's own messages, so that a misspelt field is a compile error, and rendered as
    /// Envoy's admin renders them.
    pub fn to_json(&self) -> Result<Value, XdsJsonError> {
        let text = |s: &str| ProtoValue {
            kind: Some(Kind::StringValue(s.to_string())),
        };
        let labels = Struct {
            fields: self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), text(v)))
                .collect(),
        };
        let mut metadata: BTreeMap<String, ProtoValue> = [
            (META_NAMESPACE, text(&self.namespace)),
            (META_SERVICE_ACCOUNT, text(&self.service_account)),
            (META_WORKLOAD_NAME, text(&self.name)),
            (META_CLUSTER_ID, text(CLUSTER_ID)),
            (META_ISTIO_VERSION, text(ISTIO_VERSION)),
            (META_LOCAL_MODE, text("true")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        metadata.insert(
            META_LABELS.to_string(),
            ProtoValue {
                kind: Some(Kind::StructValue(labels)),
            },
        );
        match &self.role {
            ProxyRole::Sidecar {
                outbound,
                inbound,
                app,
            } => {
                metadata.insert(META_OUTBOUND_ADDRESS.into(), text(&outbound.to_string()));
                metadata.insert(META_INBOUND_ADDRESS.into(), text(&inbound.to_string()));
                metadata.insert(META_APP_ADDRESS.into(), text(&app.to_string()));
            }
            ProxyRole::Router { ports } => {
                metadata.insert(META_GATEWAY_PORTS.into(), text(&gateway_ports(ports)));
                // As Istio's demo profile: the gateway logs every request (its log file).
                metadata.insert(META_ACCESS_LOG_FILE.into(), text(GATEWAY_ACCESS_LOG));
            }
        }
        // Istio's `cluster` is `app.namespace` (or the workload name).
        let app = self
            .labels
            .get("app")
            .cloned()
            .unwrap_or_else(|| self.name.clone());
        let ads = ConfigSource {
            config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
            resource_api_version: ApiVersion::V3 as i32,
            ..Default::default()
        };
        let grpc_service = GrpcService {
            target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                cluster_name: XDS_CLUSTER.to_string(),
                ..Default::default()
            })),
            initial_metadata: self
                .xds_tls
                .iter()
                .map(|tls| HeaderValue {
                    key: "authorization".to_string(),
                    value: format!("Bearer {}", tls.token),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let http2_only = HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(Default::default())),
                },
            )),
            ..Default::default()
        };
        let xds_cluster = Cluster {
            name: XDS_CLUSTER.to_string(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
            connect_timeout: Some(ProtoDuration {
                seconds: 1,
                nanos: 0,
            }),
            typed_extension_protocol_options: [(
                HTTP_PROTOCOL_OPTIONS.to_string(),
                pack_any(&http2_only),
            )]
            .into(),
            load_assignment: Some(ClusterLoadAssignment {
                cluster_name: XDS_CLUSTER.to_string(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: vec![LbEndpoint {
                        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                            address: Some(socket_address(self.xds)),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            transport_socket: self.xds_tls.as_ref().map(xds_tls_socket),
            ..Default::default()
        };
        let bootstrap = Bootstrap {
            node: Some(Node {
                id: self.node_id(),
                cluster: format!("{app}.{}", self.namespace),
                metadata: Some(Struct {
                    fields: metadata.into_iter().collect(),
                }),
                ..Default::default()
            }),
            admin: Some(Admin {
                address: Some(socket_address(self.admin)),
                ..Default::default()
            }),
            dynamic_resources: Some(DynamicResources {
                ads_config: Some(ApiConfigSource {
                    api_type: ApiType::Grpc as i32,
                    transport_api_version: ApiVersion::V3 as i32,
                    set_node_on_first_message_only: true,
                    grpc_services: vec![grpc_service],
                    ..Default::default()
                }),
                cds_config: Some(ads.clone()),
                lds_config: Some(ads),
                ..Default::default()
            }),
            static_resources: Some(StaticResources {
                clusters: vec![xds_cluster],
                ..Default::default()
            }),
            ..Default::default()
        };
        mesh_proxy::xds_json::to_value(&bootstrap)
    }
}

/// The extension name of the HTTP protocol options of a cluster.
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// TLS to the control plane's secure port: istiod's SNI, ALPN h2, the server checked against
/// the mesh root and required to be the control plane's SPIFFE identity.
fn xds_tls_socket(tls: &XdsTls) -> TransportSocket {
    let context = UpstreamTlsContext {
        sni: XDS_TLS_SNI.to_string(),
        common_tls_context: Some(CommonTlsContext {
            alpn_protocols: vec!["h2".to_string()],
            validation_context_type: Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(DataSource {
                        specifier: Some(Specifier::Filename(tls.root_cert.display().to_string())),
                        ..Default::default()
                    }),
                    match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                        san_type: SanType::Uri as i32,
                        matcher: Some(StringMatcher {
                            match_pattern: Some(MatchPattern::Exact(tls.server_identity.clone())),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(
            &context,
        ))),
    }
}

/// `MESH_GATEWAY_PORTS`: `80=127.0.0.1:18080,443=127.0.0.1:18443`.
pub fn gateway_ports(ports: &BTreeMap<u32, SocketAddr>) -> String {
    ports
        .iter()
        .map(|(p, a)| format!("{p}={a}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn socket_address(a: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: a.ip().to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(a.port()))),
            ..Default::default()
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    pub(crate) fn sidecar() -> ProxyBootstrap {
        ProxyBootstrap {
            role: ProxyRole::Sidecar {
                outbound: addr(15001),
                inbound: addr(15006),
                app: addr(5000),
            },
            name: "helloworld-safe".into(),
            namespace: "default".into(),
            labels: BTreeMap::from([
                ("app".to_string(), "helloworld".to_string()),
                ("version".to_string(), "safe".to_string()),
            ]),
            service_account: "helloworld".into(),
            admin: addr(15000),
            xds: addr(15010),
            xds_tls: None,
        }
    }

    #[test]
    fn sidecar_node_is_istio_form_with_local_addresses() {
        let b = sidecar().to_json().unwrap();
        assert_eq!(
            b["node"]["id"],
            "sidecar~127.0.0.1~helloworld-safe.default~default.svc.cluster.local"
        );
        let m = &b["node"]["metadata"];
        assert_eq!(m["LABELS"]["version"], "safe");
        assert_eq!(m["NAMESPACE"], "default");
        assert_eq!(m["SERVICE_ACCOUNT"], "helloworld");
        assert_eq!(m["WORKLOAD_NAME"], "helloworld-safe");
        assert_eq!(m["MESH_LOCAL_MODE"], "true");
        assert_eq!(m["MESH_OUTBOUND_ADDRESS"], "127.0.0.1:15001");
        assert_eq!(m["MESH_INBOUND_ADDRESS"], "127.0.0.1:15006");
        assert_eq!(m["MESH_APP_ADDRESS"], "127.0.0.1:5000");
        assert!(m.get("MESH_GATEWAY_PORTS").is_none());
        assert_eq!(b["admin"]["address"]["socket_address"]["port_value"], 15000);
        let xds = &b["static_resources"]["clusters"][0];
        assert_eq!(xds["name"], XDS_CLUSTER);
        assert_eq!(
            xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
                ["port_value"],
            15010
        );
        assert_eq!(
            b["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["cluster_name"],
            XDS_CLUSTER
        );
    }

    #[test]
    fn router_carries_gateway_ports() {
        let mut r = sidecar();
        r.role = ProxyRole::Router {
            ports: BTreeMap::from([(80, addr(18080)), (443, addr(18443))]),
        };
        r.name = "istio-ingressgateway".into();
        r.namespace = "istio-system".into();
        let b = r.to_json().unwrap();
        assert_eq!(
            b["node"]["id"],
            "router~127.0.0.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local"
        );
        assert_eq!(
            b["node"]["metadata"]["MESH_GATEWAY_PORTS"],
            "80=127.0.0.1:18080,443=127.0.0.1:18443"
        );
        assert!(b["node"]["metadata"].get("MESH_INBOUND_ADDRESS").is_none());
        assert_eq!(b["node"]["metadata"]["MESH_ACCESS_LOG_FILE"], "/dev/stdout");
        // Sidecars log no requests (their apps do).
        assert!(
            sidecar().to_json().unwrap()["node"]["metadata"]
                .get("MESH_ACCESS_LOG_FILE")
                .is_none()
        );
    }

    #[test]
    fn plaintext_ads_has_no_tls_and_no_token() {
        let b = sidecar().to_json().unwrap();
        assert!(
            b["static_resources"]["clusters"][0]
                .get("transport_socket")
                .is_none()
        );
        assert!(
            b["dynamic_resources"]["ads_config"]["grpc_services"][0]
                .get("initial_metadata")
                .is_none()
        );
    }

    #[test]
    fn secure_ads_verifies_the_control_plane_and_sends_the_token() {
        let mut s = sidecar();
        s.xds = addr(15012);
        s.xds_tls = Some(XdsTls {
            root_cert: "/state/ca/root-cert.pem".into(),
            server_identity: "spiffe://cluster.local/ns/istio-system/sa/istiod".into(),
            token: "abc123".into(),
        });
        assert!(
            !format!("{:?}", s).contains("abc123"),
            "Debug hides the token"
        );
        let b = s.to_json().unwrap();
        let svc = &b["dynamic_resources"]["ads_config"]["grpc_services"][0];
        assert_eq!(
            svc["initial_metadata"],
            serde_json::json!([{"key": "authorization", "value": "Bearer abc123"}])
        );
        let xds = &b["static_resources"]["clusters"][0];
        let tls = &xds["transport_socket"]["typed_config"];
        assert!(
            tls["@type"]
                .as_str()
                .unwrap()
                .ends_with("UpstreamTlsContext")
        );
        assert_eq!(
            tls["common_tls_context"]["alpn_protocols"],
            serde_json::json!(["h2"])
        );
        let v = &tls["common_tls_context"]["validation_context"];
        assert_eq!(v["trusted_ca"]["filename"], "/state/ca/root-cert.pem");
        assert_eq!(
            v["match_typed_subject_alt_names"][0]["matcher"]["exact"],
            "spiffe://cluster.local/ns/istio-system/sa/istiod"
        );
        assert_eq!(v["match_typed_subject_alt_names"][0]["san_type"], "URI");
        assert_eq!(
            xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
                ["port_value"],
            15012
        );
    }
}
