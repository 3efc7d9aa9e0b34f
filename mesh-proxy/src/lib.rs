//! The mesh's data plane: a sidecar and gateway proxy that understands only
//! Envoy xDS v3 resources, from a bootstrap file or from the control plane.
//!
//! ```text
//! bootstrap.yaml / ADS --> envoy-types messages --compile--> model::Snapshot
//!                                                               | (swapped whole)
//! downstream --> listener --> filter chain --> HTTP connection manager
//!                                               --> router --> cluster --> LB --> pool --> upstream
//!                                          \--> TCP proxy --> cluster --> upstream
//! ```
//!
//! The messages themselves are not kept decoded: `/config_dump` holds the
//! bytes received and decodes them when asked, and the descriptor pool that
//! reads a bootstrap is released once start-up is over (`memory`).

pub mod access_log;
pub mod admin;
pub mod body;
pub mod bootstrap;
pub mod compile;
pub mod config_dump;
pub mod fd_limit;
pub mod filter_chain;
pub mod http;
pub mod identity;
pub mod listener;
pub mod logging;
pub mod memory;
pub mod model;
pub mod observed_body;
pub mod original_dst;
pub mod overload;
pub mod server;
pub mod stats;
pub mod tcp_proxy;
pub mod tls;
pub mod upstream;
pub mod xds;
pub mod xds_json;

pub use server::{Bound, Proxy, ProxyConfig, build};
