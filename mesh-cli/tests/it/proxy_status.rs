//! End to end, with real processes: `meshctl up --detach` runs the built-in demo, then
//! `proxy-status` shows every proxy in step and `proxy-config` reads clusters, routes,
//! endpoints and log levels from the proxies' admins.
//!
//! Needs `mesh-control`, `mesh-proxy` and `helloworld` built next to `meshctl`.

use std::path::PathBuf;
use std::time::Duration;

use mesh_test_util::{MeshCtl, block_until};
use serde_json::Value;

#[test]
fn proxy_status_and_proxy_config_against_the_built_in_demo() {
    let Some(mesh) = MeshCtl::up(env!("CARGO_BIN_EXE_meshctl"), "mesh", &["--timeout", "30"])
    else {
        return;
    };
    let status = mesh.try_json(&["status", "-o", "json"]).unwrap();
    let proxies = 1 + status["sidecars"].as_array().unwrap().len();

    // proxy-status: every proxy, all four types SYNCED.
    let rows = block_until(Duration::from_secs(10), || {
        let v = mesh.try_json(&["proxy-status", "-o", "json"])?;
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
    })
    .unwrap();
    let table = mesh.try_ok(&["proxy-status"]).unwrap();
    assert!(
        table.starts_with("NAME") && table.contains("ISTIOD"),
        "{table}"
    );
    for r in &rows {
        let name = r["name"].as_str().unwrap();
        assert!(table.contains(name), "{name} missing:\n{table}");
    }
    // VERSION from each proxy's admin; the verbose table has a column per type.
    for r in &rows {
        assert!(
            r["version"]
                .as_str()
                .is_some_and(|v| v.starts_with("mesh-proxy/")),
            "{r:#}"
        );
        assert_eq!(
            r["subscribed"],
            serde_json::json!(["CDS", "LDS", "EDS", "RDS"]),
            "{r:#}"
        );
    }
    assert!(table.contains("4 (CDS,LDS,EDS,RDS)"), "{table}");
    let verbose = mesh.try_ok(&["proxy-status", "--verbose"]).unwrap();
    assert!(
        verbose.starts_with("NAME") && verbose.contains("SDS") && verbose.contains("SYNCED ("),
        "{verbose}"
    );
    // NAME: what the control plane sent against what the proxy holds.
    let one = block_until(Duration::from_secs(10), || {
        let text = mesh.try_ok(&["proxy-status", "helloworld-safe"])?;
        for want in [
            "Clusters Match",
            "Listeners Match",
            "Routes Match",
            "Endpoints Match",
        ] {
            if !text.contains(want) {
                return Err(format!("{want} missing:\n{text}"));
            }
        }
        Ok(text)
    })
    .unwrap();
    assert!(!one.contains("Don't Match"), "{one}");
    let one = mesh
        .try_json(&["proxy-status", "helloworld-safe", "-o", "json"])
        .unwrap();
    assert_eq!(one["proxy"]["name"], "helloworld-safe.default", "{one:#}");
    assert_eq!(
        one["comparison"].as_array().map(Vec::len),
        Some(4),
        "{one:#}"
    );
    assert!(!mesh.run(&["proxy-status", "nope"]).status.success());

    // proxy-config cluster: outbound clusters with their subsets.
    let sidecar = "helloworld-safe".to_string();
    let clusters = mesh.try_ok(&["proxy-config", "cluster", &sidecar]).unwrap();
    assert!(clusters.starts_with("SERVICE FQDN"), "{clusters}");
    assert!(
        clusters.lines().any(
            |l| l.starts_with("helloworld.default.svc.cluster.local") && l.contains("outbound")
        ),
        "{clusters}"
    );
    let subsets = mesh
        .try_ok(&[
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
        .try_json(&["proxy-config", "cluster", &sidecar, "-o", "json"])
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
            .try_ok(&["proxy-config", "cluster", &sidecar, "--subset", s])
            .unwrap();
        assert!(
            only.lines()
                .skip(1)
                .all(|l| l.split_whitespace().nth(2) == Some(s)),
            "--subset {s}:\n{only}"
        );
    }

    // proxy-config route: the helloworld domains.
    let routes = mesh.try_ok(&["proxy-config", "route", &sidecar]).unwrap();
    assert!(routes.starts_with("NAME"), "{routes}");
    assert!(routes.contains("helloworld"), "{routes}");
    assert_provenance(&mesh, &sidecar);

    // proxy-config endpoint: both helloworld versions, HEALTHY.
    let eps = block_until(Duration::from_secs(10), || {
        let v = mesh.try_json(&["proxy-config", "endpoint", "gateway", "-o", "json"])?;
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
    })
    .unwrap();
    assert!(eps >= 2);
    let table = mesh
        .try_ok(&["proxy-config", "endpoint", "gateway"])
        .unwrap();
    assert!(
        table.starts_with("ENDPOINT") && table.contains("HEALTHY"),
        "{table}"
    );

    // proxy-config log: a level change shows in GET /logging.
    let before = mesh.try_ok(&["proxy-config", "log", &sidecar]).unwrap();
    assert!(before.contains("router"), "{before}");
    mesh.try_ok(&["proxy-config", "log", &sidecar, "--level", "router:debug"])
        .unwrap();
    let after = mesh.try_ok(&["proxy-config", "log", &sidecar]).unwrap();
    assert!(
        after.lines().any(|l| l.trim() == "router: debug"),
        "{after}"
    );
    let bad = mesh.run(&["proxy-config", "log", &sidecar, "--level", "router:loud"]);
    assert!(!bad.status.success());

    // Istio's tutorial command as typed, on the name proxy-status prints: Envoy's logger
    // names, `conn_handler` included (mesh-proxy has no use for it: accepted and reported,
    // the others set).
    let out = mesh.run(&[
        "proxy-config",
        "log",
        "helloworld-safe.default",
        "--level",
        "connection:debug,conn_handler:debug,filter:debug,router:debug,http:debug,upstream:debug",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    for name in ["connection", "filter", "router", "http", "upstream"] {
        assert!(
            stdout.lines().any(|l| l.trim() == format!("{name}: debug")),
            "{name}: {stdout}"
        );
    }
    assert!(
        stderr.contains("logger \"conn_handler\" accepted, but this proxy logs nothing under it"),
        "{stderr}"
    );
    // A name that is no Envoy logger still refuses the whole change.
    let bad = mesh.run(&[
        "proxy-config",
        "log",
        &sidecar,
        "--level",
        "router:info,conn_handlr:debug",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown logger \"conn_handlr\""));
    let after = mesh.try_ok(&["proxy-config", "log", &sidecar]).unwrap();
    assert!(
        after.lines().any(|l| l.trim() == "router: debug"),
        "{after}"
    );

    // One name per proxy: each name proxy-status prints works in every command, and so do
    // the short names and Istio's deploy/NAME.NAMESPACE and POD.NAMESPACE forms.
    for r in &rows {
        let name = r["name"].as_str().unwrap();
        let routes = mesh.try_ok(&["proxy-config", "route", name]).unwrap();
        assert!(
            routes.starts_with("NAME") && routes.lines().count() > 1,
            "{name}: {routes}"
        );
        let listeners = mesh.try_ok(&["proxy-config", "listener", name]).unwrap();
        assert!(listeners.lines().count() > 1, "{name}: {listeners}");
        let explained = mesh
            .try_ok(&["explain", name, "--host", "helloworld", "--path", "/hello"])
            .unwrap();
        assert!(
            explained.contains("-> cluster outbound|5000|"),
            "{name}: {explained}"
        );
        let t = mesh
            .try_json(&["traffic", "--via", name, "-n", "4", "-o", "json"])
            .unwrap();
        assert_eq!(t["statuses"]["200"], 4, "{name}: {t:#}");
        let one = mesh
            .try_json(&["proxy-status", &format!("deploy/{name}"), "-o", "json"])
            .unwrap();
        assert_eq!(one["proxy"]["name"], name, "{one:#}");
    }
    for name in [
        "gateway",
        "istio-ingressgateway",
        "deploy/istio-ingressgateway.istio-system",
        "deploy/helloworld-risky",
    ] {
        mesh.try_ok(&["proxy-config", "cluster", name]).unwrap();
    }
    let one = mesh
        .try_json(&["proxy-status", "gateway", "-o", "json"])
        .unwrap();
    assert_eq!(
        one["proxy"]["name"], "istio-ingressgateway.istio-system",
        "{one:#}"
    );

    // --admin reaches any admin directly.
    let admin = status["gateway"]["admin_address"].as_str().unwrap();
    let via_admin = mesh
        .try_ok(&["proxy-config", "listener", "--admin", admin])
        .unwrap();
    assert!(via_admin.starts_with("ADDRESS"), "{via_admin}");
    assert!(via_admin.lines().count() > 1, "{via_admin}");

    // Unknown proxy: a clear error that lists the names there are.
    let out = mesh.run(&["proxy-config", "cluster", "nope"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no proxy \"nope\"")
            && stderr
                .contains("istio-ingressgateway.istio-system (gateway), helloworld-safe.default"),
        "{stderr}"
    );
}

/// The DESTINATION RULE and VIRTUAL SERVICE columns name the Istio resources behind the
/// clusters and routes (Istio's `filter_metadata.istio.config`), whichever proxy runs.
fn assert_provenance(mesh: &MeshCtl, sidecar: &str) {
    let clusters = mesh
        .try_ok(&[
            "proxy-config",
            "cluster",
            sidecar,
            "--fqdn",
            "helloworld.default.svc.cluster.local",
        ])
        .unwrap();
    let rows: Vec<&str> = clusters.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{clusters}");
    assert!(
        rows.iter().all(|l| l.ends_with(" helloworld.default")),
        "DESTINATION RULE: {clusters}"
    );
    let gateway = mesh.try_ok(&["proxy-config", "route", "gateway"]).unwrap();
    let rows: Vec<&str> = gateway.lines().skip(1).collect();
    assert!(!rows.is_empty(), "{gateway}");
    assert!(
        rows.iter().all(|l| l.ends_with(" helloworld.default")),
        "VIRTUAL SERVICE: {gateway}"
    );
    let json = mesh
        .try_json(&["proxy-config", "route", "gateway", "-o", "json"])
        .unwrap();
    let vh = &json[0]["virtual_hosts"][0];
    assert_eq!(
        vh["metadata"]["filter_metadata"]["istio"]["config"],
        "/apis/networking.istio.io/v1/namespaces/default/virtual-service/helloworld",
        "{vh:#}"
    );
}

/// A DestinationRule whose Maglev table size is not prime: Istio's API takes it, the
/// control plane translates it, and the proxies reject the cluster (as Envoy does).
const NON_PRIME_MAGLEV: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: helloworld
  namespace: default
spec:
  host: helloworld
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
        maglev:
          tableSize: 1000
  subsets:
  - name: safe
    labels: {version: safe}
  - name: risky
    labels: {version: risky}
";

#[test]
fn a_rejected_push_shows_stale_then_a_fix_applied_under_another_name_syncs() {
    let Some(mesh) = MeshCtl::up(env!("CARGO_BIN_EXE_meshctl"), "mesh", &["--timeout", "30"])
    else {
        return;
    };

    // The bad rule: every proxy NACKs its clusters and keeps the previous ones. `apply`,
    // waiting for the proxies, reports the rejection and fails (the rule stays written).
    let bad = mesh.state_dir().join("bad-lb.yaml");
    std::fs::write(&bad, NON_PRIME_MAGLEV).unwrap();
    let out = mesh.run(&["apply", "-f", bad.to_str().unwrap()]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.contains("destinationrule/helloworld (default) configured"),
        "{stdout}"
    );
    assert!(
        !out.status.success() && stderr.contains("rejected it: CDS:") && stderr.contains("prime"),
        "{stderr}"
    );
    let row = block_until(Duration::from_secs(30), || {
        let v = mesh.try_json(&["proxy-status", "-o", "json"])?;
        let row = v
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == "helloworld-safe.default")
            .cloned()
            .ok_or(format!("helloworld-safe missing: {v:#}"))?;
        // STALE alone may still be the push in flight: wait for the NACK itself.
        if row["cds"] != "STALE" || !row["rejected"]["cds"].is_string() {
            return Err(format!("cds not rejected yet: {row:#}"));
        }
        Ok(row)
    })
    .unwrap();
    let why = row["rejected"]["cds"].as_str().unwrap_or_default();
    assert!(why.contains("prime"), "{row:#}");
    // The short table points at it.
    let out = mesh.run(&["proxy-status"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("helloworld-safe.default: CDS STALE: rejected:"),
        "{stderr}"
    );
    let verbose = mesh.try_ok(&["proxy-status", "--verbose"]).unwrap();
    assert!(verbose.contains("STALE ("), "{verbose}");
    // NAME: the clusters differ, with both versions and the rejection.
    let diff = mesh.try_ok(&["proxy-status", "helloworld-safe"]).unwrap();
    assert!(diff.contains("Clusters Don't Match (STALE)"), "{diff}");
    assert!(
        diff.contains("the proxy rejected it:") && diff.contains("prime"),
        "{diff}"
    );
    assert!(diff.contains("Listeners Match"), "{diff}");
    let j = mesh
        .try_json(&["proxy-status", "helloworld-safe", "-o", "json"])
        .unwrap();
    let cds = &j["comparison"][0];
    assert_eq!(cds["type"], "cds");
    assert_eq!(cds["matches"], false);
    assert_ne!(cds["control_plane_version"], cds["proxy_version"], "{j:#}");

    // The fix, from a file of another name: it replaces the rule in place (one
    // DestinationRule helloworld in force) and every proxy is in step again.
    let fixed = mesh.state_dir().join("fixed.yaml");
    std::fs::write(
        &fixed,
        NON_PRIME_MAGLEV.replace("tableSize: 1000", "tableSize: 1009"),
    )
    .unwrap();
    mesh.try_ok(&["apply", "-f", fixed.to_str().unwrap()])
        .unwrap();
    let status = mesh.try_json(&["status", "-o", "json"]).unwrap();
    let debug = status["control_plane"]["debug_address"]
        .as_str()
        .unwrap()
        .to_string();
    block_until(Duration::from_secs(30), || {
        let v = mesh.try_json(&["proxy-status", "-o", "json"])?;
        for r in v.as_array().into_iter().flatten() {
            for t in ["cds", "lds", "eds", "rds"] {
                if r[t] != "SYNCED" {
                    return Err(format!("{t} not SYNCED: {r:#}"));
                }
            }
        }
        Ok(())
    })
    .unwrap();
    // --control-plane given explicitly: the same rows, versions included.
    let explicit = mesh
        .try_json(&["proxy-status", "--control-plane", &debug, "-o", "json"])
        .unwrap();
    let rows = explicit.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{explicit:#}");
    assert!(
        rows.iter().all(|r| r["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("mesh-proxy/"))),
        "{explicit:#}"
    );
    let config_dir = PathBuf::from(status["config_dir"].as_str().unwrap());
    let loaded = mesh_api_destination_rules(&config_dir);
    assert_eq!(
        loaded,
        1,
        "one DestinationRule helloworld in {}",
        config_dir.display()
    );
    let diff = mesh.try_ok(&["proxy-status", "helloworld-safe"]).unwrap();
    assert!(diff.contains("Clusters Match"), "{diff}");

    // traffic -H and --concurrency: the header is the hash key, so every request of one
    // user lands on one version; all of them are counted.
    let t = mesh
        .try_json(&[
            "traffic",
            "-n",
            "30",
            "--concurrency",
            "3",
            "-H",
            "x-user: alice",
            "-o",
            "json",
        ])
        .unwrap();
    assert_eq!(t["total"], 30, "{t:#}");
    assert_eq!(t["statuses"]["200"], 30, "{t:#}");
    let versions = t["versions"].as_object().unwrap();
    assert_eq!(versions.len(), 1, "one version for one hash key: {t:#}");

    // apply --delete removes by identity.
    let out = mesh
        .try_ok(&["apply", "--delete", "-f", fixed.to_str().unwrap()])
        .unwrap();
    assert!(
        out.contains("destinationrule/helloworld (default) deleted"),
        "{out}"
    );
    assert_eq!(mesh_api_destination_rules(&config_dir), 0);
}

/// DestinationRules named `helloworld` in the control plane's config dir, counted by
/// reading every YAML document's `kind` and `name` lines.
fn mesh_api_destination_rules(config_dir: &std::path::Path) -> usize {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml")
                && !p.file_name().unwrap().to_string_lossy().starts_with('.')
            {
                out.push(std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut texts = Vec::new();
    walk(config_dir, &mut texts);
    texts
        .iter()
        .flat_map(|t| t.split("\n---"))
        .filter(|d| d.contains("kind: DestinationRule") && d.contains("name: helloworld\n"))
        .count()
}

/// The same commands against the real Envoy: its `/server_info` gives VERSION, it takes its
/// certificates by SDS over ADS, and its `/config_dump` compares with what was sent.
#[test]
fn proxy_status_against_envoy() {
    let Some(mesh) = MeshCtl::up(env!("CARGO_BIN_EXE_meshctl"), "envoy", &[]) else {
        return;
    };
    let rows = block_until(Duration::from_secs(30), || {
        let v = mesh.try_json(&["proxy-status", "-o", "json"])?;
        let rows = v.as_array().cloned().unwrap_or_default();
        if rows.len() != 3 {
            return Err(format!("3 proxies expected: {v:#}"));
        }
        for r in &rows {
            for t in ["cds", "lds", "eds", "rds", "sds"] {
                if r[t] != "SYNCED" {
                    return Err(format!("{t} not SYNCED: {r:#}"));
                }
            }
        }
        Ok(rows)
    })
    .unwrap();
    for r in &rows {
        assert!(
            r["version"]
                .as_str()
                .is_some_and(|v| v.starts_with("envoy/")),
            "{r:#}"
        );
        assert_eq!(r["port"], "secure", "{r:#}");
    }
    let table = mesh.try_ok(&["proxy-status"]).unwrap();
    assert!(table.contains("5 (CDS,LDS,EDS,RDS,SDS)"), "{table}");
    let text = block_until(Duration::from_secs(10), || {
        let text = mesh.try_ok(&["proxy-status", "helloworld-safe"])?;
        if text.contains("Don't Match") {
            return Err(text);
        }
        Ok(text)
    })
    .unwrap();
    for want in [
        "Clusters Match",
        "Listeners Match",
        "Endpoints Match",
        "Routes Match",
        "Secrets Match",
    ] {
        assert!(text.contains(want), "{want}:\n{text}");
    }
    assert_provenance(&mesh, "helloworld-safe");
    // Istio's tutorial command on Envoy, by the gateway's proxy-status name: every logger
    // is Envoy's own, so all are set and none is reported idle.
    let out = mesh.run(&[
        "proxy-config",
        "log",
        "istio-ingressgateway.istio-system",
        "--level",
        "connection:debug,conn_handler:debug,filter:debug,router:debug,http:debug,upstream:debug",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.lines().any(|l| l.trim() == "conn_handler: debug"),
        "{stdout}"
    );
    assert!(!stderr.contains("accepted, but"), "{stderr}");
}
