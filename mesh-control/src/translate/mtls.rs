//! Mesh mutual TLS, following Istio's semantics.
//!
//! Outbound (client side), decided per cluster in `cluster.rs`:
//! - a DestinationRule `tls.mode: ISTIO_MUTUAL` (trafficPolicy, portLevelSettings or subset;
//!   the most specific wins) gives the cluster [`istio_mutual_socket`]: the proxy's own
//!   certificate (SDS `default`) and the mesh roots (SDS `ROOTCA`) over ADS, the server checked
//!   against the service's SPIFFE identities, ALPN `istio-peer-exchange`/`istio` (+`h2`) and the
//!   SNI `outbound_.PORT_.SUBSET_.HOST`;
//! - no `tls` at any level: auto-mTLS ([`auto_mtls_applies`]). The cluster carries
//!   `transport_socket_matches`: endpoints labelled `security.istio.io/tlsMode: istio` (marked
//!   with [`TRANSPORT_SOCKET_MATCH_KEY`] metadata in EDS) get the ISTIO_MUTUAL socket, the
//!   others plaintext. The matches are only emitted when the service has at least one sidecar
//!   endpoint: without one every endpoint would take the plaintext branch anyway, so the cluster
//!   stays plain (a later sidecar endpoint changes the cluster and is pushed with it);
//! - `DISABLE` (or a `tls` block without a mode, whose proto default is DISABLE) is plaintext;
//!   `SIMPLE`/`MUTUAL` use the files the rule names.
//!
//! Inbound (server side): [`peer_authentication`] resolves the PeerAuthentication in force for a
//! workload, and [`inbound_chains`] turns a mode into filter chains behind a TLS inspector.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use envoy_types::pb::envoy::config::core::v3::{Metadata, TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, ListenerFilter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, UpstreamTlsContext,
    common_tls_context::CombinedCertificateValidationContext,
    common_tls_context::ValidationContextType, subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use mesh_api::constants::ROOT_NAMESPACE;
use mesh_api::security::{MtlsMode, MutualTls, PeerAuthenticationSpec};

use super::envoy::{ads, any, boolv};
use crate::registry::{Resolution, Service, TLS_MODE_ISTIO, labels_match};

/// SDS name of the workload's certificate and key (Istio's).
pub const SDS_DEFAULT: &str = "default";
/// SDS name of the mesh trust bundle (Istio's).
pub const SDS_ROOTCA: &str = "ROOTCA";
/// Endpoint metadata namespace Envoy reads to pick a cluster's transport socket match.
pub const TRANSPORT_SOCKET_MATCH_KEY: &str = "envoy.transport_socket_match";
/// Name of the listener filter telling TLS from plaintext on an inbound connection.
pub const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
/// Name of the transport socket match used for sidecar endpoints.
pub const MATCH_TLS_MODE_ISTIO: &str = "tlsMode-istio";
/// Name of the catch-all (plaintext) transport socket match.
pub const MATCH_TLS_MODE_DISABLED: &str = "tlsMode-disabled";

const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";
const RAW_BUFFER_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.raw_buffer";
/// ALPN a mesh client offers: Istio's markers telling the server the peer is in the mesh.
const MESH_ALPN: [&str; 2] = ["istio-peer-exchange", "istio"];
/// ALPN of the inbound mTLS chain.
const INBOUND_ALPN: [&str; 2] = ["h2", "http/1.1"];

/// The inbound mTLS mode of a workload port, PeerAuthentication's modes once `UNSET` is
/// resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InboundMtls {
    /// mTLS only: plaintext matches no filter chain and is closed.
    Strict,
    /// mTLS and plaintext, told apart by the TLS inspector.
    Permissive,
    /// Plaintext only.
    Disable,
}

/// The PeerAuthentication in force for one workload: a mode and per-port overrides (keyed by
/// the workload port, as Istio keys `portLevelMtls`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectivePeerAuthentication {
    pub mode: InboundMtls,
    pub per_port: BTreeMap<u32, InboundMtls>,
}

impl EffectivePeerAuthentication {
    /// The mode for a workload port: its `portLevelMtls` entry, else the workload's mode.
    pub fn mode_for_port(&self, port: u32) -> InboundMtls {
        self.per_port.get(&port).copied().unwrap_or(self.mode)
    }
}

