//! End to end, with real processes: `meshctl up --detach` runs the built-in demo, then
//! `proxy-status` shows every proxy in step and `proxy-config` reads clusters, routes,
//! endpoints and log levels from the proxies' admins.
//!
//! Needs `mesh-control`, `mesh-proxy` and `helloworld` built next to `meshctl`.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

fn meshctl() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshctl"))
}

fn bin_dir() -> PathBuf {
    meshctl().parent().unwrap().to_path_buf()
}

struct Mesh {
    state: tempfile::TempDir,
}

impl Mesh {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(meshctl())
            .args(args)
            .env("MESH_STATE_DIR", self.state.path())
            .env("MESH_BIN_DIR", bin_dir())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> Result<String, String> {
        let out = self.run(args);
        if !out.status.success() {
            return Err(format!(
                "meshctl {args:?} failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn json(&self, args: &[&str]) -> Result<Value, String> {
        let text = self.ok(args)?;
        serde_json::from_str(&text).map_err(|e| format!("{args:?}: {e}\n{text}"))
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}

fn retry<T>(timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("timed out: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

#[test]
fn proxy_status_and_proxy_config_against_the_built_in_demo() {
    for bin in ["mesh-control", "mesh-proxy", "helloworld"] {
        if !bin_dir().join(bin).is_file() {
            eprintln!(
                "SKIPPED: {bin} is not built in {}; run `cargo build -p mesh-control -p mesh-proxy -p helloworld` first",
                bin_dir().display()
            );
            return;
        }
    }
    let mesh = Mesh {
        state: tempfile::tempdir().unwrap(),
    };
    mesh.ok(&["up", "--detach", "--timeout", "30"]).unwrap();
    let status = mesh.json(&["status", "-o", "json"]).unwrap();
    let proxies = 1 + status["sidecars"].as_array().unwrap().len();

    // proxy-status: every proxy, all four types SYNCED.
    let rows = retry(Duration::from_secs(10), || {
        let v = mesh.json(&["proxy-status", "-o", "json"])?;
        let rows = v.as_array().cloned().unwrap_or_default();
        if rows.len() != proxies {
            return Err(format!("{proxies} proxies expected: {v:#}"));
        }
        for r in &rows {
            for t in ["cds", "lds", "eds", "rds"] {
                if r[t] != "SYNCED" {
                    return Err(format!("{t} not SYNCED: {v:#}"));
                }
            }
        }
        Ok(rows)
    });
    let table = mesh.ok(&["proxy-status"]).unwrap();
    assert!(
        table.starts_with("NAME") && table.contains("ISTIOD"),
        "{table}"
    );
    for r in &rows {
        let name = r["name"].as_str().unwrap();
        assert!(table.contains(name), "{name} missing:\n{table}");
    }
    let one = mesh
        .json(&["proxy-status", "helloworld-safe", "-o", "json"])
        .unwrap();
    assert_eq!(one.as_array().map(Vec::len), Some(1), "{one:#}");
    assert!(!mesh.run(&["proxy-status", "nope"]).status.success());

    // proxy-config cluster: outbound clusters with their subsets.
    let sidecar = "helloworld-safe".to_string();
    let clusters = mesh.ok(&["proxy-config", "cluster", &sidecar]).unwrap();
    assert!(clusters.starts_with("SERVICE FQDN"), "{clusters}");
    assert!(
        clusters.lines().any(
            |l| l.starts_with("helloworld.default.svc.cluster.local") && l.contains("outbound")
        ),
        "{clusters}"
    );
    let subsets = mesh
        .ok(&[
            "proxy-config",
            "cluster",
            &sidecar,
            "--fqdn",
            "helloworld.default.svc.cluster.local",
            "--direction",
            "outbound",
        ])
        .unwrap();
    let subset_col: Vec<&str> = subsets
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    for want in ["safe", "risky"] {
        assert!(
            subset_col.contains(&want),
            "subset {want} missing:\n{subsets}"
        );
    }
    let json = mesh
        .json(&["proxy-config", "cluster", &sidecar, "-o", "json"])
        .unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for s in subset_col.iter().filter(|s| **s != "-") {
        let want = format!("outbound|5000|{s}|helloworld.default.svc.cluster.local");
        assert!(names.contains(&want.as_str()), "{want} not in {names:?}");
        let only = mesh
            .ok(&["proxy-config", "cluster", &sidecar, "--subset", s])
            .unwrap();
        assert!(
            only.lines()
                .skip(1)
                .all(|l| l.split_whitespace().nth(2) == Some(s)),
            "--subset {s}:\n{only}"
        );
    }

    // proxy-config route: the helloworld domains.
    let routes = mesh.ok(&["proxy-config", "route", &sidecar]).unwrap();
    assert!(routes.starts_with("NAME"), "{routes}");
    assert!(routes.contains("helloworld"), "{routes}");

    // proxy-config endpoint: both helloworld versions, HEALTHY.
    let eps = retry(Duration::from_secs(10), || {
        let v = mesh.json(&["proxy-config", "endpoint", "gateway", "-o", "json"])?;
        let hw: Vec<Value> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                e["cluster"]
                    .as_str()
                    .is_some_and(|c| c.contains("helloworld"))
                    && e["status"] == "HEALTHY"
            })
            .cloned()
            .collect();
        let mut addrs: Vec<&str> = hw.iter().filter_map(|e| e["endpoint"].as_str()).collect();
        addrs.sort();
        addrs.dedup();
        if addrs.len() < 2 {
            return Err(format!("two HEALTHY helloworld endpoints expected: {v:#}"));
        }
        Ok(addrs.len())
    });
    assert!(eps >= 2);
    let table = mesh.ok(&["proxy-config", "endpoint", "gateway"]).unwrap();
    assert!(
        table.starts_with("ENDPOINT") && table.contains("HEALTHY"),
        "{table}"
    );

    // proxy-config log: a level change shows in GET /logging.
    let before = mesh.ok(&["proxy-config", "log", &sidecar]).unwrap();
    assert!(before.contains("router"), "{before}");
    mesh.ok(&["proxy-config", "log", &sidecar, "--level", "router:debug"])
        .unwrap();
    let after = mesh.ok(&["proxy-config", "log", &sidecar]).unwrap();
    assert!(
        after.lines().any(|l| l.trim() == "router: debug"),
        "{after}"
    );
    let bad = mesh.run(&["proxy-config", "log", &sidecar, "--level", "router:loud"]);
    assert!(!bad.status.success());

    // --admin reaches any admin directly.
    let admin = status["gateway"]["admin_address"].as_str().unwrap();
    let via_admin = mesh
        .ok(&["proxy-config", "listener", "--admin", admin])
        .unwrap();
    assert!(via_admin.starts_with("ADDRESS"), "{via_admin}");
    assert!(via_admin.lines().count() > 1, "{via_admin}");

    // Unknown proxy: a clear error.
    let out = mesh.run(&["proxy-config", "cluster", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}
