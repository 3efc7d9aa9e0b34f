//! mesh-control's integration tests, in one binary (one link, not one per file): translation
//! against golden files and fields, the ADS and CSR servers over real sockets, the binary, and
//! interop with the real Envoy. Run one topic with `cargo test -p mesh-control --test it ads_sync::`.

// Helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![expect(clippy::unwrap_used, reason = "a failed setup is a failed test")]

mod ads_support;
mod secure_support;

mod ads_sync;
pub(crate) mod binary;
mod envoy_interop;
mod kubernetes_api;
mod kubernetes_registry;
mod secure_ads;
mod secure_csr;
mod secure_envoy;
mod translate_envoy_mtls;
mod translate_fields;
mod translate_golden;
mod translate_mtls;
