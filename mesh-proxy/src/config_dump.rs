//! `/config_dump` in the shape of Envoy's admin output.
//!
//! The dump is built from the resources as they were received (the
//! envoy-types messages, not the compiled model), packed into Envoy's own
//! `envoy.admin.v3.*ConfigDump` messages and rendered by the proto JSON
//! mapping with proto field names, so tools written for Envoy's output
//! (`istioctl proxy-config`-style parsers) read it unchanged. The resources
//! come from [`crate::xds::resources`], which keeps them encoded.

use std::time::SystemTime;

use envoy_types::pb::envoy::admin::v3 as admin;
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::{Any, Timestamp};
use prost::{Message, Name};

use crate::xds::resources::{Encoded, StoredResourceError, Versioned, XdsResources};
use crate::xds_json::{XdsJsonError, pack_any, to_value};

// Packing is the dump's business, so it stays here rather than with the type.
impl<T: Message + Name + Default> Versioned<T> {
    fn pack(&self) -> Result<Any, StoredResourceError> {
        // Decoded and encoded again rather than passed through, so that
        // the dump shows what the proxy understood of the resource (fields
        // unknown to envoy-types left out), as it did when resources were
        // kept decoded.
        Ok(pack_any(&self.resource.decode()?))
    }
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
mod tests;