/// A set mode, `None` for `UNSET` or no `mtls` at all (both inherit).
fn set_mode(mtls: Option<&MutualTls>) -> Option<InboundMtls> {
    match mtls.and_then(|m| m.mode)? {
        MtlsMode::Unset => None,
        MtlsMode::Disable => Some(InboundMtls::Disable),
        MtlsMode::Permissive => Some(InboundMtls::Permissive),
        MtlsMode::Strict => Some(InboundMtls::Strict),
    }
}

fn has_selector(pa: &PeerAuthenticationSpec) -> bool {
    pa.selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty())
}

/// The PeerAuthentication mode of a workload in `namespace` with `labels`, Istio's resolution:
/// the mesh-wide policy (no selector, root namespace `istio-system`), then the namespace-wide
/// one (no selector, the workload's namespace), then one selecting the workload by labels (in
/// its namespace, not the root namespace); each level that sets a mode overrides the one above,
/// `UNSET` inherits, and with nothing set the mode is PERMISSIVE. Only the workload-level policy
/// may carry `portLevelMtls`; an `UNSET` port inherits the workload's resolved mode. When
/// several policies compete at one level Istio takes the oldest; without creation times the
/// first in configuration order stands in for it.
pub fn peer_authentication(
    config: &mesh_api::Config,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> EffectivePeerAuthentication {
    let mut mesh = None;
    let mut ns_wide = None;
    let mut workload = None;
    for (meta, pa) in config.peer_authentications() {
        let spec = &pa.spec;
        if !has_selector(spec) {
            if meta.namespace == ROOT_NAMESPACE {
                mesh.get_or_insert(spec);
            } else if meta.namespace == namespace {
                ns_wide.get_or_insert(spec);
            }
        } else if meta.namespace == namespace
            && meta.namespace != ROOT_NAMESPACE
            && spec
                .selector
                .as_ref()
                .is_some_and(|s| labels_match(&s.match_labels, labels))
        {
            workload.get_or_insert(spec);
        }
    }
    let mut mode = InboundMtls::Permissive;
    for level in [mesh, ns_wide, workload].into_iter().flatten() {
        if let Some(m) = set_mode(level.mtls.as_ref()) {
            mode = m;
        }
    }
    let mut per_port = BTreeMap::new();
    if let Some(w) = workload {
        for (key, mtls) in &w.port_level_mtls {
            // The analyzer rejects keys that are not port numbers; skip them here too.
            let Ok(port) = key.trim().parse::<u32>() else {
                tracing::warn!(port = %key, "PeerAuthentication portLevelMtls key is not a port number; ignored");
                continue;
            };
            per_port.insert(port, set_mode(Some(mtls)).unwrap_or(mode));
        }
    }
    EffectivePeerAuthentication { mode, per_port }
}

/// Whether the namespace-wide (else mesh-wide) PeerAuthentication of a service's namespace
/// disables mTLS: Istio's best-effort inference of the server side, which turns auto-mTLS off
/// so clients do not offer TLS to servers known to refuse it.
fn namespace_mtls_disabled(config: &mesh_api::Config, namespace: &str) -> bool {
    let mut mesh = None;
    let mut ns_wide = None;
    for (meta, pa) in config.peer_authentications() {
        if has_selector(&pa.spec) {
            continue;
        }
        if meta.namespace == ROOT_NAMESPACE {
            mesh.get_or_insert(&pa.spec);
        } else if meta.namespace == namespace {
            ns_wide.get_or_insert(&pa.spec);
        }
    }
    let ns_mode = ns_wide.and_then(|p| set_mode(p.mtls.as_ref()));
    let mesh_mode = mesh.and_then(|p| set_mode(p.mtls.as_ref()));
    ns_mode.or(mesh_mode) == Some(InboundMtls::Disable)
}

/// Whether a cluster of `svc` with no DestinationRule `tls` at any level gets auto-mTLS: the
/// service is inside the mesh, has endpoints to connect to (not passthrough), at least one of
/// them runs a sidecar, and its namespace does not disable mTLS.
pub(crate) fn auto_mtls_applies(config: &mesh_api::Config, svc: &Service) -> bool {
    !svc.mesh_external
        && svc.resolution != Resolution::None
        && svc.has_sidecar_endpoints()
        && !namespace_mtls_disabled(config, &svc.namespace)
}

/// Istio's SNI for mesh mTLS to a cluster: `outbound_.PORT_.SUBSET_.HOST`.
pub fn istio_sni(port: u32, subset: Option<&str>, host: &str) -> String {
    format!("outbound_.{port}_.{}_.{host}", subset.unwrap_or(""))
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads()),
    }
}

