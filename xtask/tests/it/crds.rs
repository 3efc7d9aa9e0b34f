//! `cargo xtask crds` writes one CRD per Istio kind, and the CRDs committed in
//! `charts/mesh/crds/` are the ones the current types generate.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn committed_crds_are_current() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["crds", "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success());
    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/mesh/crds");
    let mut generated: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    generated.sort();
    assert_eq!(generated.len(), 9, "{generated:?}");
    for name in generated {
        let fresh = std::fs::read_to_string(out.path().join(&name)).unwrap();
        let text = std::fs::read_to_string(committed.join(&name)).unwrap_or_default();
        assert!(
            fresh == text,
            "charts/mesh/crds/{} is stale: run `cargo xtask crds`",
            name.to_string_lossy()
        );
        assert!(fresh.contains("kind: CustomResourceDefinition"));
    }
}
