//! `cargo xtask bench`: mesh-proxy against Envoy, side by side, from the same bootstrap files.
//!
//! For each case (see [`cases`]) and each repetition the bench starts nginx's upstream once,
//! then Envoy and mesh-proxy in turn (one worker each, `--concurrency 1` for both; pinned with
//! the upstream to CPU 0 while the load generator gets CPU 1), and measures:
//! - max throughput at a fixed connection count (wrk), with proxy CPU from `/proc/PID/stat`;
//! - latency percentiles at a fixed moderate rate (oha with latency correction), or, when oha
//!   is not installed and `--quick` is given, wrk's percentiles over one closed-loop connection;
//! - proxy RSS after the runs.
//!
//! It writes a table (terminal and `bench.md`), `bench.json` and `bench.svg` under `--out`.
//! The pure parts (bootstraps, parsers, statistics, table, chart) are unit-tested; the bench
//! itself is a tool and never runs in CI.

pub mod cases;
pub mod certs;
pub mod parse;
pub mod report;
pub mod stats;
pub mod tools;

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::procfs;
use cases::{ALL_CASES, Case, Ports};
use parse::LoadResult;
use report::{Proxy, Sample};
use tools::Tool;

/// Connections of the max-throughput run.
pub const DEFAULT_CONNECTIONS: usize = 32;
/// Request rate of the latency run (req/s), moderate for one worker.
pub const DEFAULT_RATE: u32 = 1000;
/// oha connections for the fixed-rate run: enough that a slow answer does not hold the rate.
pub const OHA_CONNECTIONS: usize = 16;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Short runs, one repetition; falls back to wrk latency when oha is not installed.
    #[arg(long)]
    quick: bool,
    /// Cases to run, comma separated (default: all):
    /// direct,hop1,hop2,hop2-mtls,http2,routes-1000. `direct` is always added to proxy cases.
    #[arg(long, value_delimiter = ',')]
    cases: Vec<Case>,
    /// Output directory (default: <target dir>/bench).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Repetitions (default: 1 with --quick, else 3).
    #[arg(long)]
    reps: Option<usize>,
    /// Connections of the max-throughput run.
    #[arg(long, default_value_t = DEFAULT_CONNECTIONS)]
    connections: usize,
    /// Request rate of the latency run (with oha).
    #[arg(long, default_value_t = DEFAULT_RATE)]
    rate: u32,
    /// Envoy binary to use instead of the bench's own install.
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// mesh-proxy binary to use instead of building it in release.
    #[arg(long)]
    mesh_proxy: Option<PathBuf>,
    /// Never `cargo install oha`; measure latency with wrk when it is missing.
    #[arg(long)]
    no_oha_install: bool,
}

/// Durations of one run's phases.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Timing {
    warmup_s: u64,
    throughput_s: u64,
    latency_s: u64,
}

#[derive(Debug, serde::Serialize)]
struct Meta {
    date: String,
    machine: String,
    cpus: usize,
    kernel: String,
    loadavg_before: String,
    loadavg_after: String,
    quick: bool,
    reps: usize,
    connections: usize,
    rate: u32,
    timing: Timing,
    pinned: bool,
    latency_source: String,
    envoy: Tool,
    mesh_proxy: Tool,
    wrk: Tool,
    oha: Option<Tool>,
    nginx: Tool,
}

#[derive(Debug, serde::Serialize)]
struct Output<'a> {
    meta: &'a Meta,
    rows: &'a [report::Row],
    comparisons: &'a [report::Comparison],
    samples: &'a [Sample],
}

