//! The global downstream connection limit: Envoy's
//! `envoy.resource_monitors.global_downstream_max_connections` resource
//! monitor, or the older runtime key `overload.global_downstream_max_connections`
//! (which Istio's bootstrap sets). Past the limit a listener closes each new
//! connection at once and counts it in
//! `listener.ADDRESS.downstream_global_cx_overflow`, as Envoy does; a listener
//! with `ignore_global_conn_limit` neither counts nor is refused.
//!
//! No other part of the overload manager is implemented, so any other
//! resource monitor, action or load-shed point is refused: a limit the
//! operator set must never be silently absent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::config::bootstrap::v3::{LayeredRuntime, runtime_layer};
use envoy_types::pb::envoy::config::overload::v3::{OverloadManager, resource_monitor};
use envoy_types::pb::envoy::extensions::resource_monitors::downstream_connections::v3::DownstreamConnectionsConfig;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use prost::{Message, Name};

/// The resource monitor's extension name.
pub const DOWNSTREAM_CONNECTIONS_MONITOR: &str =
    "envoy.resource_monitors.global_downstream_max_connections";
/// The runtime key Envoy read before the resource monitor existed.
pub const RUNTIME_KEY: &str = "overload.global_downstream_max_connections";

/// Why an overload setting was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OverloadError {
    #[error(
        "{field} {value} is not supported (only the {DOWNSTREAM_CONNECTIONS_MONITOR} resource monitor is)"
    )]
    Unsupported { field: String, value: String },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

/// The limit in force: the resource monitor's when there is one (Envoy
/// prefers it and warns about the runtime key), else the runtime key's.
pub fn max_connections(
    overload: Option<&OverloadManager>,
    runtime: Option<&LayeredRuntime>,
) -> Result<Option<u64>, OverloadError> {
    let from_monitor = match overload {
        Some(o) => monitor_limit(o)?,
        None => None,
    };
    let from_runtime = runtime.map(runtime_limit).transpose()?.flatten();
    if from_monitor.is_some() && from_runtime.is_some() {
        tracing::warn!(
            "bootstrap: both the {DOWNSTREAM_CONNECTIONS_MONITOR} resource monitor and the runtime key {RUNTIME_KEY} are set; the resource monitor's limit is used"
        );
    }
    Ok(from_monitor.or(from_runtime))
}

fn monitor_limit(o: &OverloadManager) -> Result<Option<u64>, OverloadError> {
    let unsupported = |field: &str, value: String| OverloadError::Unsupported {
        field: format!("overload_manager.{field}"),
        value,
    };
    if let Some(a) = o.actions.first() {
        return Err(unsupported("actions", a.name.clone()));
    }
    if let Some(p) = o.loadshed_points.first() {
        return Err(unsupported("loadshed_points", p.name.clone()));
    }
    if o.buffer_factory_config.is_some() {
        return Err(unsupported("buffer_factory_config", String::new()));
    }
    let mut limit = None;
    for (i, m) in o.resource_monitors.iter().enumerate() {
        let field = format!("overload_manager.resource_monitors[{i}]");
        let any = match &m.config_type {
            Some(resource_monitor::ConfigType::TypedConfig(any)) => any,
            None => {
                return Err(OverloadError::Invalid {
                    field,
                    reason: "typed_config is required".into(),
                });
            }
        };
        if !any
            .type_url
            .ends_with(&format!("/{}", DownstreamConnectionsConfig::full_name()))
        {
            return Err(unsupported(
                &format!("resource_monitors[{i}]"),
                format!("{} ({})", m.name, any.type_url),
            ));
        }
        let config = DownstreamConnectionsConfig::decode(any.value.as_slice()).map_err(|e| {
            OverloadError::Invalid {
                field: field.clone(),
                reason: e.to_string(),
            }
        })?;
        // Envoy refuses a limit below one.
        let max = u64::try_from(config.max_active_downstream_connections)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| OverloadError::Invalid {
                field: format!("{field}.max_active_downstream_connections"),
                reason: format!(
                    "{} must be greater than 0",
                    config.max_active_downstream_connections
                ),
            })?;
        limit = Some(max);
    }
    Ok(limit)
}

