//! `ClusterLoadAssignment` (EDS or a cluster's inline `load_assignment`)
//! into an [`EndpointSet`].

use envoy_types::pb::envoy::config::core::v3::HealthStatus as PbHealth;
use envoy_types::pb::envoy::config::endpoint::v3 as pb;

use super::common::{socket_address, socket_address_parts};
use super::errors::{CompileError, Ctx};
use crate::model::{Endpoint, EndpointSet, HealthStatus, LocalityEndpoints};

/// Compiles an EDS resource. Addresses must be IP literals.
pub fn compile_load_assignment(
    cla: &pb::ClusterLoadAssignment,
) -> Result<EndpointSet, CompileError> {
    let ctx = Ctx::new("endpoints", &cla.cluster_name);
    compile_with(&ctx, cla, &mut |ctx, field, a| {
        socket_address(ctx, field, a).map(|a| vec![a])
    })
}

/// Resolves an endpoint address into zero or more socket addresses.
pub(crate) type Resolve<'a> = dyn FnMut(
        &Ctx,
        &str,
        Option<&envoy_types::pb::envoy::config::core::v3::Address>,
    ) -> Result<Vec<std::net::SocketAddr>, CompileError>
    + 'a;

pub(crate) fn compile_with(
    ctx: &Ctx,
    cla: &pb::ClusterLoadAssignment,
    resolve: &mut Resolve<'_>,
) -> Result<EndpointSet, CompileError> {
    if !cla.named_endpoints.is_empty() {
        return Err(ctx.unsupported("named_endpoints", ""));
    }
    if let Some(policy) = &cla.policy {
        if !policy.drop_overloads.is_empty() {
            return Err(ctx.unsupported("policy.drop_overloads", ""));
        }
        if policy.overprovisioning_factor.is_some() {
            ctx.note_ignored(
                "policy.overprovisioning_factor",
                "priority spill-over uses the default factor",
            );
        }
    }
    let mut localities = Vec::with_capacity(cla.endpoints.len());
    for (i, l) in cla.endpoints.iter().enumerate() {
        let lctx = ctx.at_index("endpoints", i);
        if l.lb_config.is_some() {
            return Err(lctx.unsupported("leds_cluster_locality_config", ""));
        }
        let mut endpoints = Vec::with_capacity(l.lb_endpoints.len());
        for (j, e) in l.lb_endpoints.iter().enumerate() {
            let ectx = lctx.at_index("lb_endpoints", j);
            endpoints.extend(lb_endpoint(&ectx, e, resolve)?);
        }
        let locality = l.locality.clone().unwrap_or_default();
        let weight = l.load_balancing_weight.map(|w| w.value);
        if weight == Some(0) {
            return Err(lctx.invalid("load_balancing_weight", "must be at least 1"));
        }
        localities.push(LocalityEndpoints {
            region: locality.region,
            zone: locality.zone,
            sub_zone: locality.sub_zone,
            priority: l.priority,
            load_balancing_weight: weight,
            endpoints,
        });
    }
    Ok(EndpointSet {
        cluster_name: cla.cluster_name.clone(),
        localities,
    })
}

fn lb_endpoint(
    ctx: &Ctx,
    e: &pb::LbEndpoint,
    resolve: &mut Resolve<'_>,
) -> Result<Vec<Endpoint>, CompileError> {
    use pb::lb_endpoint::HostIdentifier;
    let endpoint = match &e.host_identifier {
        Some(HostIdentifier::Endpoint(ep)) => ep,
        Some(HostIdentifier::EndpointName(n)) => return Err(ctx.unsupported("endpoint_name", n)),
        None => return Err(ctx.missing("endpoint")),
    };
    if !endpoint.additional_addresses.is_empty() {
        return Err(ctx.unsupported("endpoint.additional_addresses", ""));
    }
    let weight = e.load_balancing_weight.map(|w| w.value).unwrap_or(1);
    if weight == 0 {
        return Err(ctx.invalid("load_balancing_weight", "must be at least 1"));
    }
    let health = health_status(ctx, e.health_status)?;
    let addresses = resolve(ctx, "endpoint.address", endpoint.address.as_ref())?;
    let transport_socket_match = transport_socket_match(e);
    Ok(addresses
        .into_iter()
        .map(|address| Endpoint {
            address,
            weight,
            health,
            hostname: endpoint.hostname.clone(),
            transport_socket_match: transport_socket_match.clone(),
        })
        .collect())
}

/// The string values of `metadata.filter_metadata["envoy.transport_socket_match"]`
/// (what `Cluster.transport_socket_matches` match on; Istio puts `tlsMode` there).
fn transport_socket_match(e: &pb::LbEndpoint) -> std::collections::BTreeMap<String, String> {
    use envoy_types::pb::google::protobuf::value::Kind;
    e.metadata
        .as_ref()
        .and_then(|m| m.filter_metadata.get("envoy.transport_socket_match"))
        .map(|s| {
            s.fields
                .iter()
                .filter_map(|(k, v)| match &v.kind {
                    Some(Kind::StringValue(s)) => Some((k.clone(), s.clone())),
                    Some(Kind::BoolValue(b)) => Some((k.clone(), b.to_string())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn health_status(ctx: &Ctx, v: i32) -> Result<HealthStatus, CompileError> {
    Ok(match PbHealth::try_from(v) {
        Ok(PbHealth::Unknown) => HealthStatus::Unknown,
        Ok(PbHealth::Healthy) => HealthStatus::Healthy,
        Ok(PbHealth::Unhealthy) => HealthStatus::Unhealthy,
        Ok(PbHealth::Draining) => HealthStatus::Draining,
        Ok(PbHealth::Timeout) => HealthStatus::Timeout,
        Ok(PbHealth::Degraded) => HealthStatus::Degraded,
        Err(_) => return Err(ctx.invalid("health_status", format!("unknown value {v}"))),
    })
}

/// Resolves a host name once (STRICT_DNS / LOGICAL_DNS clusters compiled to
/// static endpoints at load time). `all` keeps every address (STRICT_DNS);
/// otherwise only the first (LOGICAL_DNS).
pub(crate) fn resolve_dns(
    ctx: &Ctx,
    field: &str,
    a: Option<&envoy_types::pb::envoy::config::core::v3::Address>,
    all: bool,
) -> Result<Vec<std::net::SocketAddr>, CompileError> {
    use std::net::ToSocketAddrs;
    let (host, port) = socket_address_parts(ctx, field, a)?;
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![std::net::SocketAddr::new(ip, port)]);
    }
    let mut found: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| ctx.invalid(field, format!("resolving {host:?}: {e}")))?
        .collect();
    found.dedup();
    if found.is_empty() {
        return Err(ctx.invalid(field, format!("{host:?} resolved to no address")));
    }
    if !all {
        found.truncate(1);
    }
    Ok(found)
}
