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

use crate::stats::{Scope, Stats};

/// The verified peer identity of a downstream connection (its URI SAN,
/// a SPIFFE ID), put in each request's extensions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity(pub String);

/// A TLS version as Envoy names it (`%DOWNSTREAM_TLS_VERSION%`, stats).
pub fn version_name(version: rustls::ProtocolVersion) -> &'static str {
    match version {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "unknown",
    }
}
/// OpenSSL's name of a suite rustls negotiates (the names Envoy prints).
pub fn cipher_name(suite: rustls::CipherSuite) -> &'static str {
    use rustls::CipherSuite as S;
    match suite {
        S::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        S::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        S::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => "unknown",
    }
}

/// Envoy's per-session counters of a listener or cluster scope:
/// `ssl.versions.<version>` and `ssl.ciphers.<suite>`, each named when first
/// negotiated, so `/stats` tells which protocol the peers agreed on.
pub fn count_session(stats: &Stats, scope: &Scope, conn: &rustls::CommonState) {
    if let Some(v) = conn.protocol_version() {
        stats
            .counter(scope, &format!("ssl.versions.{}", version_name(v)))
            .inc();
    }
    if let Some(suite) = conn.negotiated_cipher_suite() {
        stats
            .counter(
                scope,
                &format!("ssl.ciphers.{}", cipher_name(suite.suite())),
            )
            .inc();
    }
}

/// SHA-256 of `data` in lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
