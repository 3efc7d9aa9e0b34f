//! The local mesh the soak runs against: `meshctl up --detach` with the built-in demo in a
//! temporary state directory, and `meshctl down` on every way out (success, error, panic,
//! Ctrl-C: the caller turns signals into a normal return, so [`LocalMesh`]'s `Drop` runs).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context as _, bail};

/// How long `meshctl up` may wait for every proxy to be SYNCED.
pub const UP_TIMEOUT_S: u64 = 120;

/// Runs `meshctl` against one state directory.
#[derive(Debug, Clone)]
pub struct Meshctl {
    pub program: PathBuf,
    pub bin_dir: PathBuf,
    pub state_dir: PathBuf,
}

impl Meshctl {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(args)
            .env("MESH_STATE_DIR", &self.state_dir)
            .env("MESH_BIN_DIR", &self.bin_dir);
        cmd
    }

    fn output(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.command(args)
            .output()
            .with_context(|| format!("run {} {}", self.program.display(), args.join(" ")))
    }

    fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "meshctl {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `meshctl apply -f FILE`, off the async threads.
    pub async fn apply(&self, file: &Path) -> anyhow::Result<String> {
        let mut cmd = tokio::process::Command::from(self.command(&["apply", "-f"]));
        cmd.arg(file).kill_on_drop(true);
        let out = cmd.output().await.context("run meshctl apply")?;
        if !out.status.success() {
            bail!(
                "meshctl apply -f {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn status(&self) -> anyhow::Result<MeshStatus> {
        let text = self.ok(&["status", "-o", "json"])?;
        serde_json::from_str(&text).with_context(|| format!("meshctl status -o json: {text}"))
    }
}

/// A running local mesh; dropping it stops it.
pub struct LocalMesh {
    pub ctl: Meshctl,
    stopped: bool,
    /// Removed after the mesh is down (fields drop after `Drop::drop`).
    _state: tempfile::TempDir,
}

impl LocalMesh {
    /// `meshctl up --detach` (the built-in demo), returning once every proxy is SYNCED. The
    /// guard exists before `up` runs, so a failed `up` still gets its `down`.
    pub fn up(meshctl: PathBuf, bin_dir: PathBuf) -> anyhow::Result<LocalMesh> {
        Self::up_with("soak", meshctl, bin_dir, &[])
    }

    /// [`LocalMesh::up`] for the tool `label` (`soak`, `chaos`: the prefix of its lines and
    /// of the state directory), with more arguments for `meshctl up`.
    pub fn up_with(
        label: &str,
        meshctl: PathBuf,
        bin_dir: PathBuf,
        up_args: &[&str],
    ) -> anyhow::Result<LocalMesh> {
        let state = tempfile::Builder::new()
            .prefix(&format!("mesh-{label}-"))
            .tempdir()
            .context("create a temporary state directory")?;
        let mesh = LocalMesh {
            ctl: Meshctl {
                program: meshctl,
                bin_dir,
                state_dir: state.path().to_path_buf(),
            },
            stopped: false,
            _state: state,
        };
        println!(
            "{label}: meshctl up --detach {}(MESH_STATE_DIR={}, MESH_BIN_DIR={})",
            up_args.iter().map(|a| format!("{a} ")).collect::<String>(),
            mesh.ctl.state_dir.display(),
            mesh.ctl.bin_dir.display()
        );
        let timeout = UP_TIMEOUT_S.to_string();
        let mut args = vec!["up", "--detach", "--timeout", &timeout];
        args.extend_from_slice(up_args);
        mesh.ctl.ok(&args).context("start the local mesh")?;
        Ok(mesh)
    }

    /// `meshctl down`, reporting what it said; after this, dropping does nothing more.
    pub fn down(&mut self) -> anyhow::Result<String> {
        self.stopped = true;
        self.ctl.ok(&["down"])
    }

    /// `meshctl down`, then the processes' logs copied into `logs`; what failed is said, not
    /// returned (the run's results matter more).
    pub fn stop_keeping_logs(mut self, label: &str, logs: &Path) {
        match self.down() {
            Ok(said) => println!("{label}: meshctl down: {}", said.trim()),
            Err(e) => eprintln!("{label}: {e:#}"),
        }
        if let Err(e) = self.copy_logs(logs) {
            eprintln!("{label}: logs not copied: {e:#}");
        }
    }

    /// Copies the processes' logs (kept by `down` until the next `up`) into `dir`.
    pub fn copy_logs(&self, dir: &Path) -> anyhow::Result<()> {
        let from = self.ctl.state_dir.join("logs");
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        for entry in std::fs::read_dir(&from).with_context(|| format!("read {}", from.display()))? {
            let path = entry?.path();
            if let Some(name) = path.file_name() {
                std::fs::copy(&path, dir.join(name))
                    .with_context(|| format!("copy {}", path.display()))?;
            }
        }
        Ok(())
    }
}

impl Drop for LocalMesh {
    fn drop(&mut self) {
        if !self.stopped {
            // Never leave processes behind: this runs on errors and after Ctrl-C too.
            match self.ctl.output(&["down"]) {
                Ok(out) => eprintln!(
                    "soak: meshctl down: {}",
                    String::from_utf8_lossy(&out.stdout).trim()
                ),
                Err(e) => eprintln!(
                    "soak: meshctl down failed ({e:#}); stop it with MESH_STATE_DIR={} meshctl down",
                    self.ctl.state_dir.display()
                ),
            }
        }
    }
}

/// What the soak needs of `meshctl status -o json`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct MeshStatus {
    /// `mesh-proxy` or `envoy`.
    pub proxy: String,
    /// The control plane's watched directory.
    #[serde(default)]
    pub config_dir: PathBuf,
    pub control_plane: ControlPlane,
    pub gateway: Gateway,
    pub sidecars: Vec<Sidecar>,
    pub processes: Vec<Process>,
    /// Node id -> `SYNCED`, `STALE`, ...; empty when the control plane did not answer
    /// (`null` in the JSON).
    #[serde(default, deserialize_with = "null_is_empty")]
    pub sync: BTreeMap<String, String>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct ControlPlane {
    pub debug_address: SocketAddr,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Gateway {
    pub name: String,
    pub admin_address: SocketAddr,
    /// Gateway server port -> local address.
    pub ports: BTreeMap<String, SocketAddr>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Sidecar {
    pub workload: String,
    pub admin_address: SocketAddr,
    /// The sidecar's HTTP proxy listener (`http_proxy`).
    pub outbound_address: SocketAddr,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Process {
    /// `control-plane`, `proxy/NAME`, `app/NAME`.
    pub name: String,
    pub pid: u32,
    #[serde(default)]
    pub running: bool,
    /// Restarts by the supervising `meshctl up`.
    #[serde(default)]
    pub restarts: u32,
}

fn null_is_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    use serde::Deserialize as _;
    Ok(Option::<BTreeMap<String, String>>::deserialize(d)?.unwrap_or_default())
}

impl MeshStatus {
    /// The local address of the gateway's port-80 server.
    pub fn gateway_http(&self) -> anyhow::Result<SocketAddr> {
        self.gateway
            .ports
            .get("80")
            .copied()
            .context("the gateway has no port-80 server")
    }

    /// The admin address of a `proxy/NAME` process.
    pub fn admin_of(&self, process: &str) -> Option<SocketAddr> {
        let name = process.strip_prefix("proxy/")?;
        if name == self.gateway.name {
            return Some(self.gateway.admin_address);
        }
        self.sidecars
            .iter()
            .find(|s| s.workload == name)
            .map(|s| s.admin_address)
    }

    /// The process called `name`.
    pub fn process(&self, name: &str) -> anyhow::Result<&Process> {
        self.processes
            .iter()
            .find(|p| p.name == name)
            .with_context(|| format!("no process {name} in meshctl status"))
    }

    /// Every proxy connected and SYNCED.
    pub fn all_synced(&self) -> bool {
        let proxies = self
            .processes
            .iter()
            .filter(|p| p.name.starts_with("proxy/"))
            .count();
        self.sync.len() == proxies && self.sync.values().all(|s| s == "SYNCED")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real `meshctl status -o json` of the demo.
    const STATUS: &str = r#"{
      "control_plane": {"debug_address": "127.0.0.1:33549", "xds_address": "127.0.0.1:44733"},
      "gateway": {"admin_address": "127.0.0.1:45651", "name": "istio-ingressgateway",
                  "namespace": "istio-system", "ports": {"80": "127.0.0.1:41293"},
                  "url": "http://127.0.0.1:41293"},
      "processes": [
        {"name": "control-plane", "pid": 1077, "program": "/t/mesh-control", "running": true},
        {"name": "app/helloworld-safe", "pid": 1085, "program": "/t/helloworld", "running": true},
        {"name": "proxy/helloworld-safe", "pid": 1087, "program": "/t/mesh-proxy", "running": true},
        {"name": "proxy/istio-ingressgateway", "pid": 1093, "program": "/t/mesh-proxy", "running": true}
      ],
      "proxy": "mesh-proxy",
      "sidecars": [{"admin_address": "127.0.0.1:36557", "app_address": "127.0.0.1:42947",
                    "outbound_address": "127.0.0.1:37871", "workload": "helloworld-safe"}],
      "sync": {"router~127.0.0.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local": "SYNCED"}
    }"#;

    #[test]
    fn status_gives_addresses_and_admins_by_process() {
        let s: MeshStatus = serde_json::from_str(STATUS).unwrap();
        assert_eq!(s.gateway_http().unwrap().to_string(), "127.0.0.1:41293");
        assert_eq!(
            s.admin_of("proxy/istio-ingressgateway")
                .unwrap()
                .to_string(),
            "127.0.0.1:45651"
        );
        assert_eq!(
            s.admin_of("proxy/helloworld-safe").unwrap().to_string(),
            "127.0.0.1:36557"
        );
        assert_eq!(s.admin_of("app/helloworld-safe"), None);
        assert_eq!(s.admin_of("proxy/unknown"), None);
        assert_eq!(s.processes.len(), 4);
        // The control plane not answering: `sync` is null.
        let down: MeshStatus =
            serde_json::from_str(&STATUS.replace(r#""sync": {"#, r#""sync": null, "x": {"#))
                .unwrap();
        assert!(down.sync.is_empty() && !down.all_synced());
    }
}
