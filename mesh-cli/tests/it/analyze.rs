//! `meshctl analyze` as a user runs it: the real binary, real files, exit codes.

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

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mesh-api/tests/fixtures")
}

#[test]
fn missing_subset_exits_79_with_ist0101() {
    let out = meshctl()
        .arg("analyze")
        .arg(fixtures().join("missing-subset.yaml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(79), "{stdout}");
    assert!(
        stdout.contains("Error [IST0101] (VirtualService default/reviews ")
            && stdout.contains("missing-subset.yaml:35) Referenced host+subset in destinationrule not found: \"reviews+v9\""),
        "{stdout}"
    );
}

#[test]
fn json_and_yaml_output() {
    let out = meshctl()
        .args(["analyze", "-o", "json"])
        .arg(fixtures().join("missing-subset.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(79));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["code"], "IST0101");
    assert_eq!(v[0]["level"], "Error");
    assert_eq!(v[0]["origin"], "VirtualService default/reviews");
    assert!(
        v[0]["reference"]
            .as_str()
            .unwrap()
            .ends_with("missing-subset.yaml:35")
    );

    let out = meshctl()
        .args(["analyze", "--output", "yaml"])
        .arg(fixtures().join("missing-subset.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(79));
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(yaml.contains("code: IST0101"), "{yaml}");
}

#[test]
fn clean_config_exits_0() {
    let out = meshctl()
        .arg("analyze")
        .arg(fixtures().join("shop.yaml"))
        .arg(fixtures().join("external.yaml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    // The Widget is reported as skipped, not as an error.
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped example.com/v1 Widget"));
}

#[test]
fn reads_stdin() {
    use std::io::Write;
    let mut child = meshctl()
        .args(["analyze", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let text = std::fs::read_to_string(fixtures().join("missing-subset.yaml")).unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(79));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(VirtualService default/reviews -:35)"));
}

#[test]
fn bad_document_is_a_schema_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reviews.yaml");
    std::fs::write(
        &file,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n  hosts: [r]\n  http:\n  - route:\n    - destination:\n        host: r\n      weight: ten\n",
    )
    .unwrap();
    let out = meshctl().arg("analyze").arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(79), "{stdout}");
    assert!(stdout.contains("Error [IST0106] ("), "{stdout}");
    assert!(stdout.contains("reviews.yaml:11) Schema validation error: document 1, column 15: spec.http[0].route[0].weight: invalid type: string \"ten\", expected u32"), "{stdout}");
}

#[test]
fn istio_bookinfo_rules_exit_0() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/istio-samples/samples/bookinfo/networking");
    if !dir.exists() {
        eprintln!("note: {} not found; skipped", dir.display());
        return;
    }
    let out = meshctl().arg("analyze").arg(&dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
}

#[test]
fn an_unknown_kind_in_an_istio_group_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.yaml");
    std::fs::write(
        &file,
        "apiVersion: networking.istio.io/v1\nkind: VirtualSevice\nmetadata:\n  name: r\nspec:\n  hosts: [r]\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n",
    )
    .unwrap();
    let out = meshctl().arg("analyze").arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(79), "{stdout}");
    assert!(
        stdout.contains("Error [IST0106] (VirtualSevice default/r ")
            && stdout.contains("typo.yaml:1) Schema validation error: unknown kind VirtualSevice in networking.istio.io/v1 (did you mean VirtualService?)"),
        "{stdout}"
    );
    // A kind of another group is none of the mesh's business: skipped, not reported.
    assert!(!stdout.contains("Widget"), "{stdout}");
    assert!(!stdout.contains("No validation issues"), "{stdout}");
}

#[test]
fn no_path_and_no_running_mesh_is_an_error_that_says_what_to_do() {
    let out = meshctl().arg("analyze").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no local mesh running"), "{stderr}");
}
