//! A real Kubernetes API server for tests: Debian's etcd and a kube-apiserver 1.20 built
//! from Debian's source by `cargo xtask kube-apiserver`, both on 127.0.0.1, with RBAC, an
//! admin token and service-account token signing (TokenRequest and TokenReview work).
//!
//! There is no kubelet, scheduler or controller: nothing turns a Deployment into Pods or a
//! Service into EndpointSlices; a test creates Pods, patches their status as a kubelet would,
//! and writes EndpointSlices as the controller would. 1.20 serves EndpointSlices as
//! `discovery.k8s.io/v1beta1` only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// Set to `1` (as `.ci/run` does), a missing API server fails the tests that need one
/// instead of letting them pass with a SKIPPED line.
pub const REQUIRE_KUBE_VAR: &str = "MESH_REQUIRE_KUBE";
/// Path of a kube-apiserver binary, instead of the one in the cache.
pub const KUBE_APISERVER_VAR: &str = "MESH_KUBE_APISERVER";
/// The Kubernetes version `cargo xtask kube-apiserver` builds.
pub const KUBE_VERSION: &str = "1.20.2";

const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Where `cargo xtask kube-apiserver` keeps what it builds: `$MESH_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/mesh`, else `~/.cache/mesh`; outside the repository, so a clean clone or
/// `cargo clean` keeps it.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MESH_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("mesh");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache").join("mesh")
}

/// The cached kube-apiserver binary's path (it may not exist yet).
pub fn cached_kube_apiserver() -> PathBuf {
    cache_dir()
        .join(format!("kubernetes-{KUBE_VERSION}"))
        .join("kube-apiserver")
}