/// The key in the static layers, later layers overriding earlier ones;
/// nested objects are read as dotted keys, as Envoy flattens them.
fn runtime_limit(r: &LayeredRuntime) -> Result<Option<u64>, OverloadError> {
    let mut found = None;
    for (i, layer) in r.layers.iter().enumerate() {
        if let Some(runtime_layer::LayerSpecifier::StaticLayer(s)) = &layer.layer_specifier
            && let Some(v) = lookup(s, RUNTIME_KEY)
        {
            let field = format!("layered_runtime.layers[{i}].static_layer.{RUNTIME_KEY}");
            found = Some(match &v.kind {
                Some(Kind::NumberValue(n)) if *n >= 1.0 && n.fract() == 0.0 => *n as u64,
                Some(Kind::StringValue(t)) if t.parse::<u64>().is_ok_and(|n| n > 0) => {
                    t.parse::<u64>().unwrap_or(u64::MAX)
                }
                other => {
                    return Err(OverloadError::Invalid {
                        field,
                        reason: format!("expected a whole number of connections, got {other:?}"),
                    });
                }
            });
        }
    }
    Ok(found)
}

fn lookup<'a>(s: &'a Struct, dotted: &str) -> Option<&'a Value> {
    if let Some(v) = s.fields.get(dotted) {
        return Some(v);
    }
    let (head, rest) = dotted.split_once('.')?;
    match &s.fields.get(head)?.kind {
        Some(Kind::StructValue(inner)) => lookup(inner, rest),
        _ => None,
    }
}

/// Active downstream connections counted against the limit.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: u64,
    active: AtomicU64,
}

/// One counted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionPermit {
    limit: Arc<ConnectionLimit>,
}

impl ConnectionLimit {
    pub fn new(max: u64) -> Arc<ConnectionLimit> {
        Arc::new(ConnectionLimit {
            max,
            active: AtomicU64::new(0),
        })
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// A place for one more connection, or `None` at the limit.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnectionPermit> {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionPermit {
                limit: self.clone(),
            })
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.limit.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds_json::from_str as from_yaml;
    use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

    fn limit(yaml: &str) -> Result<Option<u64>, OverloadError> {
        let b: Bootstrap = from_yaml(yaml).unwrap();
        max_connections(b.overload_manager.as_ref(), b.layered_runtime.as_ref())
    }

    const MONITOR: &str = "overload_manager:\n  resource_monitors:\n  - name: envoy.resource_monitors.global_downstream_max_connections\n    typed_config:\n      \"@type\": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig\n      max_active_downstream_connections: 100\n";

    #[test]
    fn the_monitor_and_the_runtime_key_set_the_limit() {
        assert_eq!(limit("{}"), Ok(None));
        assert_eq!(limit(MONITOR), Ok(Some(100)));
        assert_eq!(
            limit(
                "layered_runtime: {layers: [{name: a, static_layer: {overload.global_downstream_max_connections: 50}}]}"
            ),
            Ok(Some(50))
        );
        assert_eq!(
            limit(
                "layered_runtime: {layers: [{name: a, static_layer: {overload: {global_downstream_max_connections: 7}}}, {name: b, static_layer: {overload.global_downstream_max_connections: 9}}]}"
            ),
            Ok(Some(9)),
            "nested keys, later layers win"
        );
        assert_eq!(
            limit(&format!(
                "{MONITOR}layered_runtime: {{layers: [{{name: a, static_layer: {{overload.global_downstream_max_connections: 50}}}}]}}"
            )),
            Ok(Some(100)),
            "the monitor wins"
        );
    }

    #[test]
    fn anything_else_of_the_overload_manager_is_refused() {
        let e = limit("overload_manager:\n  resource_monitors:\n  - name: envoy.resource_monitors.fixed_heap\n    typed_config:\n      \"@type\": type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig\n      max_heap_size_bytes: 1000\n").unwrap_err();
        assert!(
            e.to_string().contains("resource_monitors[0]") && e.to_string().contains("fixed_heap"),
            "{e}"
        );
        let e =
            limit("overload_manager:\n  actions:\n  - name: envoy.overload_actions.shrink_heap\n")
                .unwrap_err();
        assert!(e.to_string().contains("shrink_heap"), "{e}");
        let e = limit(&MONITOR.replace("100", "0")).unwrap_err();
        assert!(e.to_string().contains("greater than 0"), "{e}");
        let e = limit("layered_runtime: {layers: [{name: a, static_layer: {overload.global_downstream_max_connections: many}}]}").unwrap_err();
        assert!(e.to_string().contains(RUNTIME_KEY), "{e}");
    }

    #[test]
    fn permits_are_counted_and_released() {
        let l = ConnectionLimit::new(2);
        let a = l.try_acquire().unwrap();
        let _b = l.try_acquire().unwrap();
        assert!(l.try_acquire().is_none());
        drop(a);
        assert_eq!(l.active(), 1);
        assert!(l.try_acquire().is_some());
    }
}
