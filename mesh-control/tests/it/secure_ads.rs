//! ADS over TLS on the secure port with a real tonic client: configuration as
//! on the plaintext port, plus `default`/`ROOTCA` secrets for the stream's
//! own identity only; refusals of unauthenticated, mismatched and plaintext
//! secret subscriptions; a renewed certificate pushed at half life.

use crate::ads_support;

use std::time::Duration;

use crate::ads_support::{
    AdsClient, NODE_ID, WAIT, config_dir, get_json, node, sync_all, syncz_of,
};
use crate::secure_support::{SecureMesh, client_id, start_secure};
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use mesh_ca::tls::spiffe_id_of;
use mesh_test_util::wait_until;
use prost::Message;
use tonic::Code;

const SDS: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

fn secrets(r: &DiscoveryResponse) -> Vec<Secret> {
    r.resources
        .iter()
        .map(|a| {
            assert_eq!(a.type_url, SDS);
            Secret::decode(a.value.as_slice()).expect("Secret decodes")
        })
        .collect()
}

fn inline(d: &Option<envoy_types::pb::envoy::config::core::v3::DataSource>) -> String {
    match d.as_ref().and_then(|d| d.specifier.clone()) {
        Some(Specifier::InlineString(s)) => s,
        other => panic!("expected an inline string, got {other:?}"),
    }
}

/// The `default` secret's chain and key, checked to belong together.
fn certificate(s: &Secret) -> (Vec<rustls::pki_types::CertificateDer<'static>>, String) {
    let Some(secret::Type::TlsCertificate(tls)) = &s.r#type else {
        panic!("{} is not a certificate: {s:?}", s.name);
    };
    let chain_pem = inline(&tls.certificate_chain);
    let key_pem = inline(&tls.private_key);
    let chain = mesh_ca::bundle::certificates_from_pem("chain", &chain_pem).unwrap();
    let key = pem::parse(&key_pem).unwrap();
    assert_eq!(key.tag(), "PRIVATE KEY");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.contents().to_vec().into());
    rustls::sign::CertifiedKey::from_der(
        chain.clone(),
        key,
        &rustls::crypto::ring::default_provider(),
    )
    .expect("the key belongs to the certificate");
    (chain, key_pem)
}

async fn secure_client(mesh: &SecureMesh, token: Option<&str>) -> AdsClient {
    let channel = mesh.channel(None).await.expect("TLS to the secure port");
    AdsClient::over(channel, node(NODE_ID), token)
        .await
        .expect("ADS stream opens")
}

#[tokio::test]
async fn ads_over_tls_serves_config_and_the_streams_own_secrets() {
    let dir = config_dir();
    let mesh = start_secure(dir.path(), |_| {}).await;
    let mut ads = secure_client(&mesh, Some(&mesh.client_token)).await;
    let synced = sync_all(&mut ads).await;
    assert!(!synced.cds.resources.is_empty());
    assert!(!synced.lds.resources.is_empty());

    // Envoy's subscription, plus a name that is not served.
    let asked = names(&["ROOTCA", "default", "spiffe://elsewhere"]);
    ads.subscribe(SDS, &asked).await;
    let r = ads.recv_type(SDS).await;
    let got = secrets(&r);
    assert_eq!(
        got.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        vec!["ROOTCA", "default"],
        "unknown names are left out"
    );
    let (chain, _) = certificate(&got[1]);
    assert_eq!(spiffe_id_of(&chain[0]).unwrap(), client_id());
    let Some(secret::Type::ValidationContext(v)) = &got[0].r#type else {
        panic!("ROOTCA is a validation context");
    };
    assert_eq!(
        inline(&v.trusted_ca),
        std::fs::read_to_string(mesh.root_file()).unwrap()
    );
    // The chain verifies against that root, as a peer would check it.
    let roots = mesh.roots().root_store().unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.into(),
        rustls::crypto::ring::default_provider().into(),
    )
    .build()
    .unwrap();
    verifier
        .verify_client_cert(&chain[0], &chain[1..], rustls::pki_types::UnixTime::now())
        .expect("issued by the mesh root");
    ads.ack(&r, &asked).await;

    let entry = wait_until(WAIT, async || {
        let p = syncz_of(&mesh.bound, NODE_ID).await.ok_or("not in syncz")?;
        if p["types"]["sds"]["status"] != "SYNCED" {
            return Err(format!("sds: {}", p["types"]["sds"]));
        }
        Ok(p)
    })
    .await
    .unwrap();
    assert_eq!(entry["port"], "secure");
    assert_eq!(entry["identity"], client_id().to_string());
    assert_eq!(entry["types"]["sds"]["sent_resources"], 2);
    for t in ["cds", "eds", "lds", "rds"] {
        assert_eq!(entry["types"][t]["status"], "SYNCED", "{t}: {entry:#}");
    }

    // A second stream of the same workload shares the cached certificate,
    // and the plaintext port's clients show beside the secure ones.
    let mut again = secure_client(&mesh, Some(&mesh.client_token)).await;
    again.subscribe(SDS, &names(&["default"])).await;
    let (chain2, _) = certificate(&secrets(&again.recv_type(SDS).await)[0]);
    assert_eq!(chain2[0], chain[0]);
    let mut plain = AdsClient::connect(mesh.bound.xds_address(), node(NODE_ID)).await;
    plain.subscribe(ads_support::CDS, &[]).await;
    plain.recv_type(ads_support::CDS).await;
    let ports = wait_until(WAIT, async || {
        let all = get_json(&mesh.bound, "/debug/syncz").await;
        let mut ports: Vec<String> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_str().unwrap_or_default().to_string())
            .collect();
        ports.sort();
        if ports.len() == 3 {
            Ok(ports)
        } else {
            Err(ports)
        }
    })
    .await
    .unwrap();
    assert_eq!(ports, vec!["plaintext", "secure", "secure"]);
    let metrics = mesh_test_util::HttpClient::http1()
        .get(&format!("http://{}/metrics", mesh.bound.debug_address()))
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains("mesh_sds_certificates_issued_total 1"),
        "{metrics}"
    );
    mesh.bound.shutdown().await;
}

