//! The CA core: persistence of the generated root, Istio's plugged-in layout,
//! and trust bundles with several roots, checked with real TLS handshakes on
//! 127.0.0.1 between identities the CA issued.

use std::sync::Arc;
use std::time::Duration;

use crate::common::mtls;

use mesh_ca::authority::{CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, ROOT_CERT_FILE};
use mesh_ca::bundle::certificate_to_pem;
use mesh_ca::tls::{self, ClientAuth, ExpectedServer};
use mesh_ca::{CaConfig, CaError, CertificateAuthority, SpiffeId};
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "default", sa).unwrap()
}

#[test]
fn persisted_root_is_reloaded_on_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    let first = CertificateAuthority::load_or_generate(&state, CaConfig::default()).unwrap();
    for file in [CA_CERT_FILE, CA_KEY_FILE, ROOT_CERT_FILE, CERT_CHAIN_FILE] {
        assert!(state.join(file).exists(), "{file} written");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state.join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key readable by its owner only: {mode:o}");
    }
    let second = CertificateAuthority::load_or_generate(&state, CaConfig::default()).unwrap();
    assert_eq!(first.root_certificate(), second.root_certificate());
    assert_eq!(first.trust_bundle(), second.trust_bundle());

    // The reloaded key is the root's: what it signs verifies against the first root.
    let leaf = second.issue_identity(&id("a"), &[], None).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(leaf.leaf()).unwrap();
    let (_, root) = x509_parser::parse_x509_certificate(first.root_certificate()).unwrap();
    leaf.verify_signature(Some(root.public_key())).unwrap();
}

#[test]
fn an_incomplete_ca_directory_is_an_error_not_a_new_root() {
    let dir = tempfile::tempdir().unwrap();
    CertificateAuthority::load_or_generate(dir.path(), CaConfig::default()).unwrap();
    std::fs::remove_file(dir.path().join(CA_KEY_FILE)).unwrap();
    let err = CertificateAuthority::load_or_generate(dir.path(), CaConfig::default()).unwrap_err();
    assert!(
        matches!(
            err,
            CaError::Incomplete {
                missing: "ca-key.pem",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("ca-key.pem is missing"), "{err}");
}

#[test]
fn names_unsupported_key_formats_and_mismatched_keys() {
    let dir = tempfile::tempdir().unwrap();
    CertificateAuthority::load_or_generate(dir.path(), CaConfig::default()).unwrap();
    let key_path = dir.path().join(CA_KEY_FILE);
    std::fs::write(
        &key_path,
        "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = CertificateAuthority::load_plugged_in(dir.path(), CaConfig::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("\"EC PRIVATE KEY\" keys are not supported; convert to PKCS#8"),
        "{err}"
    );

    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(&key_path, other.serialize_pem()).unwrap();
    let err = CertificateAuthority::load_plugged_in(dir.path(), CaConfig::default()).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("the key does not belong to the certificate in ca-cert.pem"),
        "{err}"
    );
}

/// A root and an intermediate written in Istio's `cacerts` layout.
fn write_plugged_in_ca(dir: &std::path::Path) -> rcgen::Certificate {
    let root_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut root_params = rcgen::CertificateParams::default();
    root_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "corp root");
    root_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = rcgen::Issuer::new(root_params, root_key);

    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mesh intermediate");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.signed_by(&ca_key, &root_issuer).unwrap();

    std::fs::write(dir.join(CA_CERT_FILE), ca_cert.pem()).unwrap();
    std::fs::write(dir.join(CA_KEY_FILE), ca_key.serialize_pem()).unwrap();
    std::fs::write(dir.join(ROOT_CERT_FILE), root.pem()).unwrap();
    std::fs::write(
        dir.join(CERT_CHAIN_FILE),
        format!("{}{}", ca_cert.pem(), root.pem()),
    )
    .unwrap();
    root
}

