//! Locates the Envoy descriptor set that `envoy-types` ships
//! (`src/generated/types.bin`, every Envoy, xds, udpa, validate and
//! google.protobuf file with json names) so that `xds_json` can embed it and
//! read and write xDS resources by the canonical proto JSON mapping.
//!
//! The crate's source directory is found through `cargo metadata`, which
//! works for registry, vendored and git sources alike.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MESH_ENVOY_DESCRIPTORS");
    let path = match std::env::var_os("MESH_ENVOY_DESCRIPTORS") {
        Some(p) => PathBuf::from(p),
        None => match locate_envoy_types() {
            Ok(dir) => dir.join("src").join("generated").join("types.bin"),
            Err(e) => panic!("mesh-proxy build: cannot locate the envoy-types crate: {e}"),
        },
    };
    if !path.is_file() {
        panic!(
            "mesh-proxy build: Envoy descriptor set not found at {} (set MESH_ENVOY_DESCRIPTORS to a FileDescriptorSet of Envoy's protos)",
            path.display()
        );
    }
    println!("cargo:rerun-if-changed={}", path.display());
    println!("cargo:rustc-env=MESH_ENVOY_DESCRIPTORS={}", path.display());
}

/// The directory of the `envoy-types` package this build resolved: first
/// from `cargo metadata` (offline, this target only, then online), then by
/// looking in `$CARGO_HOME/registry/src` for the version in `Cargo.lock`.
fn locate_envoy_types() -> Result<PathBuf, String> {
    let target = std::env::var("TARGET").unwrap_or_default();
    let mut errors = Vec::new();
    for extra in [
        vec!["--offline", "--filter-platform", target.as_str()],
        vec!["--filter-platform", target.as_str()],
    ] {
        match from_metadata(&extra) {
            Ok(dir) => return Ok(dir),
            Err(e) => errors.push(e),
        }
    }
    match from_registry() {
        Ok(dir) => Ok(dir),
        Err(e) => {
            errors.push(e);
            Err(errors.join("; "))
        }
    }
}

fn from_metadata(extra: &[&str]) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?;
    let manifest = Path::new(&manifest_dir).join("Cargo.toml");
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .args(extra.iter().filter(|a| !a.is_empty()))
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .map_err(|e| format!("running cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("parsing cargo metadata: {e}"))?;
    let packages = meta["packages"]
        .as_array()
        .ok_or("cargo metadata has no packages")?;
    // Take the 0.7.x that mesh-proxy depends on, should another version be
    // in the graph too.
    let found = packages
        .iter()
        .filter(|p| p["name"] == "envoy-types")
        .filter(|p| p["version"].as_str().is_some_and(|v| v.starts_with("0.7.")))
        .filter_map(|p| p["manifest_path"].as_str())
        .next()
        .ok_or("envoy-types 0.7 is not in the dependency graph")?;
    Path::new(found)
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("odd manifest path {found}"))
}

/// `$CARGO_HOME/registry/src/*/envoy-types-VERSION`, VERSION from the
/// workspace's `Cargo.lock`.
fn from_registry() -> Result<PathBuf, String> {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let lock = manifest_dir
        .ancestors()
        .map(|d| d.join("Cargo.lock"))
        .find(|p| p.is_file())
        .ok_or("no Cargo.lock above the crate")?;
    let text = std::fs::read_to_string(&lock).map_err(|e| e.to_string())?;
    let version = text
        .split("[[package]]")
        .find(|block| block.contains("name = \"envoy-types\""))
        .and_then(|block| {
            block
                .lines()
                .find_map(|l| l.strip_prefix("version = \""))
                .map(|v| v.trim_end_matches('"').to_string())
        })
        .ok_or("envoy-types is not in Cargo.lock")?;
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let registries = cargo_home.join("registry").join("src");
    let entries = std::fs::read_dir(&registries)
        .map_err(|e| format!("reading {}: {e}", registries.display()))?;
    entries
        .filter_map(Result::ok)
        .map(|e| e.path().join(format!("envoy-types-{version}")))
        .find(|p| p.is_dir())
        .ok_or_else(|| {
            format!(
                "envoy-types-{version} not found under {}",
                registries.display()
            )
        })
}
