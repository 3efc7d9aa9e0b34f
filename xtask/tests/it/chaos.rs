//! One bounded round of `cargo xtask chaos` on the workspace's debug binaries: the control
//! plane, an app and a proxy killed, a bad file pushed, certificates rotating, under traffic,
//! and no request failing that did not have to. Needs `meshctl`, `mesh-control`,
//! `mesh-proxy` and `helloworld` built beside xtask (`cargo test --workspace` builds them).

use std::path::PathBuf;
use std::process::Command;

#[test]
fn one_round_of_chaos_fails_no_request_it_did_not_have_to() {
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_xtask"))
        .parent()
        .expect("xtask's directory")
        .to_path_buf();
    let missing: Vec<&str> = ["meshctl", "mesh-control", "mesh-proxy", "helloworld"]
        .into_iter()
        .filter(|b| !bin_dir.join(b).is_file())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED: {missing:?} not built in {}; run `cargo build --workspace` first",
            bin_dir.display()
        );
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "chaos",
            "--rounds",
            "1",
            "--calm-seconds",
            "3",
            "--rate",
            "100",
        ])
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join("chaos.json"))
            .unwrap_or_else(|e| panic!("no chaos.json ({e}):\n{said}")),
    )
    .unwrap();
    assert!(run.status.success(), "{said}");
    assert_eq!(report["passed"], true, "{said}");
    let events = report["events"].as_array().unwrap();
    assert_eq!(events.len(), 4, "{said}");
    assert!(
        events
            .iter()
            .flat_map(|e| e["checks"].as_array().unwrap())
            .all(|c| c["ok"] == true),
        "{said}"
    );
    // Every process the events killed was started again by meshctl's supervisor.
    for name in [
        "control-plane",
        "app/helloworld-risky",
        "proxy/helloworld-risky",
    ] {
        assert_eq!(report["restarts"][name], 1, "{name}: {said}");
    }
    assert!(report["requests"].as_u64().unwrap() > 1000, "{said}");
}
