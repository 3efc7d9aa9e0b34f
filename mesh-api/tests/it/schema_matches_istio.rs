//! The generated CRD schemas have the same field names, nesting and enum values
//! as Istio's own CRDs (`manifests/charts/base/files/crd-all.gen.yaml`).

use crate::common;

use std::collections::BTreeSet;

use serde_json::Value;

/// Every `path: type [enum]` of an OpenAPI schema, maps and lists included.
fn paths(schema: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            let p = format!("{prefix}.{k}");
            out.insert(p.clone());
            paths(v, &p, out);
        }
    }
    if let Some(items) = schema.get("items") {
        paths(items, &format!("{prefix}[]"), out);
    }
    if let Some(ap) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        paths(ap, &format!("{prefix}{{}}"), out);
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        let mut values: Vec<String> = e
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        values.sort();
        out.insert(format!("{prefix} enum {}", values.join("|")));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        for alt in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            paths(alt, prefix, out);
        }
    }
}

fn spec_paths(crd: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    paths(schema, "spec", &mut out);
    out
}

#[test]
fn generated_crds_match_istio_field_names_and_enums() {
    let Some(file) = common::istio_samples("manifests/charts/base/files/crd-all.gen.yaml") else {
        return;
    };
    let text = std::fs::read_to_string(file).unwrap();
    let istio: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let mut problems = Vec::new();
    for ours in mesh_api::crd::all() {
        let ours = serde_json::to_value(&ours).unwrap();
        let name = ours["metadata"]["name"].as_str().unwrap().to_string();
        let theirs = istio
            .iter()
            .find(|c| c["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} not in Istio's CRDs"));
        let (a, b) = (spec_paths(&ours), spec_paths(theirs));
        assert!(
            b.len() > 5 && a.len() > 5,
            "{name}: {} vs {} paths",
            a.len(),
            b.len()
        );
        eprintln!("{name}: {} fields and enums compared", b.len());
        for missing in b.difference(&a) {
            problems.push(format!("{name}: missing {missing}"));
        }
        for extra in a.difference(&b) {
            problems.push(format!("{name}: extra {extra}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
