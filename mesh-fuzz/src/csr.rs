//! The CSR a workload sends to the CA (`CreateCertificate`): the CA parses
//! it, checks its self-signature and its SANs, then signs.

use std::sync::OnceLock;

use mesh_ca::authority::{CaConfig, CertificateAuthority};
use mesh_ca::spiffe::SpiffeId;

/// The identity a caller proved (its token or client certificate).
const CALLER: &str = "spiffe://cluster.local/ns/default/sa/default";

fn authority() -> &'static (CertificateAuthority, SpiffeId) {
    static CA: OnceLock<(CertificateAuthority, SpiffeId)> = OnceLock::new();
    CA.get_or_init(|| {
        let ca = CertificateAuthority::generate(CaConfig::default())
            .expect("the fuzz target's CA generates");
        let caller = SpiffeId::parse(CALLER).expect("a valid SPIFFE ID");
        (ca, caller)
    })
}

/// `data` as the request's `csr` field (PEM text), and as the DER inside a
/// well-framed PEM block, so that mutations of the DER reach the PKCS#10
/// parser without first breaking the framing.
pub fn csr(data: &[u8]) {
    let (ca, caller) = authority();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ca.sign_csr(text, caller, 0);
    }
    let framed = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", data.to_vec()));
    if let Err(error) = ca.sign_csr(&framed, caller, 3600) {
        let _ = error.to_string();
    }
}
