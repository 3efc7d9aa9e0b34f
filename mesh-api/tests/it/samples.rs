//! Istio's sample files load without errors and survive a round trip.

use crate::common;

use mesh_api::{Config, load_path, load_str};

/// Documents of Istio's analyzer inputs that are not Kubernetes objects (mesh
/// configs passed to Istio's test separately) or that Istio's schema rejects
/// on purpose; each must fail with exactly this message.
const EXPECTED_FAILURES: &[(&str, &str)] = &[
    ("common/meshconfig.yaml", "missing field `kind`"),
    ("common/meshnetworks.yaml", "missing field `kind`"),
    ("mesh-with-automtls.yaml", "missing field `kind`"),
    (
        "serviceentry-address-allocated-mesh-cfg.yaml",
        "missing field `kind`",
    ),
    (
        "serviceentry-missing-addresses-protocol-mesh-cfg.yaml",
        "missing field `kind`",
    ),
    (
        "telemetry-lightstep-meshconfig.yaml",
        "missing field `kind`",
    ),
    // A Gateway server without its required `port`.
    (
        "conflicting-gateways-invalid-port.yaml",
        "spec.servers[0]: missing field `port`",
    ),
];

fn assert_loads_and_round_trips(files: &[std::path::PathBuf]) -> usize {
    let mut resources = 0;
    let mut failures = Vec::new();
    for file in files {
        let config = load_path(file);
        for e in &config.errors {
            let text = e.to_string();
            let expected = EXPECTED_FAILURES
                .iter()
                .any(|(f, m)| file.ends_with(f) && text.ends_with(m));
            if !expected {
                failures.push(text);
            }
        }
        for r in &config.resources {
            resources += 1;
            // Serialise to YAML, parse again: the same object must come back.
            let yaml = serde_saphyr::to_string(&r.object.to_json()).unwrap();
            let again: Config = load_str("round-trip.yaml", &yaml);
            if !again.errors.is_empty() || again.resources.len() != 1 {
                failures.push(format!(
                    "{}: {} {}: round trip failed to load: {:?}\n{yaml}",
                    r.meta.source, r.meta.kind, r.meta.name, again.errors
                ));
                continue;
            }
            if again.resources[0].object != r.object {
                failures.push(format!(
                    "{}: {} {}: round trip changed the object:\n{yaml}",
                    r.meta.source, r.meta.kind, r.meta.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    resources
}

#[test]
fn every_istio_sample_loads_and_round_trips() {
    let Some(dir) = common::istio_samples("samples") else {
        return;
    };
    let files = common::yaml_files(&dir);
    assert!(!files.is_empty());
    let n = assert_loads_and_round_trips(&files);
    eprintln!(
        "{} files, {n} resources loaded and round-tripped",
        files.len()
    );
    assert!(n > 50, "only {n} resources loaded");
}

#[test]
fn every_analyzer_input_loads_and_round_trips() {
    let Some(dir) = common::istio_samples("pkg/config/analysis/analyzers/testdata") else {
        return;
    };
    let files = common::yaml_files(&dir);
    let n = assert_loads_and_round_trips(&files);
    eprintln!(
        "{} files, {n} resources loaded and round-tripped",
        files.len()
    );
}

#[test]
fn fixtures_load_and_round_trip() {
    let files = common::yaml_files(&common::fixtures());
    assert!(!files.is_empty());
    let n = assert_loads_and_round_trips(&files);
    assert!(n >= 5, "{n}");
}
