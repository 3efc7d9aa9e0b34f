//! The mesh's view of Istio configuration: the `networking.istio.io` and
//! `security.istio.io` resource types, the loader that turns YAML files into
//! them with errors that name the file, document, line and field, the
//! validation rules and the analyzer behind `meshctl analyze`, and the
//! constants (ports, labels, SPIFFE format) shared by every crate.
//!
//! This crate does no I/O beyond reading the bytes it is given.
pub mod proto;