#[tokio::test]
async fn secret_subscriptions_without_the_right_are_refused_with_the_reason() {
    let dir = config_dir();
    let mesh = start_secure(dir.path(), |_| {}).await;

    // Plaintext port.
    let mut plain = AdsClient::connect(mesh.bound.xds_address(), node(NODE_ID)).await;
    plain.subscribe(SDS, &names(&["default"])).await;
    let status = plain.recv_error().await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("only on the secure xDS port"),
        "{status:?}"
    );

    // TLS without credentials: configuration yes, secrets no.
    let mut anonymous = secure_client(&mesh, None).await;
    anonymous.subscribe(ads_support::CDS, &[]).await;
    anonymous.recv_type(ads_support::CDS).await;
    anonymous.subscribe(SDS, &names(&["default"])).await;
    let status = anonymous.recv_error().await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("no credentials"), "{status:?}");

    // An unknown token: the whole stream is refused, configuration too, so
    // a proxy with a wrong token learns it at once.
    let channel = mesh.channel(None).await.expect("TLS to the secure port");
    let status = match AdsClient::over(channel, node(NODE_ID), Some("nope")).await {
        Err(status) => status,
        Ok(mut unknown) => {
            unknown.subscribe(ads_support::CDS, &[]).await;
            unknown.recv_error().await
        }
    };
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("not known"), "{status:?}");

    // Another workload's token on this node: its secrets are not this node's.
    let mut other = secure_client(&mesh, Some(&mesh.other_token)).await;
    other.subscribe(SDS, &names(&["default"])).await;
    let status = other.recv_error().await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("authenticated as spiffe://cluster.local/ns/default/sa/other"),
        "{status:?}"
    );
    let metrics = mesh_test_util::HttpClient::http1()
        .get(&format!("http://{}/metrics", mesh.bound.debug_address()))
        .await
        .unwrap()
        .text();
    // Three secret refusals; the unknown token was refused before asking.
    assert!(metrics.contains("mesh_sds_refusals_total 3"), "{metrics}");
    mesh.bound.shutdown().await;
}

#[tokio::test]
async fn a_renewed_certificate_is_pushed_at_half_life() {
    let dir = config_dir();
    let mesh = start_secure(dir.path(), |c| {
        c.sds_cert_ttl = Some(Duration::from_secs(4));
    })
    .await;
    let mut ads = secure_client(&mesh, Some(&mesh.client_token)).await;
    let asked = names(&["default"]);
    ads.subscribe(SDS, &asked).await;
    let first = ads.recv_type(SDS).await;
    ads.ack(&first, &asked).await;
    let (chain1, key1) = certificate(&secrets(&first)[0]);
    // Pushed without asking, some seconds later.
    let second = ads.recv_type(SDS).await;
    assert_ne!(second.version_info, first.version_info);
    let (chain2, key2) = certificate(&secrets(&second)[0]);
    assert_ne!(chain2[0], chain1[0]);
    assert_ne!(key2, key1, "a new key with every certificate");
    assert_eq!(spiffe_id_of(&chain2[0]).unwrap(), client_id());
    ads.ack(&second, &asked).await;
    mesh.bound.shutdown().await;
}

#[tokio::test]
async fn the_secure_port_can_be_turned_off() {
    let dir = config_dir();
    let config = mesh_control::ServerConfig {
        secure_xds_address: None,
        ..mesh_control::ServerConfig::ephemeral(dir.path())
    };
    let bound = mesh_control::build(config).await.unwrap();
    assert_eq!(bound.secure_xds_address(), None);
    assert!(bound.certificate_authority().is_none());
    let mut plain = AdsClient::connect(bound.xds_address(), node(NODE_ID)).await;
    plain.subscribe(ads_support::CDS, &[]).await;
    plain.recv_type(ads_support::CDS).await;
    bound.shutdown().await;
}

#[tokio::test]
async fn a_mesh_client_certificate_authenticates_a_stream_without_a_token() {
    let dir = config_dir();
    let mesh = start_secure(dir.path(), |_| {}).await;
    // What a proxy holds after its first CSR: a certificate of the mesh CA.
    let held = mesh
        .bound
        .certificate_authority()
        .unwrap()
        .issue_identity(&client_id(), &[], None)
        .unwrap();
    let channel = mesh.channel(Some(&held)).await.unwrap();
    let mut ads = AdsClient::over(channel, node(NODE_ID), None).await.unwrap();
    let asked = names(&["default"]);
    ads.subscribe(SDS, &asked).await;
    let (chain, _) = certificate(&secrets(&ads.recv_type(SDS).await)[0]);
    assert_eq!(spiffe_id_of(&chain[0]).unwrap(), client_id());
    assert_ne!(
        chain[0],
        *held.leaf(),
        "a certificate of its own, not the one presented"
    );
    let entry = wait_until(WAIT, async || {
        syncz_of(&mesh.bound, NODE_ID).await.ok_or("not in syncz")
    })
    .await
    .unwrap();
    assert_eq!(entry["identity"], client_id().to_string());
    mesh.bound.shutdown().await;
}
