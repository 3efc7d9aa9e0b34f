//! Workload certificates for the `hop2-mtls` case: a fresh mesh CA (the one `mesh-ca` runs in
//! the control plane) issues one SPIFFE certificate per sidecar, written as PEM files where
//! [`Identities`] says, for both proxies' bootstraps to read.

use std::path::Path;

use anyhow::Context as _;
use mesh_ca::{CaConfig, CertificateAuthority, SpiffeId};

use super::cases::{
    CLIENT_ACCOUNT, Identities, IdentityFiles, NAMESPACE, SERVER_ACCOUNT, TRUST_DOMAIN,
};

/// Generates a CA and both sidecars' certificates into `case_dir`, replacing older ones.
pub fn write_identities(case_dir: &Path) -> anyhow::Result<Identities> {
    let ca = CertificateAuthority::generate(CaConfig::for_trust_domain(TRUST_DOMAIN))
        .context("generate the bench's CA")?;
    let ids = Identities::under(case_dir);
    write_identity(&ca, CLIENT_ACCOUNT, &ids.client)?;
    write_identity(&ca, SERVER_ACCOUNT, &ids.server)?;
    Ok(ids)
}

fn write_identity(
    ca: &CertificateAuthority,
    account: &str,
    files: &IdentityFiles,
) -> anyhow::Result<()> {
    let id = SpiffeId::new(TRUST_DOMAIN, NAMESPACE, account)?;
    let issued = ca
        .issue_identity(&id, &[], None)
        .with_context(|| format!("issue {id}"))?;
    let key = pem::encode(&pem::Pem::new("PRIVATE KEY", issued.key.secret_der()));
    if let Some(dir) = files.cert_chain.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    for (path, text) in [
        (&files.cert_chain, issued.chain_pem()),
        (&files.private_key, key),
        (&files.roots, issued.roots.to_pem()),
    ] {
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::cases::spiffe_uri;
    use super::*;

    #[test]
    fn writes_a_chain_key_and_roots_per_sidecar_from_one_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ids = write_identities(dir.path()).unwrap();
        assert_eq!(ids, Identities::under(dir.path()));
        let mut roots = Vec::new();
        for (files, account) in [(&ids.client, CLIENT_ACCOUNT), (&ids.server, SERVER_ACCOUNT)] {
            let chain = std::fs::read_to_string(&files.cert_chain).unwrap();
            let key = std::fs::read_to_string(&files.private_key).unwrap();
            let root = std::fs::read_to_string(&files.roots).unwrap();
            assert!(chain.starts_with("-----BEGIN CERTIFICATE-----"), "{chain}");
            assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
            // The leaf names the sidecar's SPIFFE ID.
            let leaf = pem::parse(&chain).unwrap();
            let uri = spiffe_uri(account);
            assert!(
                leaf.contents()
                    .windows(uri.len())
                    .any(|w| w == uri.as_bytes()),
                "{account}: leaf lacks {uri}"
            );
            // The private key parses as PKCS#8.
            assert_eq!(pem::parse(&key).unwrap().tag(), "PRIVATE KEY");
            roots.push(root);
        }
        // One CA signed both, so each side trusts the other.
        assert_eq!(roots[0], roots[1]);
        assert_eq!(
            mesh_ca::TrustBundle::from_pem("roots", &roots[0])
                .unwrap()
                .len(),
            1
        );
    }
}
