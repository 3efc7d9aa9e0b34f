//! CustomResourceDefinitions of the Istio kinds, generated from the types, as
//! `charts/mesh/crds/` ships them (`cargo xtask crds`). Each CRD serves every
//! apiVersion users have in their files and stores `v1`, as Istio's do.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::loader::{NETWORKING_VERSIONS, SECURITY_VERSIONS};
use crate::networking::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
};
use crate::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};

/// Adds the other served versions (same schema, not stored) to a `v1` CRD.
fn with_versions(mut crd: CustomResourceDefinition, versions: &[&str]) -> CustomResourceDefinition {
    let Some(stored) = crd.spec.versions.first().cloned() else {
        return crd;
    };
    for v in versions {
        if *v == stored.name {
            continue;
        }
        let mut version = stored.clone();
        version.name = (*v).to_string();
        version.storage = false;
        version.served = true;
        crd.spec.versions.push(version);
    }
    crd.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("app.kubernetes.io/part-of".to_string(), "mesh".to_string());
    crd
}

/// Every CRD, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        with_versions(VirtualService::crd(), NETWORKING_VERSIONS),
        with_versions(DestinationRule::crd(), NETWORKING_VERSIONS),
        with_versions(Gateway::crd(), NETWORKING_VERSIONS),
        with_versions(ServiceEntry::crd(), NETWORKING_VERSIONS),
        with_versions(WorkloadEntry::crd(), NETWORKING_VERSIONS),
        with_versions(Sidecar::crd(), NETWORKING_VERSIONS),
        with_versions(PeerAuthentication::crd(), SECURITY_VERSIONS),
        with_versions(AuthorizationPolicy::crd(), SECURITY_VERSIONS),
        with_versions(RequestAuthentication::crd(), SECURITY_VERSIONS),
    ]
}

/// File name a CRD is written to: `virtualservices.networking.istio.io.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_crd_with_all_versions() {
        let crds = all();
        assert_eq!(crds.len(), 9);
        let vs = &crds[0];
        assert_eq!(
            vs.metadata.name.as_deref(),
            Some("virtualservices.networking.istio.io")
        );
        let names: Vec<&str> = vs.spec.versions.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["v1", "v1alpha3", "v1beta1"]);
        assert_eq!(vs.spec.versions.iter().filter(|v| v.storage).count(), 1);
        let pa = &crds[6];
        assert_eq!(pa.spec.group, "security.istio.io");
        assert_eq!(pa.spec.versions.len(), 2);
    }
}
