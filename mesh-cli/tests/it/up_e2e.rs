//! End to end, with real processes: `meshctl up --detach` runs the built-in demo (control
//! plane, gateway, two sidecars, two helloworld versions), `status -o json` shows it,
//! `traffic` through the gateway and through a sidecar sees both versions, `apply -f` moves
//! all traffic to one subset, what is killed is started again, and `down` leaves no process
//! behind.
//!
//! Needs `mesh-control`, `mesh-proxy` and `helloworld` built next to `meshctl`
//! (`cargo test --workspace` builds them). The proxies are `mesh-proxy`;
//! `MESH_UP_E2E_PROXY=envoy` runs the same bootstraps with the real Envoy instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mesh_test_util::{MeshCtl, block_until};
use serde_json::Value;

fn meshctl() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshctl"))
}

fn bin_dir() -> PathBuf {
    meshctl().parent().unwrap().to_path_buf()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn missing(name: &str) -> bool {
    !bin_dir().join(name).is_file()
}

fn pid_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

fn traffic(mesh: &MeshCtl, args: &[&str]) -> Value {
    let mut all = vec!["traffic", "-o", "json"];
    all.extend_from_slice(args);
    mesh.json(&all)
}

/// 40 requests through the gateway, retried until all are answered 200 by both versions.
fn both_versions_through_the_gateway(mesh: &MeshCtl) -> Value {
    block_until(Duration::from_secs(30), || {
        let t = traffic(mesh, &["-n", "40"]);
        if t["statuses"]["200"] == 40 && count(&t, "safe") > 0 && count(&t, "risky") > 0 {
            Ok(t)
        } else {
            Err(format!("{t:#}\n{}", mesh.logs()))
        }
    })
    .unwrap()
}

fn count(t: &Value, version: &str) -> u64 {
    t["versions"][version].as_u64().unwrap_or(0)
}

/// GET `path` from a proxy's admin port (HTTP/1.0 style: one request, read to the end).
fn admin_get(admin: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(admin).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Every proxy's bearer token is a credential for the CA: no admin page of any proxy may
/// show any of them (the token files are owner-only; the admin port is not).
fn no_token_on_any_admin_page(mesh: &MeshCtl, status: &Value) {
    let tokens: Vec<String> = std::fs::read_dir(mesh.state_dir().join("tokens"))
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(tokens.len(), 3);
    let mut admins: Vec<String> = status["sidecars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["admin_address"].as_str().unwrap().to_string())
        .collect();
    admins.push(
        status["gateway"]["admin_address"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    for admin in &admins {
        let index = admin_get(admin, "/");
        let pages: Vec<&str> = index
            .lines()
            .filter_map(|l| l.trim().strip_prefix('/').map(|_| l.trim()))
            .filter_map(|l| l.split(':').next())
            .filter(|p| *p != "/quitquitquit")
            .collect();
        assert!(pages.len() >= 8, "admin index of {admin}: {index}");
        let mut pages: Vec<String> = pages.into_iter().map(str::to_string).collect();
        pages.push("/config_dump?include_eds".into());
        for page in &pages {
            let text = admin_get(admin, page);
            assert!(
                text.starts_with("HTTP/1.1 200"),
                "{admin}{page}: {text:.200}"
            );
            for token in &tokens {
                assert!(
                    !text.contains(token.as_str()),
                    "{admin}{page} shows a proxy's token"
                );
            }
        }
        let dump = admin_get(admin, "/config_dump");
        assert!(
            dump.contains("\"initial_metadata\"") && dump.contains("[redacted]"),
            "the ADS credentials are listed, redacted: {admin}"
        );
    }
}

#[test]
fn up_status_traffic_apply_down_with_the_built_in_demo() {
    for bin in ["mesh-control", "helloworld"] {
        if missing(bin) {
            eprintln!(
                "SKIPPED: {bin} is not built in {}; run `cargo build -p mesh-control -p mesh-proxy -p helloworld` first",
                bin_dir().display()
            );
            return;
        }
    }
    let mesh = MeshCtl::new(meshctl());

    // mesh-proxy by default; MESH_UP_E2E_PROXY=envoy runs the same bootstraps with Envoy.
    let proxy = if std::env::var("MESH_UP_E2E_PROXY").is_ok_and(|p| p == "envoy") {
        if mesh_cli::up::process::find_envoy().is_none() {
            eprintln!("SKIPPED: MESH_UP_E2E_PROXY=envoy but there is no Envoy binary");
            return;
        }
        "envoy"
    } else {
        if missing("mesh-proxy") {
            eprintln!(
                "SKIPPED: mesh-proxy is not built in {}",
                bin_dir().display()
            );
            return;
        }
        "mesh"
    };
    let out = mesh.run(&["up", "--detach", "--proxy", proxy, "--timeout", "90"]);
    assert!(
        out.status.success(),
        "up --proxy {proxy} failed:\n{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        mesh.logs()
    );
    eprintln!("local mesh up with {proxy}");
    // The hints name the command that ran (here the binary's path, not a `meshctl` that is
    // not on PATH) and pipe nothing into `down`.
    let printed = String::from_utf8_lossy(&out.stdout);
    let exe = meshctl().display().to_string();
    for hint in ["traffic -n 100", "logs gateway -f", "status", "down"] {
        assert!(
            printed.contains(&format!("  {exe} {hint} ")),
            "{hint}: {printed}"
        );
    }
    assert!(!printed.contains("| meshctl"), "{printed}");
    // Start-up logs: no refused handshake for the port probe, expiry times in RFC 3339.
    let control_log =
        std::fs::read_to_string(mesh.state_dir().join("logs/control-plane.log")).unwrap();
    assert!(
        !control_log.contains("TLS handshake refused"),
        "{control_log}"
    );
    assert!(!control_log.contains("SystemTime"), "{control_log}");
    let expiry = control_log
        .split("not_after=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no not_after: {control_log}"));
    assert!(
        expiry.len() == 20 && expiry.ends_with('Z') && expiry.as_bytes()[10] == b'T',
        "{expiry}"
    );

    // status -o json: what runs where, everything running and SYNCED.
    let status = mesh.json(&["status", "-o", "json"]);
    let expected_proxy = if proxy == "mesh" {
        "mesh-proxy"
    } else {
        "envoy"
    };
    assert_eq!(status["proxy"], expected_proxy);
    let url = status["gateway"]["url"].as_str().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    // Istio's GATEWAY_URL: HOST:PORT.
    assert_eq!(
        status["gateway"]["address"].as_str(),
        url.strip_prefix("http://"),
        "{status:#}"
    );
    let sidecars = status["sidecars"].as_array().unwrap();
    let names: Vec<&str> = sidecars
        .iter()
        .map(|s| s["workload"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["helloworld-safe", "helloworld-risky"]);
    let procs = status["processes"].as_array().unwrap();
    assert_eq!(
        procs.len(),
        1 + 2 + 3,
        "control plane, 2 apps, 3 proxies: {status:#}"
    );
    assert!(procs.iter().all(|p| p["running"] == true), "{status:#}");
    let sync = status["sync"].as_object().unwrap();
    assert_eq!(sync.len(), 3, "{status:#}");
    assert!(sync.values().all(|s| s == "SYNCED"), "{status:#}");
    let table = mesh.ok(&["status"]);
    assert!(
        table.contains(&url) && table.contains("helloworld-risky"),
        "{table}"
    );

    // Identities: the secure port and the CA are shown; the CA lives in the state directory,
    // every proxy has its own owner-only token and bootstrap.
    let secure = status["control_plane"]["secure_xds_address"]
        .as_str()
        .unwrap_or_else(|| panic!("no secure port: {status:#}"));
    assert!(table.contains(&format!("secure {secure}")), "{table}");
    let ca_dir = PathBuf::from(status["identity"]["ca_dir"].as_str().unwrap());
    assert_eq!(ca_dir, mesh.state_dir().join("ca"), "{status:#}");
    assert!(
        table.contains(&format!("CA: {}", ca_dir.display())),
        "{table}"
    );
    assert_eq!(status["identity"]["trust_domain"], "cluster.local");
    assert!(ca_dir.join("root-cert.pem").is_file());
    let tokens = std::fs::read_to_string(ca_dir.join("tokens")).unwrap();
    assert_eq!(tokens.lines().count(), 3, "two sidecars and the gateway");
    for name in [
        "helloworld-safe",
        "helloworld-risky",
        "istio-ingressgateway",
    ] {
        let token_file = mesh.state_dir().join(format!("tokens/{name}.token"));
        let token = std::fs::read_to_string(&token_file).unwrap();
        assert!(tokens.contains(&token), "{name}'s token is known");
        assert_eq!(mode(&token_file), 0o600, "{}", token_file.display());
        let boot = mesh.state_dir().join(format!("bootstrap/{name}.json"));
        assert_eq!(mode(&boot), 0o600, "{}", boot.display());
    }
    assert!(
        tokens.contains(" istio-system istio-ingressgateway-service-account"),
        "{tokens}"
    );
    if proxy == "mesh" {
        no_token_on_any_admin_page(&mesh, &status);
    }

    // Through the gateway: both versions answer /hello (round robin over the two endpoints).
    let t = both_versions_through_the_gateway(&mesh);
    assert_eq!(count(&t, "safe") + count(&t, "risky"), 40, "{t:#}");
    // The gateway logged them, in Envoy's default format; `meshctl logs` reads any process's
    // log by its name, and `-f` follows it.
    let access = mesh.ok(&["logs", "gateway"]);
    assert!(
        access
            .lines()
            .filter(|l| l.contains("\"GET /hello HTTP/1.1\" 200 "))
            .count()
            >= 40,
        "{access}"
    );
    assert_eq!(
        mesh.ok(&["logs", "istio-ingressgateway.istio-system", "--tail", "2"])
            .lines()
            .count(),
        2
    );
    assert!(
        mesh.ok(&["logs", "control-plane"])
            .contains("proxy connected")
    );
    assert!(
        mesh.ok(&["logs", "app/helloworld-safe"])
            .contains("helloworld version=safe")
    );
    let mut follow = mesh
        .command(&["logs", "gateway", "-f", "--tail", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read on a thread, so that a line that never comes fails at the deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let seen = block_until(Duration::from_secs(20), || {
        traffic(&mesh, &["-n", "1", "--path", "/hello?followed"]);
        let line = rx
            .recv_timeout(Duration::from_secs(1))
            .map_err(|e| e.to_string())?;
        line.contains("/hello?followed")
            .then_some(line.clone())
            .ok_or(line)
    })
    .unwrap();
    assert!(seen.contains("\" 200 "), "{seen}");
    follow.kill().ok();
    follow.wait().ok();

    // Through a sidecar's http_proxy listener, as the app itself would call.
    let t = block_until(Duration::from_secs(30), || {
        let t = traffic(&mesh, &["--via", "helloworld-safe", "-n", "40"]);
        if t["statuses"]["200"] == 40 && count(&t, "safe") > 0 && count(&t, "risky") > 0 {
            Ok(t)
        } else {
            Err(format!("{t:#}"))
        }
    })
    .unwrap();
    assert_eq!(t["total"], 40);

    // apply -f: every call from inside the mesh to the `risky` subset.
    let rule = mesh.state_dir().join("all-risky.yaml");
    std::fs::write(
        &rule,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: helloworld-mesh\n  namespace: default\nspec:\n  hosts: [helloworld]\n  http:\n  - route:\n    - destination: {host: helloworld, subset: risky}\n",
    )
    .unwrap();
    // It returns once the proxies the rule affects have acknowledged it, and says which: the
    // very next calls follow it (no retry).
    let applied = mesh.ok(&["apply", "-f", rule.to_str().unwrap()]);
    assert!(applied.contains("helloworld-mesh"), "{applied}");
    assert!(
        applied.contains(
            "acknowledged by 2 proxies: helloworld-risky.default, helloworld-safe.default"
        ),
        "{applied}"
    );
    assert!(
        applied.contains("not affected: istio-ingressgateway.istio-system"),
        "{applied}"
    );
    let t = traffic(&mesh, &["--via", "helloworld-safe", "-n", "30"]);
    assert_eq!(count(&t, "risky"), 30, "{t:#}");
    // The same rule again changes nothing: no proxy to wait for.
    let again = mesh.ok(&["apply", "-f", rule.to_str().unwrap()]);
    assert!(
        again.contains("unchanged") && again.contains("no proxy is affected"),
        "{again}"
    );

    // --wait=false returns once the file is written; `meshctl wait` (istioctl x wait's shape)
    // then waits for the resource, and with no argument for the whole configuration.
    let all_safe = mesh.state_dir().join("all-safe.yaml");
    std::fs::write(
        &all_safe,
        std::fs::read_to_string(&rule)
            .unwrap()
            .replace("subset: risky", "subset: safe"),
    )
    .unwrap();
    let applied = mesh.ok(&["apply", "--wait=false", "-f", all_safe.to_str().unwrap()]);
    assert!(
        applied.contains("configured") && !applied.contains("in force"),
        "{applied}"
    );
    let waited = mesh.ok(&["wait", "virtualservice", "helloworld-mesh.default"]);
    assert!(
        waited.contains("virtualservice/helloworld-mesh (default): in force"),
        "{waited}"
    );
    let t = traffic(&mesh, &["--via", "helloworld-safe", "-n", "30"]);
    assert_eq!(count(&t, "safe"), 30, "{t:#}");
    let waited = mesh.ok(&["wait", "--timeout", "20s"]);
    assert!(waited.contains("in force"), "{waited}");
    // Deleted: `--for delete`, then calls from inside the mesh split again.
    mesh.ok(&[
        "apply",
        "--delete",
        "--wait=false",
        "-f",
        all_safe.to_str().unwrap(),
    ]);
    mesh.ok(&["wait", "--for", "delete", "vs", "helloworld-mesh"]);
    let t = traffic(&mesh, &["--via", "helloworld-safe", "-n", "40"]);
    assert!(count(&t, "safe") > 0 && count(&t, "risky") > 0, "{t:#}");
    // What cannot happen times out, non-zero, naming what it waited for.
    let out = mesh.run(&[
        "wait",
        "--for",
        "delete",
        "vs",
        "helloworld",
        "--timeout",
        "1s",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("timed out after 1s")
            && err.contains("still in force"),
        "{err}"
    );
    let out = mesh.run(&["wait", "vs", "nope"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not in the running mesh's configuration")
    );

    // A bad file is refused with its error, and not copied.
    let bad = mesh.state_dir().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec: {hosts: 3}\n").unwrap();
    let out = mesh.run(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.yaml"));

    // What exits is started again by the `meshctl up` that --detach left supervising, as a
    // Deployment would: the control plane and an app killed, both back with new pids, the
    // proxies SYNCED again with the new control plane, traffic served by both versions.
    let supervisor = status["supervisor_pid"].as_u64().expect("a supervisor pid");
    assert!(pid_alive(supervisor), "{status:#}");
    let pid_of = |status: &Value, name: &str| -> (u64, u64) {
        let p = status["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {status:#}"));
        (p["pid"].as_u64().unwrap(), p["restarts"].as_u64().unwrap())
    };
    let killed = ["control-plane", "app/helloworld-risky"];
    for name in killed {
        let (pid, restarts) = pid_of(&status, name);
        assert_eq!(restarts, 0);
        assert!(
            Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap()
                .success()
        );
    }
    let restarted = block_until(Duration::from_secs(60), || {
        let now = mesh.json(&["status", "-o", "json"]);
        let back = killed.iter().all(|name| {
            let (pid, restarts) = pid_of(&now, name);
            restarts == 1 && pid != pid_of(&status, name).0
        });
        let synced = now["sync"]
            .as_object()
            .is_some_and(|s| s.len() == 3 && s.values().all(|v| v == "SYNCED"));
        let running = now["processes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["running"] == true);
        (back && synced && running)
            .then_some(now.clone())
            .ok_or(format!("{now:#}"))
    })
    .unwrap();
    let table = mesh.ok(&["status"]);
    assert!(table.contains("(restarts 1)"), "{table}");
    assert!(
        mesh.ok(&["logs", "control-plane"])
            .contains("meshctl: control-plane exited (signal: 9 (SIGKILL)); starting it again")
    );
    let t = both_versions_through_the_gateway(&mesh);
    assert_eq!(t["total"], 40);

    // down: every process gone, the supervisor too, the state file removed.
    let mut pids: Vec<u64> = restarted["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    pids.push(supervisor);
    let out = mesh.ok(&["down"]);
    assert!(out.contains("stopped 6 processes"), "{out}");
    block_until(Duration::from_secs(10), || {
        let alive: Vec<&u64> = pids.iter().filter(|p| pid_alive(**p)).collect();
        alive
            .is_empty()
            .then_some(())
            .ok_or(format!("still running: {alive:?}"))
    })
    .unwrap();
    assert!(!mesh.state_dir().join("state.json").exists());
    let out = mesh.run(&["status"]);
    assert!(!out.status.success(), "status with nothing running fails");
}

#[test]
fn a_workload_that_exits_is_reported_with_its_log_and_everything_stops() {
    if missing("mesh-control") {
        eprintln!(
            "SKIPPED: mesh-control is not built in {}",
            bin_dir().display()
        );
        return;
    }
    let proxy = if !missing("mesh-proxy") {
        "mesh"
    } else if mesh_cli::up::process::find_envoy().is_some() {
        "envoy"
    } else {
        eprintln!("SKIPPED: neither mesh-proxy nor Envoy");
        return;
    };
    let mesh = MeshCtl::new(meshctl());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("workloads.yaml"),
        "workloads:\n- name: crasher\n  labels: {app: crasher}\n  service: {name: crasher, port: 8080}\n  command: [sh, -c, \"echo boom-from-app; exit 3\"]\n",
    )
    .unwrap();
    let out = mesh.run(&[
        "up",
        dir.path().to_str().unwrap(),
        "--proxy",
        proxy,
        "--timeout",
        "60",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("app/crasher exited"), "{stderr}");
    assert!(
        stderr.contains("boom-from-app"),
        "the log tail is shown: {stderr}"
    );
    // Nothing stays behind and nothing is recorded as running.
    assert!(!mesh.state_dir().join("state.json").exists());
    let logs = mesh.state_dir().join("logs");
    assert!(logs.join("control-plane.log").is_file());
    let out = Command::new("pgrep")
        .args(["-f", mesh.state_dir().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `meshctl` run with `args`: (exit code, stdout, stderr).
fn outcome(mesh: &MeshCtl, args: &[&str]) -> (Option<i32>, String, String) {
    let out = mesh.run(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(rel)
        .display()
        .to_string()
}

#[test]
fn apply_and_analyze_see_the_running_mesh() {
    for bin in ["mesh-control", "mesh-proxy", "helloworld"] {
        if missing(bin) {
            eprintln!("SKIPPED: {bin} is not built in {}", bin_dir().display());
            return;
        }
    }
    let mesh = MeshCtl::new(meshctl());
    let canary = example("canary/helloworld-mesh.yaml");

    // No mesh yet: the file alone names subsets no DestinationRule defines.
    let (code, stdout, _) = outcome(&mesh, &["analyze", &canary]);
    assert_eq!(code, Some(79), "{stdout}");
    assert!(stdout.contains("IST0101"), "{stdout}");
    mesh.ok(&["up", "--detach", "--timeout", "60"]);

    // With the mesh running, the file is analysed with its configuration (the demo's
    // DestinationRule), and says so.
    let (code, stdout, stderr) = outcome(&mesh, &["analyze", &canary]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("No validation issues found when analyzing")
            && stdout.contains("together with the running local mesh"),
        "{stdout}"
    );
    // --use-mesh=false: the file alone again.
    let (code, stdout, _) = outcome(&mesh, &["analyze", "--use-mesh=false", &canary]);
    assert_eq!(code, Some(79), "{stdout}");
    // No path: the running mesh itself.
    let (code, stdout, _) = outcome(&mesh, &["analyze"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("analyzing the running local mesh"),
        "{stdout}"
    );

    // A route to a subset that does not exist: refused with the analyzer's error, nothing
    // written, traffic unharmed.
    let missing_subset = mesh.state_dir().join("missing-subset.yaml");
    std::fs::write(
        &missing_subset,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: helloworld-mesh\nspec:\n  hosts: [helloworld]\n  http:\n  - route:\n    - destination: {host: helloworld, subset: nope}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = outcome(&mesh, &["apply", "-f", missing_subset.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("Error [IST0101]")
            && stderr.contains("\"helloworld+nope\"")
            && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(!stdout.contains("configured"), "{stdout}");
    let t = traffic(&mesh, &["--via", "helloworld-safe", "-n", "20"]);
    assert_eq!(t["statuses"]["200"], 20, "{t:#}");

    // A misspelt kind is an error too, not a silently skipped document.
    let typo = mesh.state_dir().join("typo.yaml");
    std::fs::write(
        &typo,
        std::fs::read_to_string(&canary)
            .unwrap()
            .replace("kind: VirtualService", "kind: VirtualSevice"),
    )
    .unwrap();
    let (code, _, stderr) = outcome(&mesh, &["apply", "-f", typo.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("unknown kind VirtualSevice") && stderr.contains("IST0106"),
        "{stderr}"
    );
    let (code, stdout, _) = outcome(&mesh, &["analyze", typo.to_str().unwrap()]);
    assert_eq!(code, Some(79), "{stdout}");
    assert!(!stdout.contains("No validation issues"), "{stdout}");

    // A warning is printed and the change applied.
    let unreachable = mesh.state_dir().join("unreachable.yaml");
    std::fs::write(
        &unreachable,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: helloworld-mesh\nspec:\n  hosts: [helloworld]\n  http:\n  - route:\n    - destination: {host: helloworld, subset: safe}\n  - match:\n    - headers: {end-user: {exact: jason}}\n    route:\n    - destination: {host: helloworld, subset: risky}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = outcome(&mesh, &["apply", "-f", unreachable.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stderr.contains("Warning [IST0130]"), "{stderr}");
    assert!(stdout.contains("configured"), "{stdout}");

    // --force applies despite the error; the missing subset then answers 503.
    let (code, stdout, stderr) = outcome(
        &mesh,
        &["apply", "--force", "-f", missing_subset.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("IST0101") && stdout.contains("configured"),
        "{stdout}{stderr}"
    );
    let t = traffic(&mesh, &["--via", "helloworld-safe", "-n", "20"]);
    assert_eq!(t["statuses"]["503"], 20, "{t:#}");
    // Analysing the running mesh now finds it.
    let (code, stdout, _) = outcome(&mesh, &["analyze"]);
    assert_eq!(code, Some(79), "{stdout}");
    assert!(stdout.contains("\"helloworld+nope\""), "{stdout}");
}
