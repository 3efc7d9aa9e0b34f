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
use crate::model::{ResourceVersion, Snapshot, TlsSecret};
use crate::xds::resources::{Encoded, Versioned, XdsResources};
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
mod tests;
