//! Certificates from the mesh CA, bootstraps with mTLS listeners and
//! clusters (static SDS-named secrets), and a log capture for reasons.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use mesh_ca::{CaConfig, CertificateAuthority, SpiffeId};
use mesh_proxy::bootstrap::parse_bootstrap;
use mesh_proxy::server::{Bound, ProxyConfig, build};

/// A workload certificate as PEM texts.
#[derive(Clone, Debug)]
pub struct Pem {
    pub chain: String,
    pub key: String,
    /// The roots that verify it (and its peers).
    pub roots: String,
    pub uri: String,
    pub leaf_der: Vec<u8>,
}

pub fn ca(trust_domain: &str) -> CertificateAuthority {
    CertificateAuthority::generate(CaConfig::for_trust_domain(trust_domain)).expect("CA")
}

pub fn issue(ca: &CertificateAuthority, ns: &str, sa: &str) -> Pem {
    let id = SpiffeId::new(ca.trust_domain(), ns, sa).unwrap();
    let issued = ca.issue_identity(&id, &[], None).expect("issue");
    Pem {
        chain: issued.chain_pem(),
        key: pem::encode(&pem::Pem::new("PRIVATE KEY", issued.key.secret_der())),
        roots: issued.roots.to_pem(),
        uri: id.to_uri(),
        leaf_der: issued.leaf().as_ref().to_vec(),
    }
}

/// A CA of its own (rcgen) and a leaf for `uri` that expired yesterday.
pub fn expired(uri: &str) -> Pem {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(2);
    params.not_after = now - time::Duration::days(1);
    let leaf = params.signed_by(&key, &issuer).unwrap();
    Pem {
        chain: leaf.pem(),
        key: key.serialize_pem(),
        roots: ca_cert.pem(),
        uri: uri.to_string(),
        leaf_der: leaf.der().to_vec(),
    }
}

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// `static_resources.secrets` named as Istio's SDS ones: `default`, `ROOTCA`.
pub fn secrets(cert: &Pem, roots: &str) -> String {
    format!(
        r#"
  secrets:
  - name: default
    tls_certificate:
      certificate_chain: {{ inline_string: {chain} }}
      private_key: {{ inline_string: {key} }}
  - name: ROOTCA
    validation_context:
      trusted_ca: {{ inline_string: {roots} }}"#,
        chain = q(&cert.chain),
        key = q(&cert.key),
        roots = q(roots)
    )
}

/// `match_typed_subject_alt_names` entries (URI SANs), as Istio writes them.
pub fn sans(list: &[&str]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|s| format!("{{ san_type: URI, matcher: {{ exact: {} }} }}", q(s)))
        .collect();
    format!("[{}]", items.join(", "))
}

/// The same bootstrap for a real Envoy: secrets referenced by name (static,
/// no ADS) and an admin listener.
pub fn for_envoy(yaml: &str) -> String {
    let yaml = yaml.replace(&format!(", sds_config: {SDS_ADS}"), "");
    let (node, rest) = yaml.split_once('\n').unwrap();
    format!(
        "{node}\nadmin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\n{rest}"
    )
}

const SDS_ADS: &str = "{ ads: {}, resource_api_version: V3 }";

pub fn downstream_tls(client_sans: &[&str]) -> String {
    format!(
        r#"
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificate_sds_secret_configs: [{{ name: default, sds_config: {SDS_ADS} }}]
            combined_validation_context:
              default_validation_context: {{ match_typed_subject_alt_names: {sans} }}
              validation_context_sds_secret_config: {{ name: ROOTCA, sds_config: {SDS_ADS} }}"#,
        sans = sans(client_sans)
    )
}

pub fn upstream_tls(server_sans: &[&str], sni: &str) -> String {
    format!(
        r#"
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: {sni}
        common_tls_context:
          alpn_protocols: [istio-peer-exchange, istio]
          tls_certificate_sds_secret_configs: [{{ name: default, sds_config: {SDS_ADS} }}]
          combined_validation_context:
            default_validation_context: {{ match_typed_subject_alt_names: {sans} }}
            validation_context_sds_secret_config: {{ name: ROOTCA, sds_config: {SDS_ADS} }}"#,
        sans = sans(server_sans)
    )
}

fn hcm(cluster: &str) -> String {
    format!(
        r#"
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound
          forward_client_cert_details: APPEND_FORWARD
          set_current_client_cert_details: {{ subject: true, dns: true, uri: true }}
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: {cluster} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"#
    )
}

