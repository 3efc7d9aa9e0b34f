//! The benchmark cases and the bootstraps they run from. Each case's bootstrap files are given
//! unchanged to Envoy and to mesh-proxy, so both proxies see the very same configuration.

use std::fmt::Write as _;
use std::str::FromStr;

/// One topology measured by the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Case {
    /// Load generator straight to the upstream: the floor every proxy case is compared with.
    Direct,
    /// One proxy, round robin over the two upstream endpoints.
    Hop1,
    /// Client-side sidecar to server-side sidecar to the upstream, HTTP/1.1 throughout.
    Hop2,
    /// As `hop2`, with HTTP/2 (prior knowledge) between the two proxies.
    Http2,
    /// One proxy with 1,000 virtual hosts and 1,000 clusters; the last host is requested.
    Routes1000,
}

pub const ALL_CASES: [Case; 5] = [
    Case::Direct,
    Case::Hop1,
    Case::Hop2,
    Case::Http2,
    Case::Routes1000,
];

/// How many services the `routes-1000` case configures.
pub const ROUTES_SERVICES: usize = 1000;

impl Case {
    pub fn name(self) -> &'static str {
        match self {
            Case::Direct => "direct",
            Case::Hop1 => "hop1",
            Case::Hop2 => "hop2",
            Case::Http2 => "http2",
            Case::Routes1000 => "routes-1000",
        }
    }

    /// Whether the case runs a proxy at all (`direct` runs none, so it runs once per round).
    pub fn has_proxy(self) -> bool {
        self != Case::Direct
    }

    /// The Host header the load generator sends.
    pub fn host(self) -> String {
        match self {
            Case::Routes1000 => service_domain(ROUTES_SERVICES - 1),
            _ => "bench.local".to_string(),
        }
    }
}

impl FromStr for Case {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ALL_CASES
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                let known: Vec<_> = ALL_CASES.iter().map(|c| c.name()).collect();
                format!("unknown case {s:?}; known: {}", known.join(", "))
            })
    }
}

/// The ports of one case's run, all on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// The two upstream endpoints (nginx listens on both).
    pub upstream: [u16; 2],
    /// The listener the load generator targets (the client-side proxy's).
    pub front: u16,
    /// The server-side proxy's listener (hop2, http2).
    pub back: u16,
    pub admin_front: u16,
    pub admin_back: u16,
}

/// One proxy process of a case: its role name and its bootstrap.
#[derive(Debug, Clone)]
pub struct ProxyBootstrap {
    pub role: &'static str,
    pub yaml: String,
}

/// The port the load generator sends to.
pub fn target_port(case: Case, ports: &Ports) -> u16 {
    match case {
        Case::Direct => ports.upstream[0],
        _ => ports.front,
    }
}

/// The bootstraps of a case, in start order (server side first, so the client side finds it).
pub fn bootstraps(case: Case, ports: &Ports) -> Vec<ProxyBootstrap> {
    let upstreams = [ports.upstream[0], ports.upstream[1]];
    match case {
        Case::Direct => Vec::new(),
        Case::Hop1 => vec![ProxyBootstrap {
            role: "sidecar",
            yaml: bootstrap(
                "sidecar",
                ports.admin_front,
                ports.front,
                &single_vhost("upstream"),
                &cluster("upstream", &upstreams, false),
            ),
        }],
        Case::Hop2 | Case::Http2 => {
            let h2 = case == Case::Http2;
            vec![
                ProxyBootstrap {
                    role: "server-sidecar",
                    yaml: bootstrap(
                        "server-sidecar",
                        ports.admin_back,
                        ports.back,
                        &single_vhost("upstream"),
                        &cluster("upstream", &upstreams, false),
                    ),
                },
                ProxyBootstrap {
                    role: "client-sidecar",
                    yaml: bootstrap(
                        "client-sidecar",
                        ports.admin_front,
                        ports.front,
                        &single_vhost("server-sidecar"),
                        &cluster("server-sidecar", &[ports.back], h2),
                    ),
                },
            ]
        }
        Case::Routes1000 => {
            let mut vhosts = String::new();
            let mut clusters = String::new();
            for i in 0..ROUTES_SERVICES {
                let name = format!("svc-{i}");
                vhosts.push_str(&vhost(&name, &service_domain(i), &name));
                clusters.push_str(&cluster(&name, &upstreams, false));
            }
            vec![ProxyBootstrap {
                role: "sidecar",
                yaml: bootstrap(
                    "sidecar",
                    ports.admin_front,
                    ports.front,
                    &vhosts,
                    &clusters,
                ),
            }]
        }
    }
}

fn service_domain(i: usize) -> String {
    format!("svc-{i}.bench.local")
}

fn single_vhost(cluster: &str) -> String {
    vhost("bench", "*", cluster)
}

