//! mesh-proxy's integration tests, in one binary (one link of the proxy, not one per file):
//! one module per topic, real in-process listeners; the interop modules also run the real Envoy.
//! Run one topic with `cargo test -p mesh-proxy --test it routing::`.

// Helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![expect(clippy::unwrap_used, reason = "a failed setup is a failed test")]

mod common;
mod identity_support;
mod tls_support;

mod admin;
mod bootstrap_interop;
mod downstream_input;
mod identity_ca;
mod identity_mtls;
mod load_balancing;
mod local_errors;
mod logging_runtime;
mod resilience_envoy_interop;
mod resilience_fault_mirror;
mod resilience_limits;
mod resilience_outlier;
mod resilience_retry;
mod resilience_retry_headers;
mod resilience_timeouts_envoy_interop;
mod routing;
mod snapshot_updates;
mod tcp_and_upgrade;
mod timeouts_connections;
mod tls_envoy_interop;
mod tls_mtls;
mod tls_rotation;
mod tls_transport_matches;
mod xds_client;
mod xds_tls_control_plane;
mod xds_tls_refusal;
