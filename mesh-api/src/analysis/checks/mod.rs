//! The cross-resource checks, one module per package of Istio analyzers, and
//! the helpers several of them share.

use std::collections::BTreeMap;

use super::pod_index::PodIndex;
use super::{Index, Message, codes};
use crate::resource::{Object, Resource};

mod authz;
mod deprecation;
mod destination_rule;
mod gateway;
mod service_entry;
mod sidecar;
mod virtual_service;
mod virtual_service_matches;

pub(super) use authz::authorization_policies;
pub(super) use deprecation::deprecated_fields;
pub(super) use destination_rule::ca_certificates;
pub(super) use gateway::{
    conflicting_gateways, duplicate_certificates, gateway_ports, gateway_secrets,
};
pub(super) use service_entry::service_entry_addresses;
pub(super) use sidecar::sidecar_selectors;
pub(super) use virtual_service::{
    conflicting_mesh_hosts, destination_hosts, destination_subsets, jwt_claim_routes,
    virtual_service_gateways,
};
pub(super) use virtual_service_matches::virtual_service_matches;

fn not_found(resource: &Resource, path: &str, reftype: &str, refval: &str) -> Message {
    Message::about(
        codes::ReferencedResourceNotFound,
        resource,
        path,
        format!("Referenced {reftype} not found: {refval:?}"),
    )
}

fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn is_subset(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    a.iter().all(|(k, v)| b.get(k) == Some(v))
}

fn pod_labels(r: &Resource) -> Option<&BTreeMap<String, String>> {
    match &r.object {
        Object::Pod(_) => crate::loader::workload_labels(&r.object),
        _ => None,
    }
}

/// The input's pods with their labels, indexed.
fn pods<'a>(index: &Index<'a>) -> PodIndex<'a> {
    PodIndex::new(
        index
            .resources
            .iter()
            .filter_map(|r| pod_labels(r).map(|l| (*r, l)))
            .collect(),
    )
}
