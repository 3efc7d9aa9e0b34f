//! The mesh's view of Istio configuration: the `networking.istio.io` and
//! `security.istio.io` resource types, the loader that turns YAML files into
//! them with errors that name the file, document, line and field, the
//! validation rules and the analyzer behind `meshctl analyze`, and the
//! constants (ports, labels, SPIFFE format) shared by every crate.
//!
//! This crate does no I/O beyond reading the files it is pointed at.
//!
//! ```text
//! YAML files / stdin ──> loader::load_* ──> Config { resources, skipped, errors }
//!                                              │   each Resource = ResourceMeta (kind, name,
//!                                              │   namespace, labels, source file:line) + Object
//!                                              ├──> mesh-control (registry + xDS translation)
//!                                              └──> analysis::analyze ──> Vec<Message> (IST0xxx)
//! ```

pub mod analysis;
pub mod common;
pub mod constants;
pub mod crd;
pub mod duration;
pub mod host;
pub mod loader;
pub mod networking;
pub mod proto;
pub mod report;
pub mod resource;
pub mod security;
mod yaml_index;

pub use analysis::{Level, Message, analyze};
pub use loader::{LoadError, load_path, load_paths, load_reader, load_str};
pub use resource::{Config, Object, Resource, ResourceMeta, Skipped, Source};
