//! The certificate authority of the mesh: a root (generated or loaded),
//! signing of workload CSRs into SPIFFE X.509 SVIDs, TTLs and the trust bundle,
//! the Istio-compatible CSR gRPC service and its client. It knows identities,
//! never routing.
//!
//! ```text
//!  state dir / cacerts ──> CertificateAuthority ──(issue_identity)──> control plane's
//!   (Istio layout)              │    ▲                                serving cert (15012)
//!                               │    │ sign_csr(csr, caller identity, ttl)
//!                               ▼    │
//!                           CaService ◀── Authenticator (token / client cert / k8s)
//!                               ▲ gRPC over TLS (tls::TlsIncoming + tls::server_config)
//!                               │
//!  proxy: CaClient::fetch_identity ── key in memory + CSR ──> IssuedIdentity
//!         (chain, key, roots) ──> tls::server_config / tls::client_config
//! ```

pub mod auth;
pub mod authority;
pub mod bundle;
pub mod client;
pub mod csr;
pub mod service;
pub mod spiffe;
pub mod timestamp;
pub mod tls;

pub use auth::{
    AuthError, Authenticator, AuthenticatorChain, CallerContext, PeerCertificateAuthenticator,
    TokenAuthenticator,
};
pub use authority::{
    CaConfig, CaError, CaPems, CertificateAuthority, IssuedIdentity, SignError, SignedCertificate,
};
pub use bundle::TrustBundle;
pub use client::{CaClient, ClientError};
pub use service::CaService;
pub use spiffe::{DEFAULT_TRUST_DOMAIN, SpiffeId, SpiffeIdError};
pub use timestamp::{rfc3339, rfc3339_millis};
