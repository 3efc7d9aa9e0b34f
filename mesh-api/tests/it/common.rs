//! Helpers shared by the mesh-api integration tests.

use std::path::PathBuf;

/// `../shared/istio-samples/<rel>` when it exists (it is absent on a clean clone).
pub fn istio_samples(rel: &str) -> Option<PathBuf> {
    let root = std::env::var_os("MESH_ISTIO_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/istio-samples")
        });
    let path = root.join(rel);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "note: {} not found; the tests on Istio's own files are skipped (set MESH_ISTIO_SAMPLES to run them)",
            path.display()
        );
        None
    }
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every `.yaml`/`.yml`/`.json` file under `dir`, sorted.
pub fn yaml_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