#[tokio::test]
async fn plugged_in_intermediate_signs_and_chains_to_the_corporate_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = write_plugged_in_ca(dir.path());
    let ca = CertificateAuthority::load_plugged_in(dir.path(), CaConfig::default()).unwrap();
    assert_eq!(ca.root_certificate(), root.der());
    assert_ne!(ca.signing_certificate(), root.der());

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = mesh_ca::csr::build_csr_pem(&key, &id("a").to_uri()).unwrap();
    let signed = ca.sign_csr(&csr, &id("a"), 0).unwrap();
    assert_eq!(signed.chain_pem.len(), 3, "leaf, intermediate, root");
    assert_eq!(
        signed.chain_pem[1],
        certificate_to_pem(ca.signing_certificate())
    );
    assert_eq!(signed.chain_pem[2], certificate_to_pem(root.der()));

    // Identities from the intermediate complete an mTLS handshake trusting only the root.
    let a = ca.issue_identity(&id("a"), &[], None).unwrap();
    let b = ca
        .issue_identity(&id("b"), &[], Some(Duration::from_secs(3600)))
        .unwrap();
    assert_eq!(a.chain.len(), 2, "leaf and intermediate");
    assert_eq!(mtls(&a, &b, ca.trust_bundle()).await.unwrap(), id("b"));
}

#[tokio::test]
async fn a_bundle_with_two_roots_accepts_both_during_a_rotation() {
    let old = CertificateAuthority::generate(CaConfig::default()).unwrap();
    let new = CertificateAuthority::generate(CaConfig::default()).unwrap();
    let mut bundle = old.trust_bundle().clone();
    bundle.merge(new.trust_bundle());
    assert_eq!(bundle.len(), 2);

    let server_old = old.issue_identity(&id("server"), &[], None).unwrap();
    let server_new = new.issue_identity(&id("server"), &[], None).unwrap();
    let mut client_new = new.issue_identity(&id("client"), &[], None).unwrap();
    client_new.roots = bundle.clone();
    let mut server_old_rotating = server_old.clone();
    server_old_rotating.roots = bundle.clone();

    // A client from the new root, trusting both, talks to servers of either root.
    assert_eq!(
        mtls(&server_old_rotating, &client_new, &bundle)
            .await
            .unwrap(),
        id("client")
    );
    assert_eq!(
        mtls(&server_new, &client_new, &bundle).await.unwrap(),
        id("client")
    );
    // Trusting only the new root, the old server is refused.
    let err = mtls(&server_old_rotating, &client_new, new.trust_bundle())
        .await
        .unwrap_err();
    assert!(err.contains("invalid peer certificate"), "{err}");
}

#[tokio::test]
async fn handshake_is_refused_for_another_trust_domain_or_unexpected_identity() {
    let ca = CertificateAuthority::generate(CaConfig::default()).unwrap();
    let server = ca.issue_identity(&id("server"), &[], None).unwrap();
    let client = ca.issue_identity(&id("client"), &[], None).unwrap();
    let cfg = tls::client_config(
        ca.trust_bundle(),
        Some(&client),
        ExpectedServer::SpiffeIds(vec![id("someone-else")]),
    )
    .unwrap();
    let server_cfg = tls::server_config(&server, ClientAuth::Required).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.is_ok()
    });
    let err = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            ServerName::IpAddress(addr.ip().into()),
            TcpStream::connect(addr).await.unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("server identity spiffe://cluster.local/ns/default/sa/server is not one of the expected identities [spiffe://cluster.local/ns/default/sa/someone-else]"),
        "{err}"
    );
    assert!(!server_task.await.unwrap());

    let foreign = CaConfig::for_trust_domain("example.org");
    let foreign_ca = CertificateAuthority::generate(foreign).unwrap();
    let err = foreign_ca.issue_identity(&id("x"), &[], None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "identity spiffe://cluster.local/ns/default/sa/x is outside this CA's trust domain \"example.org\""
    );
}

#[test]
fn config_is_validated() {
    let config = CaConfig {
        default_ttl: Duration::from_secs(100 * 24 * 3600),
        ..CaConfig::default()
    };
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "CA config field default_ttl: 100d is more than max_ttl 90d"
    );
    let err = CaConfig::for_trust_domain("Bad Domain")
        .validate()
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("CA trust domain: invalid trust domain \"Bad Domain\""),
        "{err}"
    );
}
