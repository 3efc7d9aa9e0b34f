/// The Envoy v3 bootstrap (YAML) of a proxy that takes everything from one ADS server, as
/// Istio bootstraps a sidecar: a node (id, cluster, metadata), an admin on 127.0.0.1 port 0,
/// CDS and LDS over ADS, and the static `xds-grpc` cluster (HTTP/2) to the server, in plaintext
/// or over TLS with a bearer token. Read by mesh-proxy and Envoy alike.
#[derive(Debug, Clone)]
pub struct AdsBootstrap {
    node_id: String,
    cluster: String,
    metadata: String,
    xds: std::net::SocketAddr,
    admin_port: u16,
    /// `(root file, server SAN)`: ADS over TLS, as to istiod's 15012.
    tls: Option<(std::path::PathBuf, String)>,
    token: Option<String>,
    static_listeners: String,
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
            tls: None,
            token: None,
            static_listeners: String::new(),
        }
    }

    /// ADS over TLS, as a sidecar reaches istiod's 15012: SNI `istiod.istio-system.svc`,
    /// ALPN h2, the server verified against `root_file` and required to be `server_san` (a
    /// SPIFFE URI).
    pub fn tls(mut self, root_file: &std::path::Path, server_san: &str) -> AdsBootstrap {
        self.tls = Some((root_file.to_path_buf(), server_san.to_string()));
        self
    }

    /// `authorization: Bearer TOKEN` on the ADS stream (the stream's initial metadata).
    pub fn bearer_token(mut self, token: &str) -> AdsBootstrap {
        self.token = Some(token.to_string());
        self
    }

    /// Static listeners besides the dynamic ones: YAML of the `listeners:` list under
    /// `static_resources`, indented as there (two spaces), or empty.
    pub fn static_listeners(mut self, yaml: &str) -> AdsBootstrap {
        self.static_listeners = yaml.to_string();
        self
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
        let metadata_lines = match &self.token {
            Some(token) => format!(
                "\n      initial_metadata: [{{key: authorization, value: \"Bearer {token}\"}}]"
            ),
            None => String::new(),
        };
        let tls = match &self.tls {
            Some((root, san)) => format!(
                r#"
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: istiod.istio-system.svc
        common_tls_context:
          alpn_protocols: [h2]
          validation_context:
            trusted_ca: {{filename: "{root}"}}
            match_typed_subject_alt_names:
            - san_type: URI
              matcher: {{exact: "{san}"}}"#,
                root = root.display()
            ),
            None => String::new(),
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
    grpc_services:
    - envoy_grpc: {{cluster_name: xds-grpc}}{metadata_lines}
  cds_config: {{ads: {{}}, resource_api_version: V3}}
  lds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
{static_listeners}  clusters:
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
        - endpoint: {{address: {{socket_address: {{address: {ip}, port_value: {port}}}}}}}{tls}
"#,
            id = self.node_id,
            cluster = self.cluster,
            ip = self.xds.ip(),
            port = self.xds.port(),
            admin_port = self.admin_port,
            static_listeners = self.static_listeners,
        )
    }
}
