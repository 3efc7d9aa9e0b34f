//! The mesh's data plane: a sidecar and gateway proxy that understands only
//! Envoy xDS v3 resources, from a bootstrap file or from the control plane.

pub mod model;
