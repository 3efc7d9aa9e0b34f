//! `meshctl analyze DIR` on a local mesh directory: the `meshctl up` workload file is
//! recognised and skipped with a note, while a broken file of that name is still reported.

use std::path::PathBuf;
use std::process::Command;

/// `meshctl` with a state directory where no mesh runs: the files are analysed alone,
/// whatever mesh the user running the tests has up.
fn meshctl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    c.env(
        "MESH_STATE_DIR",
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-mesh"),
    );
    c
}

fn demo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("demo")
}

#[test]
fn the_demo_directory_analyzes_clean_with_a_note_for_its_workload_file() {
    let out = meshctl().arg("analyze").arg(demo()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("No validation issues found"), "{stdout}");
    assert!(!stdout.contains("IST0106"), "{stdout}");
    assert!(
        stderr.contains("workloads.yaml: skipped, the workload file of `meshctl up`"),
        "{stderr}"
    );
}

#[test]
fn a_workloads_yaml_that_is_no_workload_file_is_still_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("workloads.yaml"), "spec: {hosts: [a]}\n").unwrap();
    let out = meshctl().arg("analyze").arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(79), "{stdout}");
    assert!(
        stdout.contains("IST0106") && stdout.contains("workloads.yaml"),
        "{stdout}"
    );
}
