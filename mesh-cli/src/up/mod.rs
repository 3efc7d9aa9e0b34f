//! The local mesh: `meshctl up` starts the control plane, one sidecar per workload of a mesh
//! directory, an ingress gateway and the workloads, every one on its own 127.0.0.1 ports, and
//! waits until every proxy is SYNCED; `down`, `status`, `apply` and `traffic` act on the mesh
//! recorded in the state directory.
//!
//! ```text
//!  meshctl up DIR ──> STATE/config/ (DIR's Istio YAML + generated ServiceEntry/WorkloadEntry)
//!        │        ──> STATE/ca/ (the mesh CA, kept) + a token per proxy (new each run)
//!        │                 │ watched by
//!        │            mesh-control ──ADS──> gateway + one sidecar per workload (bootstrap.json)
//!        │             (CA + SDS on its secure port) <──CSR/ADS over TLS, bearer token──┘
//!        └── starts: workload app on {port} <── its sidecar's inbound listener
//! ```

mod apply;
pub mod bootstrap;
pub mod cli;
pub mod demo;
mod down;
pub mod identity;
pub mod invocation;
pub mod meshdir;
pub mod names;
pub mod process;
mod run;
pub mod state;
mod status;
pub mod supervise;
pub mod traffic;
pub mod workloads;

pub use apply::{ApplyOptions, apply};
pub use down::down;
pub use run::up;
pub use status::{next_steps, render_status, status, summarize_syncz, sync_statuses};

use std::path::PathBuf;
use std::time::Duration;

/// How long `up` waits for every proxy to be SYNCED by default.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped process gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Name of the generated registry file in the config dir.
pub const GENERATED_DIR: &str = "_generated";

/// Which proxy runs the bootstraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyImpl {
    /// The mesh's own `mesh-proxy`.
    Mesh,
    /// The real Envoy (same bootstrap), e.g. to compare.
    Envoy,
}

impl ProxyImpl {
    pub fn label(self) -> &'static str {
        match self {
            ProxyImpl::Mesh => "mesh-proxy",
            ProxyImpl::Envoy => "envoy",
        }
    }
}

/// `meshctl up` options.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// `None`: the built-in demo.
    pub dir: Option<PathBuf>,
    pub detach: bool,
    pub proxy: ProxyImpl,
    pub timeout: Duration,
    /// Trust domain of the mesh's SPIFFE identities.
    pub trust_domain: String,
    /// Lifetime of workload certificates; `None`: the CA's default.
    pub workload_cert_ttl: Option<Duration>,
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("{}", msg.as_ref());
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    use super::meshdir::{GATEWAY_NAME, GATEWAY_NAMESPACE};
    use super::state::{ControlPlane, GatewayProxy, IdentityState, MeshState};
    use super::*;

    #[test]
    fn syncz_summary_follows_the_types() {
        let v = serde_json::json!([
            {"proxy": "a", "types": {
                "cds": {"status": "SYNCED"}, "lds": {"status": "SYNCED"},
                "eds": {"status": "SYNCED"}, "rds": {"status": "NOT SENT", "requested": []}}},
            {"proxy": "b", "types": {
                "cds": {"status": "SYNCED"}, "lds": {"status": "STALE"},
                "eds": {"status": "SYNCED"}, "rds": {"status": "SYNCED"}}},
            {"proxy": "c", "types": {
                "cds": {"status": "SYNCED"}, "lds": {"status": "SYNCED"},
                "eds": {"status": "NOT SENT", "requested": ["outbound|5000||h"]}, "rds": {"status": "SYNCED"}}},
        ]);
        let m = summarize_syncz(&v);
        assert_eq!(m["a"], "SYNCED");
        assert_eq!(m["b"], "LDS STALE");
        assert_eq!(m["c"], "EDS NOT SENT");
    }

    #[test]
    fn status_shows_the_secure_port_and_the_ca() {
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let mut state = MeshState {
            state_dir: "/s".into(),
            config_dir: "/s/config".into(),
            log_dir: "/s/logs".into(),
            source: "built-in demo".into(),
            proxy: "mesh-proxy".into(),
            supervisor_pid: None,
            control_plane: ControlPlane {
                xds_address: a(1),
                debug_address: a(2),
                secure_xds_address: Some(a(3)),
            },
            identity: Some(IdentityState {
                trust_domain: "cluster.local".into(),
                ca_dir: "/s/ca".into(),
                root_cert: "/s/ca/root-cert.pem".into(),
                tokens_dir: "/s/tokens".into(),
            }),
            gateway: GatewayProxy {
                name: GATEWAY_NAME.into(),
                namespace: GATEWAY_NAMESPACE.into(),
                node_id: "router~x".into(),
                admin_address: a(4),
                ports: BTreeMap::from([(80, a(5))]),
                url: "http://127.0.0.1:5".into(),
                address: "127.0.0.1:5".into(),
            },
            sidecars: vec![],
            processes: vec![],
        };
        let out = render_status(&state, None);
        assert!(
            out.contains("xds 127.0.0.1:1 secure 127.0.0.1:3 debug 127.0.0.1:2"),
            "{out}"
        );
        assert!(
            out.contains("CA: /s/ca (trust domain cluster.local; root /s/ca/root-cert.pem)"),
            "{out}"
        );
        // A state file of a mesh started before mTLS still loads and shows.
        let mut v = serde_json::to_value(&state).unwrap();
        v.as_object_mut().unwrap().remove("identity");
        v["control_plane"]
            .as_object_mut()
            .unwrap()
            .remove("secure_xds_address");
        state = serde_json::from_value(v).unwrap();
        let out = render_status(&state, None);
        assert!(out.contains("xds 127.0.0.1:1 debug 127.0.0.1:2"), "{out}");
        assert!(!out.contains("CA:"), "{out}");
    }

    #[test]
    fn next_steps_name_the_command_and_pipe_nothing_into_down() {
        let state: MeshState = serde_json::from_value(serde_json::json!({
            "state_dir": "/s", "config_dir": "/s/config", "log_dir": "/s/logs",
            "source": "demo", "proxy": "mesh-proxy", "supervisor_pid": null,
            "control_plane": {"xds_address": "127.0.0.1:1", "debug_address": "127.0.0.1:2"},
            "gateway": {"name": "istio-ingressgateway", "namespace": "istio-system",
                        "node_id": "router~x", "admin_address": "127.0.0.1:4",
                        "ports": {"80": "127.0.0.1:5"}, "url": "http://127.0.0.1:5"},
            "sidecars": [], "processes": []
        }))
        .unwrap();
        assert_eq!(state.gateway.address, "", "an older state file still loads");
        let text = next_steps(&state, "cargo run -q -p mesh-cli --");
        assert!(
            text.contains("  cargo run -q -p mesh-cli -- traffic -n 100 "),
            "{text}"
        );
        assert!(
            text.contains("  cargo run -q -p mesh-cli -- down "),
            "{text}"
        );
        assert!(!text.contains('|'), "{text}");
    }
}
