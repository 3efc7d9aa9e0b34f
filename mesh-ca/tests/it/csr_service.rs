//! The CSR service end to end: real gRPC over real TLS on 127.0.0.1, the server
//! presenting a certificate the CA issued for the control plane's identity.

use crate::common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_ca::tls::{self, ClientAuth, ExpectedServer, TlsIncoming};
use mesh_ca::{
    AuthenticatorChain, CaClient, CaConfig, CaService, CertificateAuthority, ClientError,
    IssuedIdentity, PeerCertificateAuthenticator, SpiffeId, TokenAuthenticator,
};
use rustls::pki_types::ServerName;
use tokio::net::TcpListener;
use x509_parser::extensions::GeneralName;

struct Mesh {
    addr: SocketAddr,
    ca: Arc<CertificateAuthority>,
    control_plane: SpiffeId,
    helloworld_token: String,
    ratings_token: String,
}

fn helloworld() -> SpiffeId {
    SpiffeId::new("cluster.local", "default", "helloworld").unwrap()
}

async fn start_mesh() -> Mesh {
    let ca = Arc::new(CertificateAuthority::generate(CaConfig::default()).unwrap());
    let control_plane = SpiffeId::new("cluster.local", "istio-system", "istiod").unwrap();
    let serving = ca
        .issue_identity(
            &control_plane,
            &["istiod.istio-system.svc".to_owned()],
            None,
        )
        .unwrap();
    let server_tls = tls::server_config(&serving, ClientAuth::Optional).unwrap();
    let mut tokens = TokenAuthenticator::new("cluster.local");
    let helloworld_token = tokens.issue_token("default", "helloworld").unwrap();
    let ratings_token = tokens.issue_token("default", "ratings").unwrap();
    let auth = AuthenticatorChain::new(vec![
        Arc::new(PeerCertificateAuthenticator::new("cluster.local")),
        Arc::new(tokens),
    ]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = TlsIncoming::new(listener, Arc::new(server_tls));
    let service = CaService::new(ca.clone(), Arc::new(auth)).into_server();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    Mesh {
        addr,
        ca,
        control_plane,
        helloworld_token,
        ratings_token,
    }
}

impl Mesh {
    async fn client(&self, token: Option<&str>, identity: Option<&IssuedIdentity>) -> CaClient {
        let tls = tls::client_config(
            self.ca.trust_bundle(),
            identity,
            ExpectedServer::SpiffeIds(vec![self.control_plane.clone()]),
        )
        .unwrap();
        CaClient::connect(
            self.addr,
            Arc::new(tls),
            ServerName::IpAddress(self.addr.ip().into()),
            token.map(str::to_owned),
        )
        .await
        .unwrap()
    }

    async fn helloworld_client(&self) -> CaClient {
        self.client(Some(&self.helloworld_token), None).await
    }
}

fn refusal(err: ClientError) -> tonic::Status {
    match err {
        ClientError::Refused(status) => status,
        other => panic!("expected a refusal from the CA, got {other}"),
    }
}

fn csr_with_sans(sans: Vec<rcgen::SanType>) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = sans;
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn uri(s: &str) -> rcgen::SanType {
    rcgen::SanType::URI(s.try_into().unwrap())
}

#[tokio::test]
async fn issues_a_spiffe_svid_for_the_callers_own_identity() {
    let mesh = start_mesh().await;
    let mut client = mesh.helloworld_client().await;
    let before = SystemTime::now();
    let issued = client.fetch_identity(&helloworld(), None).await.unwrap();

    let (_, leaf) = x509_parser::parse_x509_certificate(issued.leaf()).unwrap();
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .expect("SAN extension present")
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => format!("URI:{u}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        sans,
        vec!["URI:spiffe://cluster.local/ns/default/sa/helloworld"]
    );
    assert!(!leaf.is_ca());

    // Issued by the CA's root, and signed by its key.
    let (_, root) = x509_parser::parse_x509_certificate(mesh.ca.root_certificate()).unwrap();
    assert_eq!(leaf.issuer(), root.subject());
    leaf.verify_signature(Some(root.public_key())).unwrap();
    assert_eq!(issued.roots.roots(), &[mesh.ca.root_certificate().clone()]);
    assert_eq!(
        issued.chain.len(),
        1,
        "chain without the root: just the leaf"
    );

    // Default TTL of 24h, give or take the run time of this test and the skew allowance.
    let ttl = issued.not_after.duration_since(before).unwrap();
    assert!(ttl <= Duration::from_secs(24 * 3600), "{ttl:?}");
    assert!(ttl > Duration::from_secs(23 * 3600), "{ttl:?}");
    assert!(issued.not_before <= before);

    // A requested shorter validity is honoured.
    let short = client
        .fetch_identity(&helloworld(), Some(Duration::from_secs(600)))
        .await
        .unwrap();
    let ttl = short.not_after.duration_since(SystemTime::now()).unwrap();
    assert!(
        ttl <= Duration::from_secs(600) && ttl > Duration::from_secs(300),
        "{ttl:?}"
    );

    // What the client returns is ready for mTLS: two workloads complete a handshake
    // and each side learns the other's identity.
    let ratings = SpiffeId::new("cluster.local", "default", "ratings").unwrap();
    let ratings_issued = mesh
        .client(Some(&mesh.ratings_token), None)
        .await
        .fetch_identity(&ratings, None)
        .await
        .unwrap();
    assert_eq!(
        common::mtls(&ratings_issued, &issued, &issued.roots)
            .await
            .unwrap(),
        helloworld()
    );
}

#[tokio::test]
async fn refuses_a_csr_for_someone_elses_identity() {
    let mesh = start_mesh().await;
    let mut client = mesh.helloworld_client().await;
    let other = SpiffeId::new("cluster.local", "default", "ratings").unwrap();
    let status = refusal(client.fetch_identity(&other, None).await.unwrap_err());
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "CSR requests identity spiffe://cluster.local/ns/default/sa/ratings but the caller is authenticated as spiffe://cluster.local/ns/default/sa/helloworld"
    );

    let foreign = SpiffeId::new("other.domain", "default", "helloworld").unwrap();
    let status = refusal(client.fetch_identity(&foreign, None).await.unwrap_err());
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status.message().contains("spiffe://other.domain/"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn refuses_several_or_non_spiffe_sans() {
    let mesh = start_mesh().await;
    let mut client = mesh.helloworld_client().await;
    let own = "spiffe://cluster.local/ns/default/sa/helloworld";

    let two = csr_with_sans(vec![
        uri(own),
        uri("spiffe://cluster.local/ns/default/sa/x"),
    ]);
    let status = refusal(client.create_certificate(two, None).await.unwrap_err());
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with("CSR requests 2 subject alternative names (URI:spiffe://cluster.local/ns/default/sa/helloworld, URI:spiffe://cluster.local/ns/default/sa/x)"), "{}", status.message());

    let dns = csr_with_sans(vec![rcgen::SanType::DnsName(
        "helloworld".try_into().unwrap(),
    )]);
    let status = refusal(client.create_certificate(dns, None).await.unwrap_err());
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "CSR requests subject alternative name DNS:helloworld; only a SPIFFE URI is allowed"
    );

    let https = csr_with_sans(vec![uri("https://helloworld")]);
    let status = refusal(client.create_certificate(https, None).await.unwrap_err());
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("URI:https://helloworld"),
        "{}",
        status.message()
    );

    let bad_path = csr_with_sans(vec![uri("spiffe://cluster.local/workload/helloworld")]);
    let status = refusal(client.create_certificate(bad_path, None).await.unwrap_err());
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("not a mesh identity"),
        "{}",
        status.message()
    );

    // No SAN at all: the caller's own identity is used, as Istio does.
    let bare = csr_with_sans(vec![]);
    let chain = client.create_certificate(bare, None).await.unwrap();
    let certs = mesh_ca::bundle::certificates_from_pem("chain", &chain[0]).unwrap();
    assert_eq!(tls::spiffe_id_of(&certs[0]).unwrap(), helloworld());
}