fn vhost(name: &str, domain: &str, cluster: &str) -> String {
    format!(
        "            - name: {name}\n              domains: [\"{domain}\"]\n              routes:\n              - match: {{ prefix: / }}\n                route: {{ cluster: {cluster} }}\n"
    )
}

fn cluster(name: &str, ports: &[u16], h2: bool) -> String {
    let mut out = format!(
        "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n    lb_policy: ROUND_ROBIN\n"
    );
    if h2 {
        out.push_str(
            "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http2_protocol_options: {} }\n",
        );
    }
    let _ = write!(
        out,
        "    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n"
    );
    for port in ports {
        let _ = writeln!(
            out,
            "        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}"
        );
    }
    out
}

/// A whole bootstrap: one HTTP listener, no access log (neither proxy pays for logging).
fn bootstrap(node: &str, admin: u16, listen: u16, vhosts: &str, clusters: &str) -> String {
    format!(
        "# Generated by `cargo xtask bench`; run unchanged by Envoy and by mesh-proxy.
node: {{ id: {node}, cluster: bench }}
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin} }}
static_resources:
  listeners:
  - name: ingress
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {listen} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            name: bench
            virtual_hosts:
{vhosts}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{clusters}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> Ports {
        Ports {
            upstream: [5001, 5002],
            front: 10000,
            back: 10001,
            admin_front: 15000,
            admin_back: 15001,
        }
    }

    fn parse(yaml: &str) -> serde_json::Value {
        serde_saphyr::from_str(yaml).expect("bootstrap is valid YAML")
    }

    #[test]
    fn case_names_round_trip_and_unknown_names_are_listed() {
        for case in ALL_CASES {
            assert_eq!(case.name().parse::<Case>(), Ok(case));
        }
        let err = "hop3".parse::<Case>().unwrap_err();
        assert!(err.contains("hop3") && err.contains("routes-1000"), "{err}");
    }

    #[test]
    fn hop1_round_robins_over_both_upstreams() {
        let b = bootstraps(Case::Hop1, &ports());
        assert_eq!(b.len(), 1);
        let v = parse(&b[0].yaml);
        let listener = &v["static_resources"]["listeners"][0];
        assert_eq!(listener["address"]["socket_address"]["port_value"], 10000);
        let cluster = &v["static_resources"]["clusters"][0];
        assert_eq!(cluster["lb_policy"], "ROUND_ROBIN");
        let eps = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"];
        let got: Vec<_> = eps
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["endpoint"]["address"]["socket_address"]["port_value"].clone())
            .collect();
        assert_eq!(got, vec![5001, 5002]);
        assert_eq!(v["admin"]["address"]["socket_address"]["port_value"], 15000);
    }

    #[test]
    fn hop2_chains_client_sidecar_to_server_sidecar() {
        let b = bootstraps(Case::Hop2, &ports());
        assert_eq!(
            b.iter().map(|b| b.role).collect::<Vec<_>>(),
            ["server-sidecar", "client-sidecar"]
        );
        let client = parse(&b[1].yaml);
        let cluster = &client["static_resources"]["clusters"][0];
        assert_eq!(
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
                ["port_value"],
            10001
        );
        assert!(cluster.get("typed_extension_protocol_options").is_none());
        let server = parse(&b[0].yaml);
        assert_eq!(
            server["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"],
            10001
        );
        assert_eq!(
            server["admin"]["address"]["socket_address"]["port_value"],
            15001
        );
    }

    #[test]
    fn http2_speaks_h2_between_the_proxies_only() {
        let b = bootstraps(Case::Http2, &ports());
        let client = parse(&b[1].yaml);
        let opts = &client["static_resources"]["clusters"][0]["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert!(opts["explicit_http_config"]["http2_protocol_options"].is_object());
        let server = parse(&b[0].yaml);
        assert!(
            server["static_resources"]["clusters"][0]
                .get("typed_extension_protocol_options")
                .is_none()
        );
    }

    #[test]
    fn routes_1000_has_a_host_and_a_cluster_per_service_and_targets_the_last() {
        let b = bootstraps(Case::Routes1000, &ports());
        let v = parse(&b[0].yaml);
        let vhosts =
            v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
                ["route_config"]["virtual_hosts"]
                .as_array()
                .unwrap()
                .clone();
        assert_eq!(vhosts.len(), ROUTES_SERVICES);
        assert_eq!(
            v["static_resources"]["clusters"].as_array().unwrap().len(),
            ROUTES_SERVICES
        );
        let last = vhosts.last().unwrap();
        assert_eq!(last["domains"][0], Case::Routes1000.host());
        assert_eq!(last["routes"][0]["route"]["cluster"], "svc-999");
    }

    #[test]
    fn direct_has_no_proxy_and_targets_the_upstream() {
        assert!(bootstraps(Case::Direct, &ports()).is_empty());
        assert_eq!(target_port(Case::Direct, &ports()), 5001);
        assert_eq!(target_port(Case::Hop2, &ports()), 10000);
    }
}
