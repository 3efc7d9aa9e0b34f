//! Envoy protobuf messages to and from their canonical JSON/YAML form, through
//! a descriptor pool of Envoy's protos.
//!
//! `envoy-types` gives prost structs without serde, but ships the descriptor
//! set of every file it was generated from (located by `build.rs`). With it,
//! `prost-reflect` reads a document into a `DynamicMessage` by the proto JSON
//! mapping (field names in snake_case or camelCase, `@type` inside `Any`,
//! durations as `"1.5s"`, enums by name or number) and the dynamic message is
//! transcoded into the typed one by encoding and decoding it. `/config_dump`
//! runs the same path backwards.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions,
};
use serde::de::IntoDeserializer;

/// The `FileDescriptorSet` of Envoy's protos (from `envoy-types`).
static DESCRIPTORS: &[u8] = include_bytes!(env!("MESH_ENVOY_DESCRIPTORS"));

/// The decoded pool takes tens of MiB, and is only needed while a bootstrap
/// is read or `/config_dump` is rendered: it is decoded on demand and dropped
/// once unused for [`POOL_IDLE`], so an idle proxy does not carry it.
static POOL: Mutex<Option<CachedPool>> = Mutex::new(None);
const POOL_IDLE: Duration = Duration::from_secs(5);

struct CachedPool {
    pool: DescriptorPool,
    last_used: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum XdsJsonError {
    #[error("the embedded Envoy descriptor set is unusable: {0}")]
    Descriptors(String),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("invalid YAML: {0}")]
    Yaml(String),
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A value that does not fit its field, with the dotted path of the field.
    #[error("{type_name}: at {path}: {message}")]
    Field {
        type_name: String,
        path: String,
        message: String,
    },
    #[error("{type_name}: transcoding failed: {source}")]
    Transcode {
        type_name: String,
        #[source]
        source: prost::DecodeError,
    },
    #[error("{type_name}: cannot render as JSON: {message}")]
    Render { type_name: String, message: String },
    #[error("expected an Any holding {expected}, got {got:?}")]
    WrongAnyType { expected: String, got: String },
}

/// The pool of every Envoy, xds, udpa, validate and google.protobuf message.
/// (A cheap handle: clones share one decoded pool.)
pub fn descriptor_pool() -> Result<DescriptorPool, XdsJsonError> {
    let mut cache = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cached) = cache.as_mut() {
        cached.last_used = Instant::now();
        return Ok(cached.pool.clone());
    }
    let pool = DescriptorPool::decode(DESCRIPTORS)
        .map_err(|e| XdsJsonError::Descriptors(e.to_string()))?;
    *cache = Some(CachedPool {
        pool: pool.clone(),
        last_used: Instant::now(),
    });
    // A thread, not a task: the pool is also used outside any runtime.
    let spawned = std::thread::Builder::new()
        .name("xds-pool-reaper".into())
        .spawn(release_when_idle);
    if spawned.is_err() {
        // Without the reaper the pool simply stays: correct, only larger.
        tracing::debug!("descriptor pool kept for the process lifetime (no reaper thread)");
    }
    Ok(pool)
}

fn release_when_idle() {
    loop {
        std::thread::sleep(POOL_IDLE);
        let mut cache = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        match cache.as_ref() {
            Some(cached) if cached.last_used.elapsed() < POOL_IDLE => {}
            _ => {
                *cache = None;
                // Under the lock, so no decode reads the pages meanwhile
                // (one would only fault them back in).
                crate::memory::release_static(DESCRIPTORS);
                drop(cache);
                crate::memory::release_free_heap();
                return;
            }
        }
    }
}

fn descriptor(full_name: &str) -> Result<MessageDescriptor, XdsJsonError> {
    descriptor_pool()?
        .get_message_by_name(full_name)
        .ok_or_else(|| XdsJsonError::UnknownType(full_name.to_string()))
}

/// Parses a YAML or JSON document into a JSON value. JSON is tried first when
/// the text looks like JSON, for its sharper error positions.
pub fn parse_document(text: &str) -> Result<serde_json::Value, XdsJsonError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return Ok(serde_json::from_str(text)?);
    }
    let value: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| XdsJsonError::Yaml(e.to_string()))?;
    // An empty document reads as null; treat it as an empty message.
    Ok(match value {
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        v => v,
    })
}

/// Decodes a JSON value into a typed Envoy message by the proto JSON mapping.
/// Unknown fields are errors, as in Envoy's strict validation.
pub fn from_value<M: Message + Name + Default>(
    value: &serde_json::Value,
) -> Result<M, XdsJsonError> {
    let type_name = M::full_name();
    let dynamic = dynamic_from_value(&type_name, value)?;
    M::decode(dynamic.encode_to_vec().as_slice())
        .map_err(|source| XdsJsonError::Transcode { type_name, source })
}

/// Decodes a YAML or JSON document into a typed Envoy message.
pub fn from_str<M: Message + Name + Default>(text: &str) -> Result<M, XdsJsonError> {
    from_value(&parse_document(text)?)
}

/// Reads a JSON value into a dynamic message of the named type.
pub fn dynamic_from_value(
    type_name: &str,
    value: &serde_json::Value,
) -> Result<DynamicMessage, XdsJsonError> {
    let desc = descriptor(type_name)?;
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value.clone().into_deserializer(), &mut track);
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    DynamicMessage::deserialize_with_options(desc, de, &options).map_err(|e| {
        let path = track.path().to_string();
        XdsJsonError::Field {
            type_name: type_name.to_string(),
            path: if path.is_empty() { ".".into() } else { path },
            message: e.to_string(),
        }
    })
}

