//! The state directory of the running local mesh: `state.json` (ports, pids, addresses), the
//! control plane's config dir, bootstraps and logs. `$MESH_STATE_DIR`, else
//! `$XDG_STATE_HOME/mesh`, else `~/.local/state/mesh`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::process;

/// Environment variable naming the state directory.
pub const STATE_DIR_ENV: &str = "MESH_STATE_DIR";
/// The file describing the running mesh.
pub const STATE_FILE: &str = "state.json";

/// The state directory to use.
pub fn state_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os(STATE_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("mesh"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/mesh")),
        None => bail!("no state directory: set {STATE_DIR_ENV} (or HOME)"),
    }
}

/// What runs where. Written once every proxy is SYNCED; `status -o json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeshState {
    pub state_dir: PathBuf,
    /// The control plane's (watched) config directory: `meshctl apply -f` writes here.
    pub config_dir: PathBuf,
    pub log_dir: PathBuf,
    /// `built-in demo` or the directory `up` was given.
    pub source: String,
    /// `mesh-proxy` or `envoy`.
    pub proxy: String,
    /// pid of the `meshctl up` that supervises the mesh (restarts what exits): the one in
    /// the foreground, or the one `--detach` left in the background.
    pub supervisor_pid: Option<u32>,
    pub control_plane: ControlPlane,
    /// The mesh's CA and trust domain (absent in a state file written before mTLS).
    #[serde(default)]
    pub identity: Option<IdentityState>,
    pub gateway: GatewayProxy,
    pub sidecars: Vec<Sidecar>,
    /// Every process, in start order.
    pub processes: Vec<Process>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlPlane {
    pub xds_address: SocketAddr,
    pub debug_address: SocketAddr,
    /// xDS and the CSR service over TLS (Istio's 15012).
    #[serde(default)]
    pub secure_xds_address: Option<SocketAddr>,
}

/// Where the mesh's identities come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityState {
    pub trust_domain: String,
    /// The CA in Istio's layout (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`,
    /// `cert-chain.pem`) and the control plane's token file `tokens`.
    pub ca_dir: PathBuf,
    /// The trust bundle: `curl --cacert`, `openssl verify -CAfile` take it.
    pub root_cert: PathBuf,
    /// One `NAME.token` per proxy.
    pub tokens_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayProxy {
    pub name: String,
    pub namespace: String,
    pub node_id: String,
    pub admin_address: SocketAddr,
    /// Gateway server port -> local address.
    pub ports: BTreeMap<u32, SocketAddr>,
    /// `http://ADDR` of the port-80 server.
    pub url: String,
    /// `HOST:PORT` of the port-80 server (Istio's `GATEWAY_URL`).
    #[serde(default)]
    pub address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sidecar {
    pub workload: String,
    pub namespace: String,
    pub node_id: String,
    pub admin_address: SocketAddr,
    /// The HTTP proxy listener: `http_proxy=http://ADDR`.
    pub outbound_address: SocketAddr,
    pub inbound_address: SocketAddr,
    pub app_address: SocketAddr,
    /// `NAME.NAMESPACE:PORT` of the service the workload serves.
    pub service: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Process {
    /// `control-plane`, `proxy/NAME`, `app/NAME`.
    pub name: String,
    pub pid: u32,
    /// The program's path (its file name identifies the pid).
    pub program: String,
    pub log: PathBuf,
    /// How many times the supervisor restarted it after it exited.
    #[serde(default)]
    pub restarts: u32,
}

impl MeshState {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// The running mesh of `dir`, if any was recorded.
    pub fn load(dir: &Path) -> anyhow::Result<Option<MeshState>> {
        let path = Self::path(dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("{}: not a mesh state file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn save(&self) -> anyhow::Result<()> {
        let path = Self::path(&self.state_dir);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// Processes still running.
    pub fn running(&self) -> Vec<&Process> {
        self.processes
            .iter()
            .filter(|p| process::is_running(p.pid, &p.program))
            .collect()
    }
}
