//! The Envoy v3 bootstrap of a proxy with no control plane, as the interop tests run it under
//! mesh-proxy and the real Envoy alike: one builder instead of a YAML template per test.

use std::net::SocketAddr;

/// A node (`id` = `cluster` = the name given), the admin on 127.0.0.1 port 0, one HTTP listener
/// `listener_0` on 127.0.0.1 port 0 whose connection manager has `stat_prefix: ingress_http`
/// and the fields the test gives, and STATIC round-robin clusters.
#[derive(Debug, Clone)]
pub struct StaticBootstrap {
    node: String,
    connection_manager: String,
    clusters: Vec<String>,
}

/// `yaml` (written at column 0) with every line indented by `by` spaces.
fn indent(yaml: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    yaml.trim_matches('\n')
        .lines()
        .map(|l| {
            if l.trim().is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl StaticBootstrap {
    pub fn new(node: &str) -> StaticBootstrap {
        StaticBootstrap {
            node: node.to_string(),
            connection_manager: String::new(),
            clusters: Vec::new(),
        }
    }

    /// The connection manager's fields besides `stat_prefix` (`route_config`, `http_filters`,
    /// timeouts), as YAML written at column 0.
    pub fn connection_manager(mut self, yaml: &str) -> StaticBootstrap {
        self.connection_manager = indent(yaml, 10);
        self
    }

    /// A cluster `name` with one endpoint.
    pub fn cluster(self, name: &str, endpoint: SocketAddr) -> StaticBootstrap {
        self.cluster_with(name, &[endpoint], "")
    }

    /// A cluster `name` with `endpoints` and `extra` fields (`circuit_breakers`,
    /// `outlier_detection`, ...), as YAML written at column 0.
    pub fn cluster_with(
        mut self,
        name: &str,
        endpoints: &[SocketAddr],
        extra: &str,
    ) -> StaticBootstrap {
        let extra = if extra.trim().is_empty() {
            String::new()
        } else {
            format!("\n{}", indent(extra, 4))
        };
        let endpoints: String = endpoints
            .iter()
            .map(|a| {
                format!(
                    "\n        - endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}",
                    a.ip(),
                    a.port()
                )
            })
            .collect();
        self.clusters.push(format!(
            "  - name: {name}\n    connect_timeout: 1s\n    type: STATIC\n    lb_policy: ROUND_ROBIN{extra}\n    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:{endpoints}"
        ));
        self
    }

    pub fn yaml(&self) -> String {
        format!(
            r#"node: {{ id: {node}, cluster: {node} }}
admin:
  address: {{socket_address: {{ address: 127.0.0.1, port_value: 0 }}}}
static_resources:
  listeners:
  - name: listener_0
    address: {{socket_address: {{ address: 127.0.0.1, port_value: 0 }}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
{hcm}
  clusters:
{clusters}
"#,
            node = self.node,
            hcm = self.connection_manager,
            clusters = self.clusters.join("\n"),
        )
    }
}