/// How messages are rendered: Envoy's admin output uses the proto field
/// names (snake_case) and leaves out fields at their default.
fn render_options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true)
}

/// Renders a typed Envoy message as JSON the way Envoy's admin does.
pub fn to_value<M: Message + Name>(message: &M) -> Result<serde_json::Value, XdsJsonError> {
    render_bytes(&M::full_name(), &message.encode_to_vec())
}

/// Renders an `Any` as JSON with its `@type`.
pub fn any_to_value(any: &Any) -> Result<serde_json::Value, XdsJsonError> {
    render_bytes("google.protobuf.Any", &any.encode_to_vec())
}

fn render_bytes(type_name: &str, bytes: &[u8]) -> Result<serde_json::Value, XdsJsonError> {
    let desc = descriptor(type_name)?;
    let dynamic =
        DynamicMessage::decode(desc, bytes).map_err(|source| XdsJsonError::Transcode {
            type_name: type_name.to_string(),
            source,
        })?;
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &render_options())
        .map_err(|e| XdsJsonError::Render {
            type_name: type_name.to_string(),
            message: e.to_string(),
        })
}

/// Packs a typed message into an `Any` with Envoy's type URL prefix.
pub fn pack_any<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// The message name of an `Any`'s type URL (after the last `/`).
pub fn any_type_name(any: &Any) -> &str {
    any.type_url.rsplit('/').next().unwrap_or_default()
}

/// Unpacks an `Any` that must hold `M`.
pub fn unpack_any<M: Message + Name + Default>(any: &Any) -> Result<M, XdsJsonError> {
    let expected = M::full_name();
    if any_type_name(any) != expected {
        return Err(XdsJsonError::WrongAnyType {
            expected,
            got: any.type_url.clone(),
        });
    }
    M::decode(any.value.as_slice()).map_err(|source| XdsJsonError::Transcode {
        type_name: expected,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;

    #[test]
    fn pool_holds_the_types_the_proxy_reads_and_writes() {
        let pool = descriptor_pool().unwrap();
        for name in [
            "envoy.config.bootstrap.v3.Bootstrap",
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "envoy.extensions.filters.http.fault.v3.HTTPFault",
            "envoy.extensions.filters.http.router.v3.Router",
            "envoy.extensions.filters.http.cors.v3.CorsPolicy",
            "envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "envoy.extensions.transport_sockets.tls.v3.Secret",
            "envoy.service.discovery.v3.DiscoveryResponse",
            "envoy.admin.v3.ConfigDump",
            "envoy.admin.v3.ListenersConfigDump",
            "google.protobuf.Duration",
        ] {
            assert!(pool.get_message_by_name(name).is_some(), "{name} missing");
        }
    }

    #[test]
    fn yaml_with_any_durations_and_enums_decodes() {
        let cluster: Cluster = from_str(
            r#"
name: backend
type: STATIC
connectTimeout: 0.25s
lb_policy: LEAST_REQUEST
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config:
      http2_protocol_options: {}
"#,
        )
        .unwrap();
        assert_eq!(cluster.name, "backend");
        let t = cluster.connect_timeout.unwrap();
        assert_eq!((t.seconds, t.nanos), (0, 250_000_000));
        assert_eq!(cluster.lb_policy, 1);
        let any = &cluster.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert!(any.type_url.ends_with("HttpProtocolOptions"));
    }

    #[test]
    fn errors_name_the_field_path() {
        let err = from_str::<Bootstrap>(
            "static_resources:\n  clusters:\n  - name: a\n    connect_timeout: soon\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("static_resources.clusters[0].connect_timeout"),
            "{err}"
        );

        let err = from_str::<Bootstrap>("static_resources:\n  clusterz: []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("clusterz"), "{err}");

        let err = from_str::<Cluster>("name: a\nlb_policy: FASTEST\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lb_policy"), "{err}");
    }

    #[test]
    fn json_documents_decode_too() {
        let hcm: HttpConnectionManager =
            from_str(r#"{"stat_prefix": "ingress", "rds": {"route_config_name": "r"}}"#).unwrap();
        assert_eq!(hcm.stat_prefix, "ingress");
    }

    #[test]
    fn render_round_trips_with_proto_field_names() {
        let cluster: Cluster = from_str(
            "name: c\nconnect_timeout: 2s\ntyped_extension_protocol_options:\n  x:\n    '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n    explicit_http_config: {http2_protocol_options: {}}\n",
        )
        .unwrap();
        let value = to_value(&cluster).unwrap();
        assert_eq!(value["connect_timeout"], "2s");
        assert_eq!(
            value["typed_extension_protocol_options"]["x"]["@type"],
            "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        );
        let again: Cluster = from_value(&value).unwrap();
        assert_eq!(again, cluster);

        let any = pack_any(&cluster);
        let rendered = any_to_value(&any).unwrap();
        assert_eq!(
            rendered["@type"],
            "type.googleapis.com/envoy.config.cluster.v3.Cluster"
        );
        assert_eq!(unpack_any::<Cluster>(&any).unwrap(), cluster);
        assert!(unpack_any::<Bootstrap>(&any).is_err());
    }

    #[test]
    fn numbers_may_be_quoted_as_in_protobuf_json() {
        let cluster: Cluster = from_str(
            "name: c\nper_connection_buffer_limit_bytes: \"4096\"\nload_assignment: {endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: \"80\"}}}}]}]}\n",
        )
        .unwrap();
        assert_eq!(
            cluster.per_connection_buffer_limit_bytes.unwrap().value,
            4096
        );
    }
}
