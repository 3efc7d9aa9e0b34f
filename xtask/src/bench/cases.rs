//! The benchmark cases and the bootstraps they run from. Each case's bootstrap files are given
//! unchanged to Envoy and to mesh-proxy, so both proxies see the very same configuration.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
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
    /// As `hop2`, with mutual TLS (SPIFFE certificates from the mesh CA) between the proxies.
    Hop2Mtls,
    /// As `hop2`, with HTTP/2 (prior knowledge) between the two proxies.
    Http2,
    /// One proxy with 1,000 virtual hosts and 1,000 clusters; the last host is requested.
    Routes1000,
}

pub const ALL_CASES: [Case; 6] = [
    Case::Direct,
    Case::Hop1,
    Case::Hop2,
    Case::Hop2Mtls,
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
            Case::Hop2Mtls => "hop2-mtls",
            Case::Http2 => "http2",
            Case::Routes1000 => "routes-1000",
        }
    }

    /// Whether the case runs a proxy at all (`direct` runs none, so it runs once per round).
    pub fn has_proxy(self) -> bool {
        self != Case::Direct
    }

    /// Whether the case needs workload certificates (see [`Identities`]) before it starts.
    pub fn needs_certificates(self) -> bool {
        self == Case::Hop2Mtls
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

/// Trust domain, namespace and service accounts of the `hop2-mtls` sidecars' identities.
pub const TRUST_DOMAIN: &str = "cluster.local";
pub const NAMESPACE: &str = "bench";
pub const CLIENT_ACCOUNT: &str = "bench-client";
pub const SERVER_ACCOUNT: &str = "bench-server";
/// The SNI the client-side sidecar sends to the server-side one.
pub const SERVER_SNI: &str = "server-sidecar.bench.local";

/// `spiffe://cluster.local/ns/bench/sa/ACCOUNT`.
pub fn spiffe_uri(account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{account}")
}

/// Where one sidecar's certificate files live, named as Istio mounts them
/// (`cert-chain.pem`, `key.pem`, `root-cert.pem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFiles {
    pub cert_chain: PathBuf,
    pub private_key: PathBuf,
    pub roots: PathBuf,
}

impl IdentityFiles {
    pub fn under(dir: &Path, account: &str) -> Self {
        let d = dir.join("certs").join(account);
        IdentityFiles {
            cert_chain: d.join("cert-chain.pem"),
            private_key: d.join("key.pem"),
            roots: d.join("root-cert.pem"),
        }
    }
}

/// The certificate files of both `hop2-mtls` sidecars, under the case's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identities {
    pub client: IdentityFiles,
    pub server: IdentityFiles,
}

impl Identities {
    pub fn under(case_dir: &Path) -> Self {
        Identities {
            client: IdentityFiles::under(case_dir, CLIENT_ACCOUNT),
            server: IdentityFiles::under(case_dir, SERVER_ACCOUNT),
        }
    }
}

/// One proxy process of a case: its role name and its bootstrap.
#[derive(Debug, Clone)]
pub struct ProxyBootstrap {
    pub role: &'static str,
    pub yaml: String,
}

/// The cluster the load generator's requests leave the front (client-side) proxy by: its
/// `upstream_cx_total` and `ssl.handshake` counters show whether connections are reused.
pub fn front_cluster(case: Case) -> Option<String> {
    match case {
        Case::Direct => None,
        Case::Hop1 => Some("upstream".into()),
        Case::Hop2 | Case::Hop2Mtls | Case::Http2 => Some("server-sidecar".into()),
        Case::Routes1000 => Some(format!("svc-{}", ROUTES_SERVICES - 1)),
    }
}

/// The port the load generator sends to.
pub fn target_port(case: Case, ports: &Ports) -> u16 {
    match case {
        Case::Direct => ports.upstream[0],
        _ => ports.front,
    }
}

