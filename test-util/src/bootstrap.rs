/// The Envoy v3 bootstrap (YAML) of a proxy that takes everything from one ADS server over
/// plaintext gRPC, as Istio bootstraps a sidecar: a node (id, cluster, metadata), an admin
/// on 127.0.0.1 port 0, CDS and LDS over ADS, and the static `xds-grpc` cluster (HTTP/2) to
/// the server. Read by mesh-proxy and Envoy alike.
#[derive(Debug, Clone)]
pub struct AdsBootstrap {
    node_id: String,
    cluster: String,
    metadata: String,
    xds: std::net::SocketAddr,
    admin_port: u16,
}

impl AdsBootstrap {
    /// A node `node_id` of cluster `test` with no metadata, served by `xds`.
    pub fn new(node_id: &str, xds: std::net::SocketAddr) -> AdsBootstrap {
        AdsBootstrap {
            node_id: node_id.to_string(),
            cluster: "test".to_string(),
            metadata: "{}".to_string(),
            xds,
            admin_port: 0,
        }
    }

    /// The admin's port on 127.0.0.1 (default 0: any).
    pub fn admin_port(mut self, port: u16) -> AdsBootstrap {
        self.admin_port = port;
        self
    }

    /// The node's `cluster`.
    pub fn cluster(mut self, cluster: &str) -> AdsBootstrap {
        self.cluster = cluster.to_string();
        self
    }

    /// The node's metadata, a YAML mapping (`{NAMESPACE: default, LABELS: {app: a}}`, or
    /// block style indented under `metadata:`).
    pub fn metadata(mut self, yaml: &str) -> AdsBootstrap {
        self.metadata = yaml.trim_end().to_string();
        self
    }

    pub fn yaml(&self) -> String {
        let metadata = if self.metadata.starts_with('{') {
            format!(" {}", self.metadata)
        } else {
            let indented: Vec<String> = self
                .metadata
                .lines()
                .map(|l| format!("    {}", l.trim_start()))
                .collect();
            format!("\n{}", indented.join("\n"))
        };
        format!(
            r#"node:
  id: "{id}"
  cluster: {cluster}
  metadata:{metadata}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services: [{{envoy_grpc: {{cluster_name: xds-grpc}}}}]
  cds_config: {{ads: {{}}, resource_api_version: V3}}
  lds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: xds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {ip}, port_value: {port}}}}}}}
"#,
            id = self.node_id,
            cluster = self.cluster,
            ip = self.xds.ip(),
            port = self.xds.port(),
            admin_port = self.admin_port,
        )
    }
}