fn exact(value: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(value.to_string())),
        ignore_case: false,
    }
}

/// The certificate (`default`) and trust bundle (`ROOTCA`) of the mesh, from SDS over ADS;
/// `subject_alt_names` are the peer identities accepted (empty: any peer the roots sign).
fn mesh_common_tls(subject_alt_names: &[String], alpn: Vec<String>) -> CommonTlsContext {
    let default_validation = CertificateValidationContext {
        // Identities are URI SANs. Istio still writes the deprecated untyped
        // `match_subject_alt_names`, which Envoy 1.40 warns about on every use.
        match_typed_subject_alt_names: subject_alt_names
            .iter()
            .map(|s| SubjectAltNameMatcher {
                san_type: SanType::Uri as i32,
                matcher: Some(exact(s)),
                oid: String::new(),
            })
            .collect(),
        ..Default::default()
    };
    CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds(SDS_DEFAULT)],
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(default_validation),
                validation_context_sds_secret_config: Some(sds(SDS_ROOTCA)),
                ..Default::default()
            },
        )),
        alpn_protocols: alpn,
        ..Default::default()
    }
}

/// The client side of mesh mTLS to a cluster: `subject_alt_names` are the identities the
/// server may present, `sni` Istio's `outbound_.PORT_.SUBSET_.HOST` unless the rule sets one.
pub(crate) fn istio_mutual_socket(
    subject_alt_names: &[String],
    sni: String,
    http2: bool,
) -> TransportSocket {
    let mut alpn: Vec<String> = MESH_ALPN.iter().map(|s| s.to_string()).collect();
    if http2 {
        alpn.push("h2".to_string());
    }
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(mesh_common_tls(subject_alt_names, alpn)),
        sni,
        ..Default::default()
    };
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
    }
}

fn raw_buffer_socket() -> TransportSocket {
    TransportSocket {
        name: RAW_BUFFER_TRANSPORT_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
            &RawBuffer::default(),
        ))),
    }
}

fn tls_mode_struct() -> Struct {
    Struct {
        fields: [(
            "tlsMode".to_string(),
            Value {
                kind: Some(Kind::StringValue(TLS_MODE_ISTIO.to_string())),
            },
        )]
        .into_iter()
        .collect(),
    }
}

/// Auto-mTLS: endpoints marked `tlsMode: istio` get `mesh_tls`, every other endpoint plaintext.
pub(crate) fn auto_mtls_matches(mesh_tls: TransportSocket) -> Vec<TransportSocketMatch> {
    vec![
        TransportSocketMatch {
            name: MATCH_TLS_MODE_ISTIO.to_string(),
            r#match: Some(tls_mode_struct()),
            transport_socket: Some(mesh_tls),
        },
        TransportSocketMatch {
            name: MATCH_TLS_MODE_DISABLED.to_string(),
            r#match: Some(Struct::default()),
            transport_socket: Some(raw_buffer_socket()),
        },
    ]
}

/// The EDS metadata of an endpoint whose workload runs a sidecar, read by the
/// `tlsMode-istio` transport socket match.
pub(crate) fn sidecar_endpoint_metadata() -> Metadata {
    Metadata {
        filter_metadata: [(TRANSPORT_SOCKET_MATCH_KEY.to_string(), tls_mode_struct())]
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// The server side of mesh mTLS: the workload's certificate, a client certificate signed by
/// the mesh roots required (any mesh identity; authorization narrows it later).
fn inbound_tls_socket() -> TransportSocket {
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(mesh_common_tls(
            &[],
            INBOUND_ALPN.iter().map(|s| s.to_string()).collect(),
        )),
        require_client_certificate: Some(boolv(true)),
        ..Default::default()
    };
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
    }
}