/// The bootstraps of a case, in start order (server side first, so the client side finds it).
/// `case_dir` is where the case's files are: `hop2-mtls` names its certificate files there
/// (see [`Identities`]), which must exist before a proxy starts.
pub fn bootstraps(case: Case, ports: &Ports, case_dir: &Path) -> Vec<ProxyBootstrap> {
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
                &cluster("upstream", &upstreams, Upstream::Http1),
                &Tls::None,
            ),
        }],
        Case::Hop2 | Case::Http2 | Case::Hop2Mtls => {
            let ids = Identities::under(case_dir);
            let (server_tls, client_tls, between) = match case {
                Case::Hop2Mtls => (
                    Tls::Server(&ids.server),
                    Tls::Client(&ids.client),
                    Upstream::Mtls,
                ),
                Case::Http2 => (Tls::None, Tls::None, Upstream::Http2),
                _ => (Tls::None, Tls::None, Upstream::Http1),
            };
            vec![
                ProxyBootstrap {
                    role: "server-sidecar",
                    yaml: bootstrap(
                        "server-sidecar",
                        ports.admin_back,
                        ports.back,
                        &single_vhost("upstream"),
                        &cluster("upstream", &upstreams, Upstream::Http1),
                        &server_tls,
                    ),
                },
                ProxyBootstrap {
                    role: "client-sidecar",
                    yaml: bootstrap(
                        "client-sidecar",
                        ports.admin_front,
                        ports.front,
                        &single_vhost("server-sidecar"),
                        &cluster("server-sidecar", &[ports.back], between),
                        &client_tls,
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
                clusters.push_str(&cluster(&name, &upstreams, Upstream::Http1));
            }
            vec![ProxyBootstrap {
                role: "sidecar",
                yaml: bootstrap(
                    "sidecar",
                    ports.admin_front,
                    ports.front,
                    &vhosts,
                    &clusters,
                    &Tls::None,
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

/// How a cluster talks to its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
    /// HTTP/1.1 over mutual TLS, as a client-side sidecar calls a server-side one: its
    /// certificate `default`, the peer checked against `ROOTCA` and the server's SPIFFE ID.
    Mtls,
}

/// The TLS side of a whole bootstrap.
#[derive(Debug, Clone, Copy)]
enum Tls<'a> {
    None,
    /// The listener requires client certificates from the client sidecar's identity.
    Server(&'a IdentityFiles),
    /// The bootstrap carries these files as its secrets, for its `Mtls` clusters.
    Client(&'a IdentityFiles),
}

fn cluster(name: &str, ports: &[u16], upstream: Upstream) -> String {
    let mut out = format!(
        "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n    lb_policy: ROUND_ROBIN\n"
    );
    match upstream {
        Upstream::Http1 => {}
        Upstream::Http2 => out.push_str(
            "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http2_protocol_options: {} }\n",
        ),
        Upstream::Mtls => {
            let _ = write!(
                out,
                "    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: {SERVER_SNI}
        common_tls_context:
{common}",
                common = common_tls_context(10, &spiffe_uri(SERVER_ACCOUNT))
            );
        }
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

/// A `CommonTlsContext`'s body at `indent`: the certificate is the static secret `default`,
/// the peer must chain to `ROOTCA` and carry `peer` as its URI SAN (as Istio configures it;
/// no ALPN, so HTTP/1.1 is spoken as configured). TLS 1.3 on both sides: Envoy's client
/// side stops at 1.2 unless told, and the two proxies should pay for the same protocol.
fn common_tls_context(indent: usize, peer: &str) -> String {
    let pad = " ".repeat(indent);
    format!(
        "{pad}tls_params: {{ tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3 }}
{pad}tls_certificate_sds_secret_configs: [{{ name: default }}]
{pad}combined_validation_context:
{pad}  default_validation_context:
{pad}    match_typed_subject_alt_names: [{{ san_type: URI, matcher: {{ exact: {peer} }} }}]
{pad}  validation_context_sds_secret_config: {{ name: ROOTCA }}
",
        peer = quote(peer)
    )
}

/// A YAML double-quoted scalar (JSON's quoting is valid YAML).
fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// `static_resources.secrets`: `default` and `ROOTCA`, the names Istio's SDS serves, read
/// from the files (both proxies read `filename` data sources at start-up).
fn secrets(files: &IdentityFiles) -> String {
    let f = |p: &Path| quote(&p.display().to_string());
    format!(
        "  secrets:
  - name: default
    tls_certificate:
      certificate_chain: {{ filename: {chain} }}
      private_key: {{ filename: {key} }}
  - name: ROOTCA
    validation_context:
      trusted_ca: {{ filename: {roots} }}
",
        chain = f(&files.cert_chain),
        key = f(&files.private_key),
        roots = f(&files.roots)
    )
}

/// A whole bootstrap: one HTTP listener, no access log (neither proxy pays for logging).
fn bootstrap(
    node: &str,
    admin: u16,
    listen: u16,
    vhosts: &str,
    clusters: &str,
    tls: &Tls<'_>,
) -> String {
    let (listener_tls, secret_list) = match tls {
        Tls::None => (String::new(), String::new()),
        Tls::Server(files) => (
            format!(
                "      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
{}",
                common_tls_context(12, &spiffe_uri(CLIENT_ACCOUNT))
            ),
            secrets(files),
        ),
        Tls::Client(files) => (String::new(), secrets(files)),
    };
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
{listener_tls}  clusters:
{clusters}{secret_list}"
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
        let b = bootstraps(Case::Hop1, &ports(), Path::new("/b"));
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
        let b = bootstraps(Case::Hop2, &ports(), Path::new("/b"));
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
        let b = bootstraps(Case::Http2, &ports(), Path::new("/b"));
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
    fn hop2_mtls_is_hop2_with_mutual_tls_between_the_sidecars_only() {
        let dir = Path::new("/out/cases/hop2-mtls");
        let b = bootstraps(Case::Hop2Mtls, &ports(), dir);
        assert_eq!(
            b.iter().map(|b| b.role).collect::<Vec<_>>(),
            ["server-sidecar", "client-sidecar"]
        );
        let (server, client) = (parse(&b[0].yaml), parse(&b[1].yaml));
        let ids = Identities::under(dir);
        let secret_files = |v: &serde_json::Value, files: &IdentityFiles| {
            let s = &v["static_resources"]["secrets"];
            assert_eq!(s[0]["name"], "default");
            let cert = &s[0]["tls_certificate"];
            assert_eq!(
                cert["certificate_chain"]["filename"],
                files.cert_chain.display().to_string()
            );
            assert_eq!(
                cert["private_key"]["filename"],
                files.private_key.display().to_string()
            );
            assert_eq!(s[1]["name"], "ROOTCA");
            assert_eq!(
                s[1]["validation_context"]["trusted_ca"]["filename"],
                files.roots.display().to_string()
            );
        };
        secret_files(&server, &ids.server);
        secret_files(&client, &ids.client);
        assert_eq!(
            ids.server.cert_chain,
            Path::new("/out/cases/hop2-mtls/certs/bench-server/cert-chain.pem")
        );

        // The server side's listener requires a client certificate of the client's identity.
        let listener = &server["static_resources"]["listeners"][0];
        let down = &listener["filter_chains"][0]["transport_socket"];
        assert_eq!(down["name"], "envoy.transport_sockets.tls");
        let ctx = &down["typed_config"];
        assert!(
            ctx["@type"]
                .as_str()
                .unwrap()
                .ends_with("DownstreamTlsContext")
        );
        assert_eq!(ctx["require_client_certificate"], true);
        let common = &ctx["common_tls_context"];
        assert_eq!(
            common["tls_certificate_sds_secret_configs"][0]["name"],
            "default"
        );
        let validation = &common["combined_validation_context"];
        assert_eq!(
            validation["validation_context_sds_secret_config"]["name"],
            "ROOTCA"
        );
        let san = &validation["default_validation_context"]["match_typed_subject_alt_names"][0];
        assert_eq!(san["san_type"], "URI");
        assert_eq!(
            san["matcher"]["exact"],
            "spiffe://cluster.local/ns/bench/sa/bench-client"
        );
        // The HTTP filters are still the filter chain's, not displaced by the TLS block.
        assert_eq!(
            listener["filter_chains"][0]["filters"][0]["name"],
            "envoy.filters.network.http_connection_manager"
        );
        // ... and its upstream (nginx) is plaintext.
        assert!(
            server["static_resources"]["clusters"][0]
                .get("transport_socket")
                .is_none()
        );

        // The client side calls the server side over TLS, checking the server's identity.
        let cluster = &client["static_resources"]["clusters"][0];
        assert_eq!(
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
                ["port_value"],
            10001
        );
        let up = &cluster["transport_socket"]["typed_config"];
        assert!(
            up["@type"]
                .as_str()
                .unwrap()
                .ends_with("UpstreamTlsContext")
        );
        assert_eq!(up["sni"], SERVER_SNI);
        assert_eq!(
            up["common_tls_context"]["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"]
                [0]["matcher"]["exact"],
            "spiffe://cluster.local/ns/bench/sa/bench-server"
        );
        assert!(cluster.get("typed_extension_protocol_options").is_none());
        // Its own listener, where the load generator sends, is plaintext.
        assert!(
            client["static_resources"]["listeners"][0]["filter_chains"][0]
                .get("transport_socket")
                .is_none()
        );
        assert!(Case::Hop2Mtls.needs_certificates() && !Case::Hop2.needs_certificates());
    }

    #[test]
    fn only_hop2_mtls_has_secrets() {
        for case in ALL_CASES.into_iter().filter(|c| *c != Case::Hop2Mtls) {
            for b in bootstraps(case, &ports(), Path::new("/b")) {
                assert!(!b.yaml.contains("secrets:"), "{}: {}", case.name(), b.yaml);
                assert!(!b.yaml.contains("transport_socket"), "{}", case.name());
            }
        }
    }

    #[test]
    fn routes_1000_has_a_host_and_a_cluster_per_service_and_targets_the_last() {
        let b = bootstraps(Case::Routes1000, &ports(), Path::new("/b"));
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
        assert!(bootstraps(Case::Direct, &ports(), Path::new("/b")).is_empty());
        assert_eq!(target_port(Case::Direct, &ports()), 5001);
        assert_eq!(target_port(Case::Hop2, &ports()), 10000);
    }
}