/// The kube-apiserver and etcd binaries, or why they cannot be used.
pub fn kube_binaries() -> Result<(PathBuf, PathBuf), String> {
    let apiserver = std::env::var_os(KUBE_APISERVER_VAR)
        .filter(|p| !p.is_empty())
        .map_or_else(cached_kube_apiserver, PathBuf::from);
    if !apiserver.is_file() {
        return Err(format!(
            "no kube-apiserver at {} (build it once with `cargo xtask kube-apiserver`, or set {KUBE_APISERVER_VAR})",
            apiserver.display()
        ));
    }
    let etcd = find_on_path("etcd").ok_or("no `etcd` on PATH (apt-get install etcd-server)")?;
    Ok((apiserver, etcd))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A running etcd + kube-apiserver; both are killed on drop.
pub struct KubeApiServer {
    dir: tempfile::TempDir,
    apiserver_bin: PathBuf,
    etcd: Child,
    apiserver: Option<Child>,
    etcd_port: u16,
    port: u16,
    token: String,
}

impl KubeApiServer {
    /// Starts one, or returns `None` after printing why when the binaries are missing
    /// (panics instead with `MESH_REQUIRE_KUBE=1`).
    pub fn start() -> Option<KubeApiServer> {
        let (apiserver_bin, etcd_bin) = match kube_binaries() {
            Ok(b) => b,
            Err(why) => {
                if std::env::var(REQUIRE_KUBE_VAR).is_ok_and(|v| v == "1") {
                    panic!("{REQUIRE_KUBE_VAR}=1 but {why}");
                }
                eprintln!("SKIPPED: {why}");
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let (etcd_port, peer_port, port) = (free_port(), free_port(), free_port());
        let etcd = Command::new(&etcd_bin)
            .arg("--data-dir")
            .arg(dir.path().join("etcd"))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
            ])
            .stdout(Stdio::null())
            .stderr(log_file(dir.path(), "etcd.log"))
            .spawn()
            .expect("start etcd");
        let key = dir.path().join("sa.key");
        run(Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048"));
        run(Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(dir.path().join("sa.pub")));
        let token = format!("{:032x}", rand_u128());
        std::fs::write(
            dir.path().join("tokens.csv"),
            format!("{token},admin,admin,system:masters\n"),
        )
        .expect("write tokens.csv");
        let mut server = KubeApiServer {
            dir,
            apiserver_bin,
            etcd,
            apiserver: None,
            etcd_port,
            port,
            token,
        };
        server.start_apiserver();
        server.write_kubeconfig();
        Some(server)
    }

    fn start_apiserver(&mut self) {
        let d = self.dir.path();
        let child = Command::new(&self.apiserver_bin)
            .args([
                "--etcd-servers",
                &format!("http://127.0.0.1:{}", self.etcd_port),
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                &self.port.to_string(),
                "--authorization-mode",
                "RBAC",
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
                "--api-audiences",
                "https://kubernetes.default.svc.cluster.local,istio-ca",
                // No controller makes the token Secrets this plugin waits for.
                "--disable-admission-plugins",
                "ServiceAccount",
                "--service-cluster-ip-range",
                "10.96.0.0/16",
            ])
            .arg("--cert-dir")
            .arg(d.join("certs"))
            .arg("--token-auth-file")
            .arg(d.join("tokens.csv"))
            .arg("--service-account-key-file")
            .arg(d.join("sa.pub"))
            .arg("--service-account-signing-key-file")
            .arg(d.join("sa.key"))
            .stdout(Stdio::null())
            .stderr(log_file(d, "apiserver.log"))
            .spawn()
            .expect("start kube-apiserver");
        self.apiserver = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = Command::new("curl")
                .args(["-sk", "--max-time", "2", "-H"])
                .arg(format!("Authorization: Bearer {}", self.token))
                .arg(format!("https://127.0.0.1:{}/readyz", self.port))
                .output();
            if out.is_ok_and(|o| o.stdout == b"ok") {
                return;
            }
            if let Some(child) = &mut self.apiserver
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "kube-apiserver exited ({status}):\n{}",
                    self.log_tail("apiserver.log")
                );
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready within {START_TIMEOUT:?}:\n{}",
                self.log_tail("apiserver.log")
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn write_kubeconfig(&self) {
        let ca = self.dir.path().join("certs").join("apiserver.crt");
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster: {{server: \"{}\", certificate-authority: \"{}\"}}\n  name: local\nusers:\n- name: admin\n  user: {{token: {}}}\ncontexts:\n- context: {{cluster: local, user: admin, namespace: default}}\n  name: local\ncurrent-context: local\n",
            self.url(),
            ca.display(),
            self.token
        );
        std::fs::write(self.kubeconfig(), config).expect("write kubeconfig");
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig for the admin (`system:masters`), current context `local`.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The admin's bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Kills the API server (SIGKILL, as a crash) and starts it again on the same port and
    /// etcd, returning once it is ready: clients see their watches break and must relist.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.start_apiserver();
    }

    /// The end of one of the logs (`apiserver.log`, `etcd.log`), for failure messages.
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .expect("log file")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a setup command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, RandomState};
    let a = RandomState::new().hash_one(1u8);
    let b = RandomState::new().hash_one(2u8);
    (u128::from(a) << 64) | u128::from(b)
}

/// Istio's EnvoyFilter CRD (`networking.istio.io/v1alpha3` only, schema left open as the
/// mesh does not read it), as a user who installed Istio's CRDs has it: a kind the mesh
/// reports as skipped.
pub fn envoy_filter_crd() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "envoyfilters.networking.istio.io"},
        "spec": {"group": "networking.istio.io", "scope": "Namespaced",
                 "names": {"kind": "EnvoyFilter", "plural": "envoyfilters",
                           "singular": "envoyfilter", "listKind": "EnvoyFilterList"},
                 "versions": [{"name": "v1alpha3", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object",
                                          "x-kubernetes-preserve-unknown-fields": true}}}]}
    })
}

/// An EnvoyFilter named `name` (of [`envoy_filter_crd`]).
pub fn envoy_filter(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
        "metadata": {"name": name},
        "spec": {"configPatches": [{"applyTo": "HTTP_FILTER"}]}
    })
}