/// Everything a run needs, found once.
struct Bench {
    envoy: Tool,
    mesh: Tool,
    wrk: Tool,
    oha: Option<Tool>,
    out: PathBuf,
    timing: Timing,
    connections: usize,
    rate: u32,
    pinned: bool,
    clock_ticks: u64,
    upstream: [u16; 2],
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let out = args.out.clone().unwrap_or_else(|| target.join("bench"));
    let tools_dir = target.join("bench-tools");
    std::fs::create_dir_all(out.join("logs"))
        .with_context(|| format!("create {}", out.display()))?;
    std::fs::create_dir_all(&tools_dir)?;
    let cases = cases_to_run(&args.cases);
    if !args.cases.is_empty()
        && !args.cases.contains(&Case::Direct)
        && cases.contains(&Case::Direct)
    {
        println!("bench: adding case direct: added latency is measured over it");
    }
    for case in cases.iter().filter(|c| c.needs_certificates()) {
        let dir = out.join("cases").join(case.name());
        certs::write_identities(&dir)
            .with_context(|| format!("{}: workload certificates", case.name()))?;
        println!(
            "bench: {}: SPIFFE certificates from a fresh mesh CA in {}",
            case.name(),
            dir.join("certs").display()
        );
    }
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let timing = if args.quick {
        Timing {
            warmup_s: 1,
            throughput_s: 3,
            latency_s: 3,
        }
    } else {
        Timing {
            warmup_s: 2,
            throughput_s: 8,
            latency_s: 10,
        }
    };

    let envoy = tools::envoy(&tools_dir, args.envoy.as_deref())?;
    println!(
        "bench: envoy {} ({}): {}",
        envoy.path.display(),
        envoy.source,
        envoy.version
    );
    let mesh = tools::mesh_proxy(&workspace, &target, args.mesh_proxy.as_deref())?;
    println!(
        "bench: mesh-proxy {} ({})",
        mesh.path.display(),
        mesh.source
    );
    let wrk = tools::debian("wrk", "wrk", "--version")?;
    let nginx = tools::debian("nginx", "nginx-light", "-v")?;
    let oha = tools::oha(&tools_dir, !args.quick && !args.no_oha_install)?;
    let latency_source = match &oha {
        Some(_) => format!(
            "oha at {} req/s, {OHA_CONNECTIONS} connections, latency correction",
            args.rate
        ),
        None => "wrk, 1 closed-loop connection (oha not installed: no fixed rate, no latency correction)"
            .to_string(),
    };
    println!("bench: latency from {latency_source}");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cpus >= 2;
    let clock_ticks = clock_ticks();
    let loadavg_before = loadavg();
    println!("bench: load average {loadavg_before}");

    // One upstream for the whole bench, the same for every case and proxy.
    let upstream_dir = out.join("nginx");
    std::fs::create_dir_all(upstream_dir.join("tmp"))?;
    let upstream = free_ports::<2>()?;
    let conf = upstream_dir.join("nginx.conf");
    std::fs::write(&conf, tools::nginx_conf(&upstream_dir, upstream))?;
    let mut upstream_proc = Procs::default();
    let mut cmd = pin(pinned, 0, &nginx.path);
    cmd.arg("-p").arg(&upstream_dir).arg("-c").arg(&conf);
    upstream_proc.spawn("nginx", cmd, &out.join("logs/nginx.log"))?;
    wait_http(upstream[0], "bench.local", &mut upstream_proc)?;
    wait_http(upstream[1], "bench.local", &mut upstream_proc)?;