#[tokio::test]
async fn refuses_malformed_csrs_with_clear_errors() {
    let mesh = start_mesh().await;
    let mut client = mesh.helloworld_client().await;
    let cases = [
        ("", "malformed CSR: CSR is empty"),
        ("not a csr", "malformed CSR: CSR is not PEM"),
        (
            "-----BEGIN CERTIFICATE REQUEST-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE REQUEST-----\n",
            "malformed CSR: CSR is not a valid PKCS#10 request",
        ),
    ];
    for (csr, want) in cases {
        let status = refusal(
            client
                .create_certificate(csr.into(), None)
                .await
                .unwrap_err(),
        );
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{csr:?}");
        assert!(
            status.message().starts_with(want),
            "{csr:?}: {}",
            status.message()
        );
    }
    let cert_pem = mesh_ca::bundle::certificate_to_pem(mesh.ca.root_certificate());
    let status = refusal(client.create_certificate(cert_pem, None).await.unwrap_err());
    assert_eq!(
        status.message(),
        "malformed CSR: CSR PEM block is labelled \"CERTIFICATE\"; expected \"CERTIFICATE REQUEST\""
    );
}

#[tokio::test]
async fn refuses_a_validity_above_the_maximum() {
    let mesh = start_mesh().await;
    let mut client = mesh.helloworld_client().await;
    let status = refusal(
        client
            .fetch_identity(&helloworld(), Some(Duration::from_secs(91 * 24 * 3600)))
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "requested validity 91d is more than the maximum 90d"
    );
}

