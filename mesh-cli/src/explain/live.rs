//! The proxy's live configuration, read from its admin (`/config_dump?include_eds`,
//! `/clusters`) and compiled by the proxy's own compiler.

use std::collections::BTreeMap;

use mesh_proxy::compile::{
    compile_cluster, compile_listener, compile_load_assignment, compile_route_configuration,
};
use mesh_proxy::model::Snapshot;
use serde::Serialize;
use serde_json::Value;

use super::TIMEOUT;
use crate::admin_client::{AdminClient, Transport};
use crate::proxy_config::{self, endpoint_rows};

/// A proxy's configuration as read from its admin.
#[derive(Debug, Default)]
pub struct LiveConfig {
    pub snapshot: Snapshot,
    /// Resources of the dump that could not be decoded or compiled, with the reason.
    pub skipped: Vec<String>,
    /// Per cluster, endpoints and healthy endpoints as the proxy sees them (`/clusters`).
    pub health: BTreeMap<String, HostCounts>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HostCounts {
    pub total: usize,
    pub healthy: usize,
}

/// Per cluster, hosts and healthy hosts from the admin's `/clusters` text.
pub fn host_counts(clusters_text: &str) -> BTreeMap<String, HostCounts> {
    let mut out: BTreeMap<String, HostCounts> = BTreeMap::new();
    for row in endpoint_rows(clusters_text) {
        let c = out.entry(row.cluster).or_default();
        c.total += 1;
        if row.status == "HEALTHY" {
            c.healthy += 1;
        }
    }
    out
}

/// Decodes and compiles every listener, route configuration, cluster and endpoint set of an
/// Envoy-shaped `/config_dump` (with `?include_eds` for endpoints). A resource that does not
/// decode or compile is left out and named in the second value: what matters for one request
/// is usually elsewhere.
pub fn snapshot_from_dump(dump: &Value) -> (Snapshot, Vec<String>) {
    let mut snapshot = Snapshot::default();
    let mut skipped = Vec::new();
    for v in proxy_config::listeners(dump) {
        match read(&v, "name", "listener", compile_listener) {
            Ok((name, l)) => {
                snapshot.listeners.entry(name).or_insert(l.into());
            }
            Err(e) => skipped.push(e),
        }
    }
    for v in proxy_config::routes(dump) {
        match read(&v, "name", "route config", compile_route_configuration) {
            Ok((name, r)) => {
                snapshot.routes.entry(name).or_insert(r.into());
            }
            Err(e) => skipped.push(e),
        }
    }
    for v in proxy_config::clusters(dump) {
        match read(&v, "name", "cluster", compile_cluster) {
            Ok((name, c)) => {
                snapshot.clusters.entry(name).or_insert(c.into());
            }
            Err(e) => skipped.push(e),
        }
    }
    for v in endpoint_configs(dump) {
        match read(&v, "cluster_name", "endpoints", compile_load_assignment) {
            Ok((name, e)) => {
                snapshot.endpoints.entry(name).or_insert(e.into());
            }
            Err(e) => skipped.push(e),
        }
    }
    (snapshot, skipped)
}

/// Decodes one resource of the dump as `M` and compiles it; the error names the resource.
fn read<M, T>(
    v: &Value,
    name_key: &str,
    kind: &str,
    compile: fn(&M) -> Result<T, mesh_proxy::compile::CompileError>,
) -> Result<(String, T), String>
where
    M: prost::Message + prost::Name + Default,
{
    let name = v[name_key].as_str().unwrap_or("?").to_string();
    let mut v = v.clone();
    if let Value::Object(map) = &mut v {
        // The element's own `@type` is not a field of the message.
        map.remove("@type");
    }
    let m =
        mesh_proxy::xds_json::from_value::<M>(&v).map_err(|e| format!("{kind} {name:?}: {e}"))?;
    // The compiler's errors name the resource themselves.
    let t = compile(&m).map_err(|e| e.to_string())?;
    Ok((name, t))
}

/// The `ClusterLoadAssignment`s of the dump's endpoints section. Envoy renders an unset
/// locality weight as `load_balancing_weight: 0`, which is not valid xDS: it is left out.
fn endpoint_configs(dump: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for c in dump["configs"].as_array().into_iter().flatten() {
        for list in ["static_endpoint_configs", "dynamic_endpoint_configs"] {
            for item in c[list].as_array().into_iter().flatten() {
                let mut v = item["endpoint_config"].clone();
                if !v.is_object() {
                    continue;
                }
                for locality in v["endpoints"].as_array_mut().into_iter().flatten() {
                    if let Value::Object(map) = locality
                        && map.get("load_balancing_weight").and_then(Value::as_u64) == Some(0)
                    {
                        map.remove("load_balancing_weight");
                    }
                }
                out.push(v);
            }
        }
    }
    out
}

/// Reads `/config_dump?include_eds` and `/clusters` of the admin at `at`.
pub fn read_live_config(at: &Transport) -> anyhow::Result<LiveConfig> {
    use anyhow::{Context, bail};
    let admin = AdminClient::new(at.clone(), TIMEOUT);
    let a = admin.get("/config_dump?include_eds")?;
    if a.status != 200 {
        bail!(
            "GET /config_dump?include_eds at {at} answered {}: {}",
            a.status.as_u16(),
            a.text().trim()
        );
    }
    let dump: Value = serde_json::from_slice(&a.body)
        .with_context(|| format!("/config_dump at {at} is not JSON"))?;
    let (snapshot, skipped) = snapshot_from_dump(&dump);
    // Health is a bonus: without `/clusters` the endpoints of the dump are counted instead.
    let health = match admin.get("/clusters") {
        Ok(a) if a.status == 200 => host_counts(&a.text()),
        _ => BTreeMap::new(),
    };
    Ok(LiveConfig {
        snapshot,
        skipped,
        health,
    })
}
