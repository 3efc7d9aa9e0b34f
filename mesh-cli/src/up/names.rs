//! One name per proxy in every command: whatever `proxy-status` prints (`POD.NAMESPACE`:
//! `istio-ingressgateway.istio-system`, `helloworld-safe.default`) names the same proxy in
//! `proxy-config`, `explain` and `traffic --via`, and so do the short names (`gateway`,
//! `helloworld-safe`), Istio's `deploy/NAME[.NAMESPACE]` and `pod/NAME[.NAMESPACE]` forms and
//! the full node id.

use std::net::SocketAddr;

use super::state::{GatewayProxy, MeshState, Sidecar};

/// The short name of the ingress gateway.
pub const GATEWAY_SHORT_NAME: &str = "gateway";

/// A proxy of the local mesh.
#[derive(Debug, Clone, Copy)]
pub enum ProxyRef<'a> {
    Gateway(&'a GatewayProxy),
    Sidecar(&'a Sidecar),
}

impl ProxyRef<'_> {
    /// `NAME.NAMESPACE`, as `proxy-status` prints it.
    pub fn name(&self) -> String {
        match self {
            ProxyRef::Gateway(g) => format!("{}.{}", g.name, g.namespace),
            ProxyRef::Sidecar(s) => format!("{}.{}", s.workload, s.namespace),
        }
    }

    pub fn node_id(&self) -> &str {
        match self {
            ProxyRef::Gateway(g) => &g.node_id,
            ProxyRef::Sidecar(s) => &s.node_id,
        }
    }

    pub fn admin_address(&self) -> SocketAddr {
        match self {
            ProxyRef::Gateway(g) => g.admin_address,
            ProxyRef::Sidecar(s) => s.admin_address,
        }
    }

    fn matches(&self, name: &str, namespace: Option<&str>) -> bool {
        let (own, ns) = match self {
            ProxyRef::Gateway(g) => (g.name.as_str(), g.namespace.as_str()),
            ProxyRef::Sidecar(s) => (s.workload.as_str(), s.namespace.as_str()),
        };
        let short = matches!(self, ProxyRef::Gateway(_)) && name == GATEWAY_SHORT_NAME;
        (name == own || short) && namespace.is_none_or(|n| n == ns)
    }
}

/// Why a name names no proxy: the names there are.
#[derive(Debug, thiserror::Error)]
#[error(
    "no proxy {name:?} in the local mesh; proxies: {known} (each also by its short name, as deploy/NAME.NAMESPACE or by node id)"
)]
pub struct UnknownProxy {
    pub name: String,
    pub known: String,
}

/// Every proxy of the mesh, the gateway first.
pub fn proxies(state: &MeshState) -> Vec<ProxyRef<'_>> {
    std::iter::once(ProxyRef::Gateway(&state.gateway))
        .chain(state.sidecars.iter().map(ProxyRef::Sidecar))
        .collect()
}

/// The proxy `name` names.
pub fn resolve<'a>(state: &'a MeshState, name: &str) -> Result<ProxyRef<'a>, UnknownProxy> {
    let all = proxies(state);
    if let Some(p) = all.iter().find(|p| p.node_id() == name) {
        return Ok(*p);
    }
    // Istio's resource prefixes: `deploy/NAME.NS`, `deployment/NAME`, `pod/NAME.NS`.
    let bare = ["deploy/", "deployment/", "deployments/", "pod/", "pods/"]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .unwrap_or(name);
    let exact = all.iter().find(|p| p.matches(bare, None));
    let qualified = bare
        .rsplit_once('.')
        .and_then(|(n, ns)| all.iter().find(|p| p.matches(n, Some(ns))));
    exact.or(qualified).copied().ok_or_else(|| UnknownProxy {
        name: name.to_string(),
        known: all
            .iter()
            .map(|p| match p {
                ProxyRef::Gateway(_) => format!("{} ({GATEWAY_SHORT_NAME})", p.name()),
                ProxyRef::Sidecar(_) => p.name(),
            })
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::up::state::ControlPlane;
    use std::collections::BTreeMap;

    fn state() -> MeshState {
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let sidecar = |w: &str, admin: u16| Sidecar {
            workload: w.into(),
            namespace: "default".into(),
            node_id: format!("sidecar~127.0.0.1~{w}.default~default.svc.cluster.local"),
            admin_address: a(admin),
            outbound_address: a(admin + 1),
            inbound_address: a(admin + 2),
            app_address: a(admin + 3),
            service: None,
        };
        MeshState {
            state_dir: "/s".into(),
            config_dir: "/s/config".into(),
            log_dir: "/s/logs".into(),
            source: "demo".into(),
            proxy: "mesh-proxy".into(),
            supervisor_pid: None,
            control_plane: ControlPlane {
                xds_address: a(1),
                debug_address: a(2),
                secure_xds_address: None,
            },
            identity: None,
            gateway: GatewayProxy {
                name: "istio-ingressgateway".into(),
                namespace: "istio-system".into(),
                node_id: "router~127.0.0.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local".into(),
                admin_address: a(100),
                ports: BTreeMap::new(),
                url: String::new(),
                address: String::new(),
            },
            sidecars: vec![sidecar("helloworld-safe", 200), sidecar("helloworld-risky", 300)],
            processes: vec![],
        }
    }

    #[test]
    fn every_form_of_a_name_finds_the_proxy() {
        let s = state();
        for name in [
            "gateway",
            "istio-ingressgateway",
            "istio-ingressgateway.istio-system",
            "deploy/istio-ingressgateway.istio-system",
            "deploy/istio-ingressgateway",
            "pod/istio-ingressgateway.istio-system",
            "router~127.0.0.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local",
        ] {
            let p = resolve(&s, name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(p.admin_address().port(), 100, "{name}");
        }
        for name in [
            "helloworld-risky",
            "helloworld-risky.default",
            "deploy/helloworld-risky.default",
            "deployment/helloworld-risky",
            "sidecar~127.0.0.1~helloworld-risky.default~default.svc.cluster.local",
        ] {
            let p = resolve(&s, name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(p.name(), "helloworld-risky.default", "{name}");
        }
        let e = resolve(&s, "helloworld-risky.other")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("istio-ingressgateway.istio-system (gateway), helloworld-safe.default, helloworld-risky.default"),
            "{e}"
        );
        assert!(resolve(&s, "gateway.default").is_err());
    }
}