    let bench = Bench {
        envoy: envoy.clone(),
        mesh: mesh.clone(),
        wrk: wrk.clone(),
        oha: oha.clone(),
        out: out.clone(),
        timing,
        connections: args.connections,
        rate: args.rate,
        pinned,
        clock_ticks,
        upstream,
    };
    let mut samples = Vec::new();
    for rep in 0..reps {
        for &case in &cases {
            let proxies: &[Proxy] = if case.has_proxy() {
                &[Proxy::Envoy, Proxy::Mesh]
            } else {
                &[Proxy::None]
            };
            for &proxy in proxies {
                print!(
                    "bench: rep {}/{reps} {:<12} {:<10} ",
                    rep + 1,
                    case.name(),
                    proxy.name()
                );
                std::io::stdout().flush()?;
                let sample = bench
                    .run_one(case, proxy, rep)
                    .with_context(|| format!("{} under {}", case.name(), proxy.name()))?;
                println!(
                    "{:>8.0} req/s  p50 {:>6.0} µs  cpu {} µs/req  errors {}{}",
                    sample.throughput.rps,
                    sample.latency.p50_us,
                    sample
                        .cpu_us_per_req
                        .map_or("-".into(), |c| format!("{c:.1}")),
                    sample.throughput.errors + sample.latency.errors,
                    report::connections_cell(sample.front_upstream_cx, sample.front_tls_handshakes)
                        .map_or(String::new(), |c| format!("  upstream cx {c}"))
                );
                samples.push(sample);
            }
        }
    }
    drop(upstream_proc);

