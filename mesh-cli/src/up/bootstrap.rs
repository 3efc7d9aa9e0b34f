//! Envoy v3 bootstraps for the proxies of a local mesh: the node as Istio's agent writes it
//! (`sidecar~IP~POD.NS~NS.svc.cluster.local`, metadata `LABELS`, `NAMESPACE`, ...), plus the
//! local-mode keys that tell the control plane where each listener binds, and ADS over
//! plaintext gRPC to the control plane. The same file runs under `mesh-proxy` and Envoy.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::{Value, json};

/// Name of the static cluster that reaches the control plane (Istio's name).
pub const XDS_CLUSTER: &str = "xds-grpc";
/// Cluster id the local mesh's proxies report.
pub const CLUSTER_ID: &str = "Kubernetes";
/// Istio version reported in node metadata, so tools keyed on it behave.
pub const ISTIO_VERSION: &str = "1.24.0";

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
    pub xds: SocketAddr,
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

    /// The bootstrap document (write it as JSON: Envoy and mesh-proxy both read it).
    pub fn to_json(&self) -> Value {
        let mut metadata = json!({
            "LABELS": self.labels,
            "NAMESPACE": self.namespace,
            "SERVICE_ACCOUNT": self.service_account,
            "WORKLOAD_NAME": self.name,
            "CLUSTER_ID": CLUSTER_ID,
            "ISTIO_VERSION": ISTIO_VERSION,
            "MESH_LOCAL_MODE": "true",
        });
        match &self.role {
            ProxyRole::Sidecar {
                outbound,
                inbound,
                app,
            } => {
                metadata["MESH_OUTBOUND_ADDRESS"] = outbound.to_string().into();
                metadata["MESH_INBOUND_ADDRESS"] = inbound.to_string().into();
                metadata["MESH_APP_ADDRESS"] = app.to_string().into();
            }
            ProxyRole::Router { ports } => {
                metadata["MESH_GATEWAY_PORTS"] = gateway_ports(ports).into();
            }
        }
        // Istio's `cluster` is `app.namespace` (or the workload name).
        let app = self
            .labels
            .get("app")
            .cloned()
            .unwrap_or_else(|| self.name.clone());
        json!({
            "node": {
                "id": self.node_id(),
                "cluster": format!("{app}.{}", self.namespace),
                "metadata": metadata,
            },
            "admin": {
                "address": socket_address(self.admin),
            },
            "dynamic_resources": {
                "ads_config": {
                    "api_type": "GRPC",
                    "transport_api_version": "V3",
                    "set_node_on_first_message_only": true,
                    "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
                },
                "cds_config": {"ads": {}, "resource_api_version": "V3"},
                "lds_config": {"ads": {}, "resource_api_version": "V3"},
            },
            "static_resources": {
                "clusters": [{
                    "name": XDS_CLUSTER,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": XDS_CLUSTER,
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(self.xds)}}]}],
                    },
                }],
            },
        })
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

fn socket_address(a: SocketAddr) -> Value {
    json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}})
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
        }
    }

    #[test]
    fn sidecar_node_is_istio_form_with_local_addresses() {
        let b = sidecar().to_json();
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
        let b = r.to_json();
        assert_eq!(
            b["node"]["id"],
            "router~127.0.0.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local"
        );
        assert_eq!(
            b["node"]["metadata"]["MESH_GATEWAY_PORTS"],
            "80=127.0.0.1:18080,443=127.0.0.1:18443"
        );
        assert!(b["node"]["metadata"].get("MESH_INBOUND_ADDRESS").is_none());
    }
}
