//! The mesh's data plane: a sidecar and gateway proxy that understands only
//! Envoy xDS v3 resources, from a bootstrap file or from the control plane.

pub mod bootstrap;
pub mod compile;
pub mod config_dump;
pub mod model;
pub mod xds_json;
