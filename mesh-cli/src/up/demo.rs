//! The built-in helloworld demo (`mesh-cli/demo/`), embedded so `meshctl up` works from any
//! directory and from an installed binary.

/// `demo/workloads.yaml`.
pub const WORKLOADS: &str = include_str!("../../demo/workloads.yaml");

/// The demo's Istio YAML files, by name.
pub const ISTIO_FILES: &[(&str, &str)] = &[
    (
        "helloworld.yaml",
        include_str!("../../demo/helloworld.yaml"),
    ),
    (
        "helloworld-gateway.yaml",
        include_str!("../../demo/helloworld-gateway.yaml"),
    ),
];
