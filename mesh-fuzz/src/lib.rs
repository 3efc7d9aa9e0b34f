//! The fuzz targets of the mesh: one thin function per parser that faces
//! untrusted input, each taking any bytes and calling the owning crate's
//! public entry point as production does. A target never panics on any
//! input; a panic (or an assertion below) is a finding.
//!
//! ```text
//! fuzz/fuzz_targets/NAME.rs (cargo fuzz, libFuzzer) --\
//!                                                      +--> mesh_fuzz::NAME(&[u8]) --> owning crate
//! cargo test -p mesh-fuzz (replays fuzz/seeds/NAME) ---/
//! ```
//!
//! | target | entry | input |
//! |---|---|---|
//! | [`loader`] | `mesh_api::load_reader`, `analyze`, `mesh_control::translate::translate`, `mesh_proxy::compile::compile_snapshot` | a YAML/JSON stream of Istio resources |
//! | [`xds`] | `mesh_proxy::compile::compile_*`, `mesh_proxy::xds::state::XdsState` (what the ADS client runs on a response) | protobuf: one Envoy resource, or a sequence of `DiscoveryResponse`s |
//! | [`tls_hello`] | `mesh_proxy::tls::hello::parse` (the `tls_inspector`) | the first bytes of a connection |
//! | [`csr`] | `mesh_ca::CertificateAuthority::sign_csr` (PEM framing, PKCS#10, SAN policy) | a CSR, DER or PEM |
//! | [`http_head`] | hyper's server codec as the proxy configures it, `request_check::check`, forwarding headers, virtual host and route selection | the bytes a client sends on a plaintext connection |
//!
//! See `docs/fuzzing.md` for how to run them.

mod csr;
mod http_head;
mod loader;
mod tls_hello;
mod xds;

pub use csr::csr;
pub use http_head::http_head;
pub use loader::loader;
pub use tls_hello::tls_hello;
pub use xds::xds;

/// A fuzz target: any bytes in, nothing out, never a panic.
pub type Target = fn(&[u8]);

/// Every target by the name its `fuzz/fuzz_targets/NAME.rs` and its
/// `fuzz/seeds/NAME/` use.
pub const TARGETS: &[(&str, Target)] = &[
    ("loader", loader),
    ("xds", xds),
    ("tls_hello", tls_hello),
    ("csr", csr),
    ("http_head", http_head),
];

#[cfg(test)]
mod seeds;
#[cfg(test)]
mod tests;
