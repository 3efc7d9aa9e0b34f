//! The Istio YAML loader and everything that runs on what it loads: the
//! analyzer (`meshctl analyze`, the control plane's validation), the
//! control plane's translation into xDS for a sidecar and a gateway, and the
//! proxy's compile of that xDS. A user's file goes this whole way.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;

use mesh_control::node::{LocalPorts, ProxyKind, ProxyNode};
use mesh_control::translate::{MeshState, XdsResources, translate};

/// A YAML or JSON stream, as `meshctl analyze -` or a watched file gives it.
pub fn loader(data: &[u8]) {
    let _ = run(data);
}

/// What each step made of `data`: the load errors, and per proxy whether
/// its xDS compiled (with how many listeners).
fn run(data: &[u8]) -> (usize, Vec<Result<usize, String>>) {
    let config = mesh_api::load_reader("fuzz.yaml", data);
    let errors = config.errors.len();
    for error in &config.errors {
        // Every message is rendered for a user: formatting must not panic either.
        let _ = error.to_string();
    }
    let messages = mesh_api::analyze(&config);
    let _ = mesh_api::analysis::has_errors(&messages);
    let state = MeshState::new(config);
    let compiled = nodes()
        .iter()
        .map(|node| {
            let xds = translate(&state, node);
            // The proxy may refuse what it is sent (a NACK); it may not panic.
            compile(&xds)
                .map(|snapshot| snapshot.listeners.len())
                .map_err(|e| e.to_string())
        })
        .collect();
    (errors, compiled)
}

pub(crate) fn compile(
    xds: &XdsResources,
) -> Result<mesh_proxy::model::Snapshot, mesh_proxy::compile::CompileError> {
    let listeners: Vec<_> = xds.listeners.values().cloned().collect();
    let routes: Vec<_> = xds.routes.values().cloned().collect();
    let clusters: Vec<_> = xds.clusters.values().cloned().collect();
    let endpoints: Vec<_> = xds.endpoints.values().cloned().collect();
    mesh_proxy::compile::compile_snapshot(&listeners, &routes, &clusters, &endpoints)
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A local-mode sidecar in `default` and an ingress gateway in
/// `istio-system`, the two kinds of proxy the examples run.
pub(crate) fn nodes() -> &'static [ProxyNode] {
    static NODES: OnceLock<Vec<ProxyNode>> = OnceLock::new();
    NODES.get_or_init(|| {
        let mut sidecar = ProxyNode::sidecar("127.0.0.1", "helloworld-v1-1", "default");
        sidecar.labels = BTreeMap::from([
            ("app".to_string(), "helloworld".to_string()),
            ("version".to_string(), "v1".to_string()),
        ]);
        sidecar.local = Some(LocalPorts {
            outbound: Some(local(15001)),
            inbound: Some(local(15006)),
            app: Some(local(5000)),
            gateway_ports: BTreeMap::new(),
        });
        let mut gateway = ProxyNode::sidecar("127.0.0.1", "istio-ingressgateway-1", "istio-system");
        gateway.id =
            "router~127.0.0.1~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local"
                .into();
        gateway.kind = ProxyKind::Router;
        gateway.labels = BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]);
        gateway.local = Some(LocalPorts {
            outbound: None,
            inbound: None,
            app: None,
            gateway_ports: BTreeMap::from([(80, local(8080)), (443, local(8443))]),
        });
        vec![sidecar, gateway]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness reaches the end: the demo's seed loads cleanly, and both
    /// proxies accept what the control plane makes of it.
    #[test]
    fn the_demo_goes_all_the_way() {
        let seed = std::fs::read(crate::tests::seeds_dir().join("loader/demo.yaml")).unwrap();
        let (errors, compiled) = run(&seed);
        assert_eq!(errors, 0);
        assert_eq!(compiled.len(), 2);
        for listeners in compiled {
            assert!(listeners.unwrap() > 0);
        }
    }
}
