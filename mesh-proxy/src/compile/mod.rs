//! Compiling Envoy xDS resources into the proxy's own [`crate::model`].
//!
//! Pure functions from `envoy-types` messages to model types, one module per
//! resource. Envoy's defaults are applied here (route timeout 15 s, one
//! retry, 25 ms backoff, circuit breaker thresholds of 1024/1024/1024/3,
//! outlier detection 5 × 5xx / 10 s / 30 s / 10 %), so the data path never
//! has to know which field was absent. A setting that changes traffic and
//! is not implemented is a [`CompileError::Unsupported`] naming the field;
//! settings that only tune Envoy's internals are accepted with a logged note.

// Deprecated xDS fields are still sent by control planes and honoured here.
#![expect(deprecated)]

mod cluster;
mod common;
mod endpoint;
mod errors;
mod listener;
mod route;
mod tls;

#[cfg(test)]
mod tests;

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

pub use cluster::{DEFAULT_BUFFER_LIMIT_BYTES, HTTP_PROTOCOL_OPTIONS, compile_cluster};
pub use endpoint::compile_load_assignment;
pub use errors::CompileError;
pub use listener::{DEFAULT_SERVER_NAME, DEFAULT_TCP_MAX_CONNECT_ATTEMPTS, compile_listener};
pub use route::compile_route_configuration;
pub use tls::compile_secret;

use crate::model::Snapshot;
use crate::xds::resources::{Versioned, XdsResources};

/// Compiles a whole set of resources into a [`Snapshot`]. Names must be
/// unique per resource type.
pub fn compile_snapshot(
    listeners: &[Listener],
    routes: &[RouteConfiguration],
    clusters: &[Cluster],
    endpoints: &[ClusterLoadAssignment],
) -> Result<Snapshot, CompileError> {
    let mut snapshot = Snapshot::default();
    add_resources(
        &mut snapshot,
        listeners.iter().map(Ok),
        routes.iter().map(Ok),
        clusters.iter().map(Ok),
        endpoints.iter().map(Ok),
    )?;
    Ok(snapshot)
}

/// The snapshot in force with ADS: the bootstrap's static resources plus the
/// last accepted dynamic ones. A dynamic resource may not take the name of
/// a static one (Envoy refuses to replace static listeners and clusters), and
/// listeners may not share an address. The xDS client calls this with the
/// candidate resources of a response: an error is the NACK's message, and
/// the snapshot in force stays as it was.
pub fn merge_snapshot(
    static_snapshot: &Snapshot,
    dynamic: &XdsResources,
) -> Result<Snapshot, CompileError> {
    // Each resource is decoded just before it is compiled and dropped
    // right after, so a large set never exists decoded all at once.
    fn decoded<T: prost::Message + prost::Name + Default>(
        resources: &[Versioned<T>],
    ) -> impl Iterator<Item = Result<T, CompileError>> + '_ {
        resources
            .iter()
            .map(|v| v.resource.decode().map_err(CompileError::from))
    }
    let mut snapshot = static_snapshot.clone();
    add_resources(
        &mut snapshot,
        decoded(&dynamic.listeners),
        decoded(&dynamic.routes),
        decoded(&dynamic.clusters),
        decoded(&dynamic.endpoints),
    )?;
    for s in decoded(&dynamic.secrets) {
        let s = s?;
        insert_unique(
            &mut snapshot.secrets,
            "secret",
            &s.name,
            compile_secret(&s)?,
        )?;
    }
    Ok(snapshot)
}

/// Items are owned (decoded from stored bytes) or borrowed (compiled in
/// place); a decode error stops the compile like any other.
fn add_resources<L, R, C, E>(
    snapshot: &mut Snapshot,
    listeners: impl Iterator<Item = Result<L, CompileError>>,
    routes: impl Iterator<Item = Result<R, CompileError>>,
    clusters: impl Iterator<Item = Result<C, CompileError>>,
    endpoints: impl Iterator<Item = Result<E, CompileError>>,
) -> Result<(), CompileError>
where
    L: Borrow<Listener>,
    R: Borrow<RouteConfiguration>,
    C: Borrow<Cluster>,
    E: Borrow<ClusterLoadAssignment>,
{
    for l in listeners {
        let l = l?;
        let l = l.borrow();
        let compiled = compile_listener(l)?;
        // Two bound listeners cannot share an address (port 0 picks a
        // fresh port each time, so it never clashes).
        if compiled.bind_to_port
            && compiled.address.port() != 0
            && let Some(other) = snapshot
                .listeners
                .values()
                .find(|o| o.bind_to_port && o.address == compiled.address)
        {
            return Err(CompileError::Invalid {
                resource: format!("listener {:?}", l.name),
                field: "address".into(),
                reason: format!(
                    "{} is already used by listener {:?}",
                    compiled.address, other.name
                ),
            });
        }
        insert_unique(&mut snapshot.listeners, "listener", &l.name, compiled)?;
    }
    for r in routes {
        let r = r?;
        let r = r.borrow();
        insert_unique(
            &mut snapshot.routes,
            "route_configuration",
            &r.name,
            compile_route_configuration(r)?,
        )?;
    }
    for c in clusters {
        let c = c?;
        let c = c.borrow();
        insert_unique(
            &mut snapshot.clusters,
            "cluster",
            &c.name,
            compile_cluster(c)?,
        )?;
    }
    for e in endpoints {
        let e = e?;
        let e = e.borrow();
        insert_unique(
            &mut snapshot.endpoints,
            "endpoints",
            &e.cluster_name,
            compile_load_assignment(e)?,
        )?;
    }
    Ok(())
}

/// Inserts a compiled resource; a second one with the same name is an error.
pub fn insert_unique<T>(
    map: &mut BTreeMap<String, Arc<T>>,
    kind: &'static str,
    name: &str,
    value: T,
) -> Result<(), CompileError> {
    if map.contains_key(name) {
        return Err(CompileError::Duplicate {
            kind,
            name: name.to_string(),
        });
    }
    map.insert(name.to_string(), Arc::new(value));
    Ok(())
}
