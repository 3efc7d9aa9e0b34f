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

/// Makes the generated schemas acceptable to API servers and faithful to Istio's CRDs:
/// - `null` moves out of every `enum` into `nullable: true`: the schemas of optional enums
///   list it as a value; API servers reject or mangle that (1.20 refuses it) and kubectl's
///   client-side validation flags it, while `nullable` says the same thing;
/// - no `default`: serde's defaults are how the loader reads a missing field, not values the
///   API server should write into stored objects (structural defaulting would persist a
///   `destination: {host: ""}` into routes that have none), and 1.20 rejects some of them.
fn for_api_servers(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    use serde_json::Value;
    fn schema(v: &mut Value) {
        let Value::Object(map) = v else { return };
        map.remove("default");
        if let Some(Value::Array(values)) = map.get_mut("enum")
            && values.iter().any(Value::is_null)
        {
            values.retain(|x| !x.is_null());
            map.insert("nullable".to_string(), Value::Bool(true));
        }
        for key in ["properties", "patternProperties"] {
            if let Some(Value::Object(props)) = map.get_mut(key) {
                props.values_mut().for_each(schema);
            }
        }
        for key in ["items", "additionalProperties", "not"] {
            match map.get_mut(key) {
                Some(Value::Array(list)) => list.iter_mut().for_each(schema),
                Some(one) => schema(one),
                None => {}
            }
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(list)) = map.get_mut(key) {
                list.iter_mut().for_each(schema);
            }
        }
    }
    let Ok(mut value) = serde_json::to_value(&crd) else {
        return crd;
    };
    if let Some(Value::Array(versions)) = value.pointer_mut("/spec/versions") {
        for version in versions {
            if let Some(root) = version.pointer_mut("/schema/openAPIV3Schema") {
                schema(root);
            }
        }
    }
    serde_json::from_value(value).unwrap_or(crd)
}

/// Every CRD, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    let crds = vec![
        with_versions(VirtualService::crd(), NETWORKING_VERSIONS),
        with_versions(DestinationRule::crd(), NETWORKING_VERSIONS),
        with_versions(Gateway::crd(), NETWORKING_VERSIONS),
        with_versions(ServiceEntry::crd(), NETWORKING_VERSIONS),
        with_versions(WorkloadEntry::crd(), NETWORKING_VERSIONS),
        with_versions(Sidecar::crd(), NETWORKING_VERSIONS),
        with_versions(PeerAuthentication::crd(), SECURITY_VERSIONS),
        with_versions(AuthorizationPolicy::crd(), SECURITY_VERSIONS),
        with_versions(RequestAuthentication::crd(), SECURITY_VERSIONS),
    ];
    crds.into_iter().map(for_api_servers).collect()
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

    #[test]
    fn no_enum_lists_null_and_no_schema_has_a_default() {
        for crd in all() {
            let text = serde_json::to_string(&crd).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let mut stack = vec![&v];
            while let Some(v) = stack.pop() {
                match v {
                    serde_json::Value::Object(m) => {
                        if let Some(serde_json::Value::Array(e)) = m.get("enum") {
                            assert!(
                                !e.iter().any(|x| x.is_null()),
                                "{:?}: {e:?}",
                                crd.metadata.name
                            );
                        }
                        stack.extend(m.values());
                    }
                    serde_json::Value::Array(a) => stack.extend(a),
                    _ => {}
                }
            }
        }
    }
}
