//! Rotating the workload certificate (`set_local("default", ..)`, what the
//! identity manager does) under steady traffic: no request fails, and new
//! handshakes present the new certificate while established connections
//! carry on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::tls_support::*;
use http::{Request, StatusCode};
use mesh_proxy::model::{TlsCertificateSource, TlsSecret};
use mesh_test_util::{HttpClient, HttpUpstream, send, wait_until};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

fn certificate(p: &Pem) -> TlsSecret {
    TlsSecret::Certificate(TlsCertificateSource::InlinePem {
        cert_chain: p.chain.clone(),
        private_key: p.key.clone(),
    })
}

/// The leaf a fresh TLS handshake with `addr` is shown, presenting `client`.
async fn served_leaf(addr: std::net::SocketAddr, client: &Pem) -> Vec<u8> {
    let chain: Vec<CertificateDer<'static>> =
        mesh_ca::bundle::certificates_from_pem("client", &client.chain).unwrap();
    let key_der = pem::parse(&client.key).unwrap().into_contents();
    let key = PrivateKeyDer::Pkcs8(key_der.into());
    let mut roots = rustls::RootCertStore::empty();
    for r in mesh_ca::bundle::certificates_from_pem("roots", &client.roots).unwrap() {
        roots.add(r).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(mesh_ca::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(
            mesh_ca::tls::crypto_provider().signature_verification_algorithms,
        )))
        .with_client_auth_cert(chain, key)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

/// Only to read what the server presents; verification is the proxy's job
/// and is tested elsewhere.
#[derive(Debug)]
struct AcceptAny(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_traffic_drops_nothing() {
    let ca = ca("cluster.local");
    let client_v1 = issue(&ca, "default", "client");
    let client_v2 = issue(&ca, "default", "client");
    let server_v1 = issue(&ca, "default", "server");
    let server_v2 = issue(&ca, "default", "server");
    let app = HttpUpstream::start("app").await.unwrap();
    let server = start(&server_bootstrap(
        Mode::Strict,
        app.addr(),
        &secrets(&server_v1, &server_v1.roots),
        &[&client_v1.uri],
    ))
    .await;
    let inbound = server.listener("inbound").unwrap();
    // Upstream connections carry 5 requests each, so new handshakes keep
    // happening under the traffic.
    let transport = tls_transport(&[&server_v1.uri])
        + r#"
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options: { max_requests_per_connection: 5 }
        explicit_http_config: { http_protocol_options: {} }"#;
    let client = start(&client_bootstrap(
        &[(inbound, true)],
        &transport,
        &secrets(&client_v1, &client_v1.roots),
    ))
    .await;
    let outbound = client.listener("outbound").unwrap();
    assert_eq!(served_leaf(inbound, &client_v1).await, server_v1.leaf_der);

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..3 {
        let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let keep_alive = HttpClient::http1();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                // Mostly a kept-alive connection, sometimes a new one.
                let resp = if (i + worker).is_multiple_of(4) {
                    send(
                        outbound,
                        Request::get("/r")
                            .header("host", "server")
                            .body("")
                            .unwrap(),
                    )
                    .await
                } else {
                    keep_alive.get(&format!("http://{outbound}/r")).await
                };
                match resp {
                    Ok(r) if r.status == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => {
                        eprintln!("failed: {} {}", r.status, r.text());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        eprintln!("failed: {e:#}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let at_least = |n: u64| {
        let ok = ok.clone();
        async move {
            wait_until(Duration::from_secs(30), async || {
                ok.load(Ordering::Relaxed) >= n
            })
            .await
            .unwrap()
        }
    };
    at_least(30).await;
    server
        .proxy
        .secrets()
        .set_local("default", certificate(&server_v2));
    client
        .proxy
        .secrets()
        .set_local("default", certificate(&client_v2));
    let before = ok.load(Ordering::Relaxed);
    at_least(before + 60).await;
    // New handshakes present the new certificates: the server's to a new
    // client, the client sidecar's to the server (XFCC's Hash is its leaf).
    assert_eq!(served_leaf(inbound, &client_v2).await, server_v2.leaf_der);
    let v2_hash = format!("Hash={}", sha256_hex(&client_v2.leaf_der));
    wait_until(Duration::from_secs(30), async || {
        app.last_request()
            .and_then(|r| {
                r.header("x-forwarded-client-cert")
                    .map(|x| x.contains(&v2_hash))
            })
            .unwrap_or(false)
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during rotation"
    );
    assert!(
        stat(&server, &format!("listener.{inbound}.ssl.handshake")) >= 2,
        "{}",
        server.proxy.stats().render_text()
    );
}