#[tokio::test]
async fn refuses_unknown_or_missing_tokens() {
    let mesh = start_mesh().await;
    let mut client = mesh.client(Some("not-a-token"), None).await;
    let status = refusal(
        client
            .fetch_identity(&helloworld(), None)
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(status.message(), "the bearer token is not known to this CA");

    let mut client = mesh.client(None, None).await;
    let status = refusal(
        client
            .fetch_identity(&helloworld(), None)
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().starts_with("no credentials"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn renews_with_the_current_client_certificate_instead_of_a_token() {
    let mesh = start_mesh().await;
    let first = mesh
        .helloworld_client()
        .await
        .fetch_identity(&helloworld(), None)
        .await
        .unwrap();
    let mut renewing = mesh.client(None, Some(&first)).await;
    let second = renewing.fetch_identity(&helloworld(), None).await.unwrap();
    assert_ne!(first.leaf(), second.leaf());
    // The certificate proves helloworld only.
    let other = SpiffeId::new("cluster.local", "default", "ratings").unwrap();
    let status = refusal(renewing.fetch_identity(&other, None).await.unwrap_err());
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn lazy_channel_connects_on_first_use_with_the_root_file_istio_layout_gives() {
    let mesh = start_mesh().await;
    let dir = tempfile::tempdir().unwrap();
    let root_file = dir.path().join("root-cert.pem");
    std::fs::write(&root_file, mesh.ca.trust_bundle().to_pem()).unwrap();
    let roots = mesh_ca::TrustBundle::from_pem_file(&root_file).unwrap();
    let tls = tls::client_config(
        &roots,
        None,
        ExpectedServer::TrustDomain("cluster.local".into()),
    )
    .unwrap();
    let channel = tls::lazy_channel(
        mesh.addr,
        Arc::new(tls),
        ServerName::IpAddress(mesh.addr.ip().into()),
    );
    let mut client = CaClient::new(channel, Some(mesh.helloworld_token.clone()));
    let issued = client.fetch_identity(&helloworld(), None).await.unwrap();
    assert_eq!(issued.identity, helloworld());
}

#[tokio::test]
async fn client_checks_the_servers_identity() {
    let mesh = start_mesh().await;
    // Host name verification against the DNS SAN of the control plane's certificate.
    let tls = tls::client_config(mesh.ca.trust_bundle(), None, ExpectedServer::HostName).unwrap();
    let mut client = CaClient::connect(
        mesh.addr,
        Arc::new(tls),
        ServerName::try_from("istiod.istio-system.svc").unwrap(),
        Some(mesh.helloworld_token.clone()),
    )
    .await
    .unwrap();
    client.fetch_identity(&helloworld(), None).await.unwrap();

    // Expecting another SPIFFE ID: the handshake fails.
    let tls = tls::client_config(
        mesh.ca.trust_bundle(),
        None,
        ExpectedServer::SpiffeIds(vec![helloworld()]),
    )
    .unwrap();
    let err = CaClient::connect(
        mesh.addr,
        Arc::new(tls),
        ServerName::IpAddress(mesh.addr.ip().into()),
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");

    // Trusting another CA's root: the handshake fails too.
    let stranger = CertificateAuthority::generate(CaConfig::default()).unwrap();
    let tls = tls::client_config(
        stranger.trust_bundle(),
        None,
        ExpectedServer::TrustDomain("cluster.local".into()),
    )
    .unwrap();
    assert!(
        CaClient::connect(
            mesh.addr,
            Arc::new(tls),
            ServerName::IpAddress(mesh.addr.ip().into()),
            None,
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn signs_a_csr_made_by_openssl() {
    if Command::new("openssl").arg("version").output().is_err() {
        println!("SKIPPED: openssl is not installed, cannot produce a CSR with `openssl req`");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let csr = dir.path().join("csr.pem");
    let status = Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("openssl")
        .args(["req", "-new", "-key"])
        .arg(&key)
        .args([
            "-subj",
            "/O=mesh/CN=helloworld",
            "-addext",
            "subjectAltName=URI:spiffe://cluster.local/ns/default/sa/helloworld",
            "-out",
        ])
        .arg(&csr)
        .status()
        .unwrap();
    assert!(status.success());

    let mesh = start_mesh().await;
    let mut client = mesh.helloworld_client().await;
    let chain = client
        .create_certificate(std::fs::read_to_string(&csr).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(chain.len(), 2, "leaf and root");
    let leaf_path = dir.path().join("leaf.pem");
    let root_path = dir.path().join("root.pem");
    std::fs::write(&leaf_path, &chain[0]).unwrap();
    std::fs::write(&root_path, &chain[1]).unwrap();
    // openssl itself accepts the chain, and the certificate carries the CSR's key.
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&root_path)
        .arg(&leaf_path)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "openssl verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let leaf_key = Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(&leaf_path)
        .output()
        .unwrap();
    let csr_key = Command::new("openssl")
        .args(["req", "-noout", "-pubkey", "-in"])
        .arg(&csr)
        .output()
        .unwrap();
    assert_eq!(leaf_key.stdout, csr_key.stdout);
    let certs = mesh_ca::bundle::certificates_from_pem("leaf", &chain[0]).unwrap();
    assert_eq!(tls::spiffe_id_of(&certs[0]).unwrap(), helloworld());
}