    let rows = report::summarize(&cases, &samples);
    let comparisons = report::compare(&rows);
    let meta = Meta {
        date: command_text("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine: cpu_model(),
        cpus,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        loadavg_before,
        loadavg_after: loadavg(),
        quick: args.quick,
        reps,
        connections: args.connections,
        rate: args.rate,
        timing,
        pinned,
        latency_source: latency_source.clone(),
        envoy,
        mesh_proxy: mesh,
        wrk,
        oha,
        nginx,
    };
    let table = report::table(&rows, &comparisons, &latency_source);
    let header = format!(
        "{} on {} ({} CPUs), load average before {} / after {}; {}{} rep(s), {} connections for req/s, upstream nginx; proxies and upstream on CPU 0, load generator on CPU 1.\n\n",
        meta.date,
        meta.machine,
        meta.cpus,
        meta.loadavg_before,
        meta.loadavg_after,
        if args.quick { "--quick, " } else { "" },
        reps,
        args.connections
    );
    println!("\n{header}{table}");
    std::fs::write(out.join("bench.md"), format!("{header}{table}"))?;
    let json = serde_json::to_string_pretty(&Output {
        meta: &meta,
        rows: &rows,
        comparisons: &comparisons,
        samples: &samples,
    })?;
    std::fs::write(out.join("bench.json"), json)?;
    let title = format!(
        "mesh-proxy vs Envoy {} — {}{}, load avg {}",
        tools::ENVOY_VERSION,
        meta.date,
        if args.quick { " (--quick)" } else { "" },
        meta.loadavg_before
    );
    std::fs::write(
        out.join("bench.svg"),
        report::svg(&rows, &comparisons, &title),
    )?;
    println!(
        "bench: wrote {}/bench.{{md,json,svg}} in {:.0} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

impl Bench {
    fn run_one(&self, case: Case, proxy: Proxy, rep: usize) -> anyhow::Result<Sample> {
        let [front, back, admin_front, admin_back] = free_ports::<4>()?;
        let ports = Ports {
            upstream: self.upstream,
            front,
            back,
            admin_front,
            admin_back,
        };
        let dir = self.out.join("cases").join(case.name());
        std::fs::create_dir_all(&dir)?;
        let mut procs = Procs::default();
        for b in cases::bootstraps(case, &ports, &dir) {
            // The same file for both proxies: written once per run, read by whichever starts.
            let file = dir.join(format!("{}.yaml", b.role));
            std::fs::write(&file, &b.yaml)?;
            let log = self.out.join("logs").join(format!(
                "{}-{}-{}-{rep}.log",
                case.name(),
                b.role,
                proxy.name()
            ));
            let cmd = match proxy {
                Proxy::Envoy => {
                    let mut c = pin(self.pinned, 0, &self.envoy.path);
                    c.arg("-c").arg(&file).args([
                        "--concurrency",
                        "1",
                        "--disable-hot-restart",
                        "-l",
                        "error",
                    ]);
                    c
                }
                Proxy::Mesh => {
                    let mut c = pin(self.pinned, 0, &self.mesh.path);
                    c.arg("-c")
                        .arg(&file)
                        .args(["--concurrency", "1", "-l", "error"]);
                    c
                }
                Proxy::None => bail!("{} needs a proxy", case.name()),
            };
            procs.spawn(b.role, cmd, &log)?;
        }
        let port = cases::target_port(case, &ports);
        let host = case.host();
        wait_http(port, &host, &mut procs)?;
        let pids = procs.pids();

        let url = format!("http://127.0.0.1:{port}/");
        self.wrk(&url, &host, self.connections, self.timing.warmup_s)?;
        let cpu0 = cpu_ticks(&pids)?;
        let throughput = self.wrk(&url, &host, self.connections, self.timing.throughput_s)?;
        let cpu1 = cpu_ticks(&pids)?;
        let latency = match &self.oha {
            Some(oha) => self.oha(oha, &url, &host)?,
            None => self.wrk(&url, &host, 1, self.timing.latency_s)?,
        };
        let cpu2 = cpu_ticks(&pids)?;
        procs.check_alive()?;
        // Connections the front proxy opened over the whole run (warm-up included): about the
        // load generator's connection count when they are kept alive, one per request if not.
        let (front_upstream_cx, front_tls_handshakes, front_tls_session) =
            match cases::front_cluster(case) {
                Some(cluster) => {
                    let page = http_get(ports.admin_front, "/stats")
                        .with_context(|| format!("{} admin /stats", proxy.name()))?;
                    // Kept for reading afterwards (e.g. Envoy's ssl.versions / ssl.ciphers).
                    let file = self.out.join("logs").join(format!(
                        "{}-front-{}-{rep}.stats",
                        case.name(),
                        proxy.name()
                    ));
                    std::fs::write(&file, &page)
                        .with_context(|| format!("write {}", file.display()))?;
                    (
                        parse::stat_value(&page, &format!("cluster.{cluster}.upstream_cx_total")),
                        parse::stat_value(&page, &format!("cluster.{cluster}.ssl.handshake")),
                        parse::tls_session(&page, &cluster),
                    )
                }
                None => (None, None, None),
            };
        let rss_kib = if pids.is_empty() {
            None
        } else {
            let mut sum = 0;
            for &pid in &pids {
                sum += procfs::read_rss_kib(pid).map_err(anyhow::Error::msg)?;
            }
            Some(sum)
        };
        let per_req = |ticks: u64, reqs: u64| {
            (!pids.is_empty())
                .then(|| stats::cpu_us_per_request(ticks, self.clock_ticks, reqs))
                .flatten()
        };
        Ok(Sample {
            case,
            proxy,
            rep,
            cpu_us_per_req: per_req(cpu1 - cpu0, throughput.requests),
            cpu_us_per_req_latency_run: per_req(cpu2 - cpu1, latency.requests),
            throughput,
            latency,
            rss_kib,
            front_upstream_cx,
            front_tls_handshakes,
            front_tls_session,
        })
    }

    fn wrk(&self, url: &str, host: &str, conns: usize, secs: u64) -> anyhow::Result<LoadResult> {
        let script = self.out.join("bench.lua");
        if !script.is_file() {
            std::fs::write(&script, parse::WRK_SCRIPT)?;
        }
        let mut cmd = pin(self.pinned, 1, &self.wrk.path);
        cmd.args([
            "-t1",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--timeout",
            "5s",
        ])
        .arg("-s")
        .arg(&script)
        .args(["-H", &format!("Host: {host}"), url]);
        let out = cmd.output().context("run wrk")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "wrk failed: {}\n{text}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        parse::parse_wrk(&text).map_err(anyhow::Error::msg)
    }

    fn oha(&self, oha: &Tool, url: &str, host: &str) -> anyhow::Result<LoadResult> {
        let mut cmd = pin(self.pinned, 1, &oha.path);
        cmd.args([
            "--no-tui",
            "--output-format",
            "json",
            "--latency-correction",
            "-w",
            "-z",
            &format!("{}s", self.timing.latency_s),
            "-q",
            &self.rate.to_string(),
            "-c",
            &OHA_CONNECTIONS.to_string(),
            "-H",
            &format!("Host: {host}"),
            url,
        ]);
        let out = cmd.output().context("run oha")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "oha failed: {}\n{text}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        parse::parse_oha(&text).map_err(anyhow::Error::msg)
    }
}

/// The cases asked for (all when none), each once, with `direct` first whenever a proxy case
/// runs: every "added latency" figure is measured over it.
fn cases_to_run(asked: &[Case]) -> Vec<Case> {
    let asked = if asked.is_empty() {
        &ALL_CASES[..]
    } else {
        asked
    };
    let mut cases = Vec::new();
    if asked.iter().any(|c| c.has_proxy()) {
        cases.push(Case::Direct);
    }
    for &case in asked {
        if !cases.contains(&case) {
            cases.push(case);
        }
    }
    cases
}

/// `taskset -c CPU program` when pinning, else the program alone.
fn pin(pinned: bool, cpu: usize, program: &Path) -> Command {
    if pinned {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(cpu.to_string()).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Child processes killed (and reaped) on drop, so an error never leaves a proxy running.
#[derive(Default)]
struct Procs {
    children: Vec<(String, Child, PathBuf)>,
}

impl Procs {
    fn spawn(&mut self, name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<()> {
        let file = File::create(log).with_context(|| format!("create {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {name}: {cmd:?}"))?;
        self.children
            .push((name.to_string(), child, log.to_path_buf()));
        Ok(())
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(_, c, _)| c.id()).collect()
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, child, log) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                let text = std::fs::read_to_string(&*log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                bail!(
                    "{name} exited ({status}); last lines of {}:\n{}",
                    log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        Ok(())
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn cpu_ticks(pids: &[u32]) -> anyhow::Result<u64> {
    let mut sum = 0;
    for &pid in pids {
        sum += procfs::read_cpu_ticks(pid).map_err(anyhow::Error::msg)?;
    }
    Ok(sum)
}

/// N distinct free ports: all bound at once, then released for the processes to take.
fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .context("bind a free port")?;
    let mut ports = [0; N];
    for (p, l) in ports.iter_mut().zip(&listeners) {
        *p = l.local_addr()?.port();
    }
    Ok(ports)
}

/// Waits until `GET /` on the port answers 200, failing early when a process exits.
fn wait_http(port: u16, host: &str, procs: &mut Procs) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        procs.check_alive()?;
        match get_status(port, host) {
            Ok(200) => return Ok(()),
            Ok(code) => last = format!("status {code}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("127.0.0.1:{port} not answering 200 within 30 s: {last}")
}

/// The body of `GET path` on a local admin port (`Connection: close`, read to the end).
fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP head in the answer to {path}"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

fn get_status(port: u16, host: &str) -> anyhow::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    let text = String::from_utf8_lossy(&head);
    text.get(9..12)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP status line: {text:?}"))
}

fn clock_ticks() -> u64 {
    command_text("getconf", &["CLK_TCK"]).parse().unwrap_or(100)
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

pub(crate) fn command_text(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_runs_first_whenever_a_proxy_case_runs() {
        assert_eq!(cases_to_run(&[]), ALL_CASES.to_vec());
        assert_eq!(
            cases_to_run(&[Case::Hop1, Case::Hop2, Case::Hop2Mtls, Case::Hop1]),
            [Case::Direct, Case::Hop1, Case::Hop2, Case::Hop2Mtls]
        );
        assert_eq!(
            cases_to_run(&[Case::Hop2, Case::Direct]),
            [Case::Direct, Case::Hop2]
        );
        assert_eq!(cases_to_run(&[Case::Direct]), [Case::Direct]);
    }
}