/// The listener filter distinguishing TLS from plaintext, needed when a chain matches on
/// `transport_protocol`.
pub(crate) fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: TLS_INSPECTOR.to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(
            &TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

/// The inbound filter chains of one workload port (`destination_port` in Kubernetes mode,
/// `None` in local mode where the listener serves one port) in `mode`, each running `filters`:
/// STRICT one chain matching `transport_protocol: tls` that terminates mTLS (plaintext matches
/// nothing and is closed), PERMISSIVE that chain plus a `raw_buffer` one, DISABLE one plaintext
/// chain.
pub(crate) fn inbound_chains(
    mode: InboundMtls,
    destination_port: Option<u32>,
    filters: Vec<Filter>,
) -> Vec<FilterChain> {
    let base_match = FilterChainMatch {
        destination_port: destination_port.map(super::envoy::u32v),
        ..Default::default()
    };
    let tls_chain = || FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            transport_protocol: "tls".to_string(),
            ..base_match.clone()
        }),
        filters: filters.clone(),
        transport_socket: Some(inbound_tls_socket()),
        ..Default::default()
    };
    let plain_chain = |transport_protocol: &str| FilterChain {
        filter_chain_match: (destination_port.is_some() || !transport_protocol.is_empty()).then(
            || FilterChainMatch {
                transport_protocol: transport_protocol.to_string(),
                ..base_match.clone()
            },
        ),
        filters: filters.clone(),
        ..Default::default()
    };
    match mode {
        InboundMtls::Strict => vec![tls_chain()],
        InboundMtls::Permissive => vec![tls_chain(), plain_chain("raw_buffer")],
        InboundMtls::Disable => vec![plain_chain("")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> mesh_api::Config {
        let c = mesh_api::load_str("pa.yaml", yaml);
        assert!(!c.has_errors(), "{:?}", c.errors);
        c
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const LEVELS: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: legacy}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: unset, namespace: inherit}
spec: {mtls: {mode: UNSET}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: db, namespace: legacy}
spec:
  selector: {matchLabels: {app: db}}
  mtls: {mode: UNSET}
  portLevelMtls:
    "5432": {mode: DISABLE}
    "9000": {mode: UNSET}
    "9001": {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: root-selector, namespace: istio-system}
spec:
  selector: {matchLabels: {app: db}}
  mtls: {mode: DISABLE}
"#;

    #[test]
    fn levels_override_and_unset_inherits() {
        let c = config(LEVELS);
        // Mesh-wide STRICT; a root-namespace policy with a selector is not mesh-wide.
        let pa = peer_authentication(&c, "default", &labels(&[("app", "db")]));
        assert_eq!(pa.mode, InboundMtls::Strict);
        assert!(pa.per_port.is_empty());
        // Namespace-wide UNSET inherits the mesh's STRICT.
        let pa = peer_authentication(&c, "inherit", &labels(&[]));
        assert_eq!(pa.mode, InboundMtls::Strict);
        // Namespace-wide PERMISSIVE overrides; the workload's UNSET inherits it; its ports
        // override, an UNSET port inherits the workload's mode.
        let pa = peer_authentication(&c, "legacy", &labels(&[("app", "db")]));
        assert_eq!(pa.mode, InboundMtls::Permissive);
        assert_eq!(pa.mode_for_port(5432), InboundMtls::Disable);
        assert_eq!(pa.mode_for_port(9000), InboundMtls::Permissive);
        assert_eq!(pa.mode_for_port(9001), InboundMtls::Strict);
        assert_eq!(pa.mode_for_port(80), InboundMtls::Permissive);
        // A workload the selector does not match keeps the namespace mode, no ports.
        let pa = peer_authentication(&c, "legacy", &labels(&[("app", "web")]));
        assert_eq!(pa.mode, InboundMtls::Permissive);
        assert!(pa.per_port.is_empty());
    }

    #[test]
    fn default_is_permissive() {
        let pa = peer_authentication(&config(""), "default", &BTreeMap::new());
        assert_eq!(pa.mode, InboundMtls::Permissive);
    }

    #[test]
    fn namespace_disable_turns_auto_mtls_off() {
        let c = config(
            r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: secure}
spec: {mtls: {mode: STRICT}}
"#,
        );
        assert!(namespace_mtls_disabled(&c, "default"));
        assert!(!namespace_mtls_disabled(&c, "secure"));
    }

    #[test]
    fn sni_has_istio_form() {
        assert_eq!(
            istio_sni(9080, Some("v1"), "reviews.default.svc.cluster.local"),
            "outbound_.9080_.v1_.reviews.default.svc.cluster.local"
        );
        assert_eq!(istio_sni(80, None, "a.b"), "outbound_.80_._.a.b");
    }
}