fn static_cluster(name: &str, endpoints: &[(SocketAddr, bool)], transport: &str) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|(a, tls_mode)| {
            let meta = if *tls_mode {
                "\n          metadata: { filter_metadata: { envoy.transport_socket_match: { tlsMode: istio } } }"
            } else {
                ""
            };
            format!(
                "\n        - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}{meta}",
                a.ip(),
                a.port()
            )
        })
        .collect();
    format!(
        r#"
  - name: {name}
    connect_timeout: 2s
    type: STATIC{transport}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:{eps}"#,
        eps = eps.concat()
    )
}

/// PeerAuthentication's shapes on an inbound listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Strict,
    Permissive,
}

/// A sidecar's inbound side: `inbound` listener (tls_inspector; a TLS chain,
/// plus a plaintext one when permissive) in front of `app`.
pub fn server_bootstrap(
    mode: Mode,
    app: SocketAddr,
    secrets: &str,
    client_sans: &[&str],
) -> String {
    let plain = match mode {
        Mode::Strict => String::new(),
        Mode::Permissive => format!(
            "\n    - filter_chain_match: {{ transport_protocol: raw_buffer }}\n      filters:{}",
            hcm("app")
        ),
    };
    format!(
        r#"node: {{ id: server, cluster: server }}
static_resources:
  listeners:
  - name: inbound
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector
    filter_chains:
    - filter_chain_match: {{ transport_protocol: tls }}
      filters:{hcm}{tls}{plain}
  clusters:{app}{secrets}
"#,
        hcm = hcm("app"),
        tls = downstream_tls(client_sans),
        app = static_cluster("app", &[(app, false)], ""),
    )
}

/// A sidecar's outbound side: plaintext `outbound` listener routing to
/// cluster `server` whose endpoints get `transport` (a `transport_socket:`
/// or `transport_socket_matches:` block).
pub fn client_bootstrap(
    endpoints: &[(SocketAddr, bool)],
    transport: &str,
    secrets: &str,
) -> String {
    format!(
        r#"node: {{ id: client, cluster: client }}
static_resources:
  listeners:
  - name: outbound
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:{hcm}
  clusters:{cluster}{secrets}
"#,
        hcm = hcm("server"),
        cluster = static_cluster("server", endpoints, transport),
    )
}

pub fn tls_transport(server_sans: &[&str]) -> String {
    format!(
        "\n    transport_socket:{}",
        upstream_tls(
            server_sans,
            "outbound_.8080_._.server.default.svc.cluster.local"
        )
        .replace("\n      ", "\n        ")
    )
}

pub fn auto_mtls_transport(server_sans: &[&str]) -> String {
    format!(
        "\n    transport_socket_matches:\n    - name: tlsMode-istio\n      match: {{ tlsMode: istio }}\n      transport_socket:{}\n    - name: tlsMode-disabled\n      match: {{}}\n      transport_socket: {{ name: envoy.transport_sockets.raw_buffer }}",
        upstream_tls(
            server_sans,
            "outbound_.8080_._.server.default.svc.cluster.local"
        )
        .replace("\n      ", "\n        ")
    )
}

/// The usual pair: a client and a server certificate of one CA in `trust_domain` (service
/// accounts `client` and `server` of `default`), and the server's sidecar in STRICT mTLS in
/// front of an app, accepting the client.
pub struct StrictServer {
    pub client_cert: Pem,
    pub server_cert: Pem,
    pub app: mesh_test_util::HttpUpstream,
    pub server: Bound,
    /// The server sidecar's inbound listener.
    pub inbound: SocketAddr,
}

impl StrictServer {
    pub async fn start(trust_domain: &str) -> StrictServer {
        let ca = ca(trust_domain);
        let client_cert = issue(&ca, "default", "client");
        let server_cert = issue(&ca, "default", "server");
        let app = mesh_test_util::HttpUpstream::start("app").await.unwrap();
        let server = start(&server_bootstrap(
            Mode::Strict,
            app.addr(),
            &secrets(&server_cert, &server_cert.roots),
            &[&client_cert.uri],
        ))
        .await;
        let inbound = server.listener("inbound").unwrap();
        StrictServer {
            client_cert,
            server_cert,
            app,
            server,
            inbound,
        }
    }
}

pub async fn start(yaml: &str) -> Bound {
    let config = parse_bootstrap(yaml).unwrap_or_else(|e| panic!("bootstrap: {e}\n{yaml}"));
    build(ProxyConfig::from_bootstrap(config))
        .await
        .expect("proxy builds")
}

/// Every log line of this test process, to look for reasons.
pub fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter("mesh_proxy=debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buf
    })
    .clone()
}

pub fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn stat(bound: &Bound, name: &str) -> i64 {
    bound.proxy.stats().value(name).unwrap_or(0)
}

pub fn sha256_hex(der: &[u8]) -> String {
    mesh_proxy::tls::sha256_hex(der)
}
