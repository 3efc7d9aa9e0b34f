//! The CA's CSR service on mesh-control's secure port: real TLS (the
//! control plane presents its istiod identity, verified against the root the
//! CA wrote to disk), real gRPC, tokens from the `--ca-tokens` file.

use std::process::Command;
use std::time::Duration;

use crate::secure_support::{SecureMesh, client_id, istiod_id, start_secure};
use mesh_ca::ClientError;
use mesh_ca::tls::spiffe_id_of;
use mesh_test_util::wait_until;
use tonic::Code;

fn refusal(e: ClientError) -> tonic::Status {
    match e {
        ClientError::Refused(status) => status,
        other => panic!("expected a refusal from the CA, got {other}"),
    }
}

async fn mesh() -> (tempfile::TempDir, SecureMesh) {
    let config = tempfile::tempdir().unwrap();
    let mesh = start_secure(config.path(), |_| {}).await;
    (config, mesh)
}

#[tokio::test]
async fn a_csr_with_a_valid_token_is_signed_for_its_identity() {
    let (_config, mesh) = mesh().await;
    let mut ca = mesh.ca_client(Some(&mesh.client_token)).await;
    let issued = ca
        .fetch_identity(&client_id(), Some(Duration::from_secs(3600)))
        .await
        .expect("certificate issued");
    assert_eq!(spiffe_id_of(issued.leaf()).unwrap(), client_id());
    // The chain ends in the root the CA keeps in its directory.
    assert_eq!(issued.roots.roots(), mesh.roots().roots());
    let life = issued.lifetime();
    assert!(
        life >= Duration::from_secs(3600) && life <= Duration::from_secs(3600 + 120),
        "{life:?}"
    );

    // Renewal with the certificate just obtained, no token.
    let channel = mesh.channel(Some(&issued)).await.unwrap();
    let mut renew = mesh_ca::CaClient::new(channel, None);
    let renewed = renew
        .fetch_identity(&client_id(), None)
        .await
        .expect("renewal by client certificate");
    assert_ne!(renewed.leaf(), issued.leaf());
    assert_eq!(spiffe_id_of(renewed.leaf()).unwrap(), client_id());
    mesh.bound.shutdown().await;
}

#[tokio::test]
async fn a_csr_for_someone_else_is_refused_with_the_reason() {
    let (_config, mesh) = mesh().await;
    let mut ca = mesh.ca_client(Some(&mesh.other_token)).await;
    let status = refusal(ca.fetch_identity(&client_id(), None).await.unwrap_err());
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains(
            "requests identity spiffe://cluster.local/ns/default/sa/client but the caller is authenticated as spiffe://cluster.local/ns/default/sa/other"
        ),
        "{}",
        status.message()
    );
    // Too long a lifetime: above --max-cert-ttl (90d by default).
    let mut ca = mesh.ca_client(Some(&mesh.client_token)).await;
    let status = refusal(
        ca.fetch_identity(&client_id(), Some(Duration::from_secs(91 * 86_400)))
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("maximum 90d"), "{status:?}");
    mesh.bound.shutdown().await;
}

#[tokio::test]
async fn malformed_csrs_and_missing_tokens_are_refused() {
    let (_config, mesh) = mesh().await;
    let mut ca = mesh.ca_client(Some(&mesh.client_token)).await;
    let status = refusal(
        ca.create_certificate(
            "-----BEGIN CERTIFICATE REQUEST-----\nnot base64!\n-----END CERTIFICATE REQUEST-----\n"
                .into(),
            None,
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("malformed CSR"), "{status:?}");
    let status = refusal(
        ca.create_certificate("hello".into(), None)
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let mut anonymous = mesh.ca_client(None).await;
    let status = refusal(
        anonymous
            .fetch_identity(&client_id(), None)
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("no credentials"), "{status:?}");

    let mut unknown = mesh.ca_client(Some("not-a-known-token")).await;
    let status = refusal(
        unknown
            .fetch_identity(&client_id(), None)
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("not known"), "{status:?}");
    mesh.bound.shutdown().await;
}

#[tokio::test]
async fn a_csr_made_by_openssl_req_is_signed_and_openssl_verifies_the_result() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED: no openssl on this machine");
        return;
    }
    let (_config, mesh) = mesh().await;
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("key.pem");
    let csr = work.path().join("csr.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", "/O=cluster.local"])
        .args([
            "-addext",
            "subjectAltName=URI:spiffe://cluster.local/ns/default/sa/client",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ca = mesh.ca_client(Some(&mesh.client_token)).await;
    let chain = ca
        .create_certificate(std::fs::read_to_string(&csr).unwrap(), None)
        .await
        .expect("openssl's CSR is signed");
    let leaf_pem = &chain[0];
    let leaf = mesh_ca::bundle::certificates_from_pem("leaf", leaf_pem).unwrap();
    assert_eq!(spiffe_id_of(&leaf[0]).unwrap(), client_id());
    let leaf_file = work.path().join("leaf.pem");
    std::fs::write(&leaf_file, leaf_pem).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(mesh.root_file())
        .arg(&leaf_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    mesh.bound.shutdown().await;
}

#[tokio::test]
async fn the_serving_certificate_is_istiod_and_is_renewed_at_half_life() {
    let config = tempfile::tempdir().unwrap();
    let mesh = start_secure(config.path(), |c| {
        // Renewed 5s after start: long enough for the first handshake to
        // see the first certificate on a loaded machine.
        c.serving_cert_ttl = Some(Duration::from_secs(10));
    })
    .await;
    let first = mesh.bound.serving_identity().unwrap();
    assert_eq!(first.identity, istiod_id());
    // What a new handshake presents (verified by SPIFFE ID in the client config).
    let presented = || async {
        let addr = mesh.secure_addr();
        let config = mesh_ca::tls::client_config(
            &mesh.roots(),
            None,
            mesh_ca::tls::ExpectedServer::SpiffeIds(vec![istiod_id()]),
        )
        .unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(
                rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
                tcp,
            )
            .await?;
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        anyhow::Ok(leaf)
    };
    assert_eq!(&presented().await.unwrap(), first.leaf());
    let renewed = wait_until(Duration::from_secs(30), async || {
        let leaf = presented().await?;
        anyhow::ensure!(&leaf != first.leaf(), "still the first certificate");
        Ok(leaf)
    })
    .await
    .expect("a renewed serving certificate");
    assert_eq!(spiffe_id_of(&renewed).unwrap(), istiod_id());
    mesh.bound.shutdown().await;
}
