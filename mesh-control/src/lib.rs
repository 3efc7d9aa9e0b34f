//! The control plane: watches Istio configuration, builds the service
//! registry, translates both into Envoy xDS v3 resources and serves them to
//! every proxy over ADS, tracking which proxy holds which version.
//!
//! ```text
//! ConfigSource (directory | Kubernetes) --> mesh_api::Config --> Registry
//!                                                      \            |
//!                                                       translate(per proxy) --> XdsResources
//!                                                                                    |
//!                            proxies <-- ADS server (versions, nonces, ACK/NACK) <---+
//!                                          plaintext 15010 | TLS 15012 (secure)
//!                                                            + CSR service (mesh_ca::CaService)
//!                                                            + SDS: default / ROOTCA per identity
//! ```
//!
//! On the TLS port the control plane presents its own identity,
//! `spiffe://TRUST_DOMAIN/ns/istio-system/sa/istiod`, issued by the mesh CA
//! ([`secure`]); callers prove theirs with a bearer token or a mesh client
//! certificate.

pub mod ads;
pub mod debug;
pub mod kube_ca;
mod kube_events;
mod memory;
pub mod metrics;
pub mod node;
pub mod registry;
pub mod secure;
pub mod server;
pub mod source;
pub mod token_review;
pub mod translate;

pub use server::{Bound, ServerConfig, ServerError, build, build_with_sources};
