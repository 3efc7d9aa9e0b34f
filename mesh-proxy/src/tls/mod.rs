//! TLS on the data path (rustls with the ring provider): downstream
//! termination on filter chains with a `DownstreamTlsContext`, upstream
//! origination for clusters with an `UpstreamTlsContext`, and the secrets
//! both read by SDS name at handshake time.
//!
//! ```text
//! Snapshot.secrets --(every swap)--> SecretStore <--set_local-- identity manager
//!                                        |  generation
//!                                   TlsContexts (configs cached per generation)
//!            listener --tls_inspector--> terminate --> HCM / TCP proxy
//!            pool     --> UpstreamTransport::handshake --> HTTP/1.1 or h2
//! ```

mod contexts;
pub mod downstream;
pub mod hello;
pub mod material;
mod store;
pub mod stream;
pub mod upstream;
pub mod verify;
pub mod xfcc;

pub use contexts::{ServerContext, TlsContexts};
pub use downstream::{DownstreamStream, DownstreamTlsInfo, PeerCertificate};
pub use material::TlsSetupError;
pub use store::SecretStore;
pub use upstream::{UpstreamTlsStats, UpstreamTransport};

/// The verified peer identity of a downstream connection (its URI SAN,
/// a SPIFFE ID), put in each request's extensions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity(pub String);

/// SHA-256 of `data` in lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
