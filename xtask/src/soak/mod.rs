//! `cargo xtask soak --minutes N`: the local mesh (the built-in helloworld demo) under steady
//! mixed traffic and rule changes for N minutes, with the memory, open files and threads of
//! every process sampled over time, to see whether anything grows.
//!
//! ```text
//! cargo build (meshctl, mesh-control, mesh-proxy, helloworld)
//!   -> meshctl up --detach            (temporary MESH_STATE_DIR; `down` on every way out)
//!   -> traffic lanes  (traffic.rs)    gateway h1 / h1 new connections / h2c, sidecars over mTLS
//!      rule changes   (rules.rs)      meshctl apply -f, every few seconds
//!      samples        (sample.rs)     /proc and admin stats of every process, every few seconds
//!   -> meshctl down, logs copied
//!   -> report         (report.rs)     soak.csv, soak.json, soak.md, soak.svg under --out
//! ```
//!
//! Ctrl-C or SIGTERM ends the run early: the report is written for what was measured and the
//! mesh is stopped. The pure parts (plan, parsers, summary, slope, leak verdict, CSV, tables,
//! chart) are unit-tested; the soak itself is a tool and never runs in CI.

pub mod mesh;
pub mod report;
pub mod rules;
pub mod sample;
pub mod traffic;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;

use mesh::{LocalMesh, MeshStatus, Meshctl};
use sample::ProcessSample;
use traffic::{Counters, Lane, LaneCounts};

/// Total requests per second over every lane: steady load, not a benchmark.
pub const DEFAULT_RATE: f64 = 300.0;
pub const DEFAULT_SAMPLE_SECONDS: u64 = 5;
pub const DEFAULT_RULE_SECONDS: u64 = 5;
/// Warm-up left out of the start values and slopes (at most half the run).
pub const DEFAULT_WARMUP_SECONDS: u64 = 60;
/// The binaries the local mesh runs.
pub const MESH_PACKAGES: [&str; 4] = ["mesh-cli", "mesh-control", "mesh-proxy", "helloworld"];
const MESH_BINARIES: [&str; 4] = ["meshctl", "mesh-control", "mesh-proxy", "helloworld"];

#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// How long the traffic runs, in minutes (fractions allowed).
    #[arg(long)]
    minutes: f64,
    /// Output directory (default: <target dir>/soak).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Total requests per second over every lane.
    #[arg(long, default_value_t = DEFAULT_RATE)]
    rate: f64,
    /// Seconds between two samples of every process.
    #[arg(long, default_value_t = DEFAULT_SAMPLE_SECONDS)]
    sample_seconds: u64,
    /// Seconds between two rule changes.
    #[arg(long, default_value_t = DEFAULT_RULE_SECONDS)]
    rule_seconds: u64,
    /// Seconds left out of start values and slopes (default: 60, at most half the run).
    #[arg(long)]
    warmup_seconds: Option<u64>,
    /// Build and run the release binaries (fat LTO: a long build) instead of the debug ones.
    #[arg(long)]
    release: bool,
    /// Run the binaries of this directory as they are, without building.
    #[arg(long, conflicts_with = "release")]
    bin_dir: Option<PathBuf>,
}

/// Where and how a run was made, for the report.
#[derive(Debug, serde::Serialize)]
struct Meta {
    date: String,
    machine: String,
    cpus: usize,
    kernel: String,
    loadavg_before: String,
    loadavg_after: String,
    /// `debug`, `release` or `--bin-dir DIR`.
    binaries: String,
    proxy: String,
    minutes_asked: f64,
    seconds_run: f64,
    interrupted: bool,
    rate: f64,
    sample_seconds: u64,
    rule_seconds: u64,
    warmup_seconds: f64,
}

/// What happened to the rule changes.
#[derive(Debug, Default, Clone, serde::Serialize)]
struct RuleLog {
    files: Vec<PathBuf>,
    applied: u64,
    failed: u64,
    first_error: Option<String>,
}

/// Everything measured while the traffic ran.
struct Recording {
    samples: Vec<ProcessSample>,
    /// (seconds, requests so far, failures so far) at every sample.
    timeline: Vec<(f64, u64, u64)>,
    lanes: BTreeMap<String, LaneCounts>,
    rules: RuleLog,
    seconds: f64,
    interrupted: bool,
}

#[derive(serde::Serialize)]
struct Output<'a> {
    meta: &'a Meta,
    summaries: &'a [report::ProcessSummary],
    lanes: &'a [Lane],
    traffic: &'a BTreeMap<String, LaneCounts>,
    /// `[seconds, requests so far, failures so far]` at every sample.
    traffic_timeline: &'a [(f64, u64, u64)],
    rules: &'a RuleLog,
    /// Node id -> sync state from `meshctl status` at the end of the traffic.
    sync_at_end: &'a BTreeMap<String, String>,
    samples: &'a [ProcessSample],
}

pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !positive(args.minutes) {
        bail!("--minutes {}: must be more than 0", args.minutes);
    }
    if !positive(args.rate) || args.sample_seconds == 0 || args.rule_seconds == 0 {
        bail!("--rate, --sample-seconds and --rule-seconds must be more than 0");
    }
    let (workspace, target, out) = directories(args.out.as_deref(), "soak")?;
    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    let warmup_s = args
        .warmup_seconds
        .map_or(DEFAULT_WARMUP_SECONDS as f64, |w| w as f64)
        .min(duration.as_secs_f64() / 2.0);

    let (bin_dir, binaries) = binaries(
        "soak",
        args.release,
        args.bin_dir.as_deref(),
        &workspace,
        &target,
    )?;
    let loadavg_before = crate::bench::loadavg();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    // Signals are caught from here on, so Ctrl-C ends the run through the code below (which
    // stops the mesh) instead of killing this process and leaving the mesh running.
    let stop = runtime.block_on(stop_on_signal())?;

    let mesh = LocalMesh::up(bin_dir.join("meshctl"), bin_dir.clone())?;
    if *stop.borrow() {
        bail!("interrupted while the mesh started");
    }
    let status = mesh.ctl.status()?;
    println!(
        "soak: mesh up ({}): {} processes; gateway {}",
        status.proxy,
        status.processes.len(),
        status.gateway_http()?
    );
    let rule_files = rules::write_steps(&workspace, &out.join("rules"))?;
    let lanes = traffic::plan_for(args.rate, &status)?;
    for lane in &lanes {
        println!(
            "soak: lane {:<45} {:>6.1} req/s to {}",
            lane.name, lane.rate, lane.addr
        );
    }
    println!(
        "soak: {} of traffic, a rule change every {} s ({}), a sample every {} s, warm-up {}",
        report::clock(duration.as_secs_f64()),
        args.rule_seconds,
        rule_files
            .iter()
            .map(|f| f.file_name().unwrap_or_default().to_string_lossy())
            .collect::<Vec<_>>()
            .join(" <-> "),
        args.sample_seconds,
        report::clock(warmup_s)
    );

    let plan = Plan {
        duration,
        sample_every: Duration::from_secs(args.sample_seconds),
        rule_every: Duration::from_secs(args.rule_seconds),
        rule_files,
    };
    let recording = runtime.block_on(drive(&plan, &lanes, &mesh.ctl, &status, stop));
    let sync_at_end = mesh.ctl.status().map(|s| s.sync).unwrap_or_default();
    mesh.stop_keeping_logs("soak", &out.join("logs"));
    runtime.shutdown_timeout(Duration::from_secs(2));

    let meta = Meta {
        date: crate::bench::command_text("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine: crate::bench::cpu_model(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        loadavg_before,
        loadavg_after: crate::bench::loadavg(),
        binaries,
        proxy: status.proxy.clone(),
        minutes_asked: args.minutes,
        seconds_run: recording.seconds,
        interrupted: recording.interrupted,
        rate: args.rate,
        sample_seconds: args.sample_seconds,
        rule_seconds: args.rule_seconds,
        warmup_seconds: warmup_s,
    };
    write_report(&out, &meta, &lanes, &recording, &sync_at_end, warmup_s)?;
    if recording.interrupted {
        bail!("interrupted after {}", report::clock(recording.seconds));
    }
    Ok(())
}

/// The workspace, cargo's target directory and the output directory (`out`, else
/// `<target>/<name>`), created.
pub fn directories(out: Option<&Path>, name: &str) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the workspace")?
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let out = out.map_or_else(|| target.join(name), Path::to_path_buf);
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    Ok((workspace, target, out))
}

/// The binaries' directory, built with cargo unless `--bin-dir` is given, and how they were made.
pub fn binaries(
    label: &str,
    release: bool,
    bin_dir: Option<&Path>,
    workspace: &Path,
    target: &Path,
) -> anyhow::Result<(PathBuf, String)> {
    let (dir, how) = match bin_dir {
        Some(dir) => (dir.to_path_buf(), format!("--bin-dir {}", dir.display())),
        None => {
            let profile = if release { "release" } else { "debug" };
            // The target directory is cargo's own (or the inherited CARGO_TARGET_DIR): naming
            // it again by another path would rebuild every crate with a build script. The
            // variables `cargo run` set for xtask are removed: ring's build script reruns when
            // CARGO_PKG_NAME changes, and the next plain `cargo build` would rebuild it again.
            let mut cmd = Command::new(env!("CARGO"));
            cmd.current_dir(workspace).arg("build");
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                if name.starts_with("CARGO_PKG_")
                    || name.starts_with("CARGO_MANIFEST_")
                    || [
                        "CARGO_CRATE_NAME",
                        "CARGO_BIN_NAME",
                        "CARGO_PRIMARY_PACKAGE",
                    ]
                    .contains(&name.as_ref())
                {
                    cmd.env_remove(name.as_ref());
                }
            }
            if release {
                cmd.arg("--release");
            }
            for p in MESH_PACKAGES {
                cmd.args(["-p", p]);
            }
            println!(
                "{label}: cargo build{} -p {}",
                if release { " --release" } else { "" },
                MESH_PACKAGES.join(" -p ")
            );
            let status = cmd.status().context("run cargo build")?;
            if !status.success() {
                bail!("cargo build of the mesh's binaries failed: {status}");
            }
            (target.join(profile), profile.to_string())
        }
    };
    for bin in MESH_BINARIES {
        if !dir.join(bin).is_file() {
            bail!("{} has no {bin}", dir.display());
        }
    }
    Ok((dir, how))
}

/// A receiver that turns true on the first SIGINT or SIGTERM. The handlers are installed
/// before this returns.
pub async fn stop_on_signal() -> anyhow::Result<watch::Receiver<bool>> {
    let mut interrupt = signal(SignalKind::interrupt()).context("catch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("catch SIGTERM")?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        eprintln!("xtask: {name}: stopping the traffic, writing the report, stopping the mesh");
        let _ = tx.send(true);
    });
    Ok(rx)
}

struct Plan {
    duration: Duration,
    sample_every: Duration,
    rule_every: Duration,
    rule_files: Vec<PathBuf>,
}

/// Runs the traffic, the rule changes and the samples until the plan's duration has passed or
/// a signal came.
async fn drive(
    plan: &Plan,
    lanes: &[Lane],
    ctl: &Meshctl,
    status: &MeshStatus,
    mut stop: watch::Receiver<bool>,
) -> Recording {
    let counters = Arc::new(Counters::default());
    let rules = Arc::new(Mutex::new(RuleLog {
        files: plan.rule_files.clone(),
        ..Default::default()
    }));
    // Before any traffic: the idle mesh.
    let mut samples = sample::sample_all(status, 0.0).await;
    let mut timeline = vec![(0.0, 0, 0)];

    let started = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    traffic::spawn(lanes, &counters, &mut tasks);
    tasks.spawn(change_rules(
        ctl.clone(),
        plan.rule_files.clone(),
        plan.rule_every,
        rules.clone(),
    ));
    let mut tick = tokio::time::interval_at(started + plan.sample_every, plan.sample_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_report = Instant::now();
    let interrupted = loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => break true,
        }
        let t = started.elapsed().as_secs_f64();
        let now = sample::sample_all(status, t).await;
        let (requests, failures) = counters.totals();
        timeline.push((t, requests, failures));
        if last_report.elapsed() >= Duration::from_secs(60) || started.elapsed() >= plan.duration {
            last_report = Instant::now();
            progress(t, plan.duration, requests, failures, &now, &rules);
        }
        samples.extend(now);
        if started.elapsed() >= plan.duration {
            break false;
        }
    };
    tasks.shutdown().await;
    let rules = rules
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Recording {
        samples,
        timeline,
        lanes: counters.snapshot(),
        rules,
        seconds: started.elapsed().as_secs_f64(),
        interrupted,
    }
}

fn progress(
    t: f64,
    duration: Duration,
    requests: u64,
    failures: u64,
    now: &[ProcessSample],
    rules: &Mutex<RuleLog>,
) {
    let rss: Vec<String> = now
        .iter()
        .map(|s| match s.rss_kib {
            Some(k) if s.alive => format!("{} {:.1}", s.process, k as f64 / 1024.0),
            _ => format!("{} GONE", s.process),
        })
        .collect();
    let applied = rules
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .applied;
    println!(
        "soak: {}/{}  requests {requests} ({:.0}/s)  failures {failures}  rule changes {applied}  RSS MiB: {}",
        report::clock(t),
        report::clock(duration.as_secs_f64()),
        requests as f64 / t.max(1e-9),
        rss.join(", ")
    );
}

/// Applies the rule files in turn, one every `every`, until aborted.
async fn change_rules(
    ctl: Meshctl,
    files: Vec<PathBuf>,
    every: Duration,
    log: Arc<Mutex<RuleLog>>,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for file in files.iter().cycle() {
        tick.tick().await;
        let result = ctl.apply(file).await;
        let mut log = log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(_) => log.applied += 1,
            Err(e) => {
                log.failed += 1;
                if log.first_error.is_none() {
                    eprintln!("soak: rule change failed (counted, going on): {e:#}");
                    log.first_error = Some(format!("{e:#}"));
                }
            }
        }
    }
}

fn write_report(
    out: &Path,
    meta: &Meta,
    lanes: &[Lane],
    rec: &Recording,
    sync_at_end: &BTreeMap<String, String>,
    warmup_s: f64,
) -> anyhow::Result<()> {
    let summaries = report::summarize(&rec.samples, warmup_s);
    let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    };
    write("soak.csv", &report::csv(&rec.samples))?;
    let output = Output {
        meta,
        summaries: &summaries,
        lanes,
        traffic: &rec.lanes,
        traffic_timeline: &rec.timeline,
        rules: &rec.rules,
        sync_at_end,
        samples: &rec.samples,
    };
    write("soak.json", &serde_json::to_string_pretty(&output)?)?;
    let title = format!(
        "Soak: the local mesh under {:.0} req/s of mixed traffic, a rule change every {} s",
        meta.rate, meta.rule_seconds
    );
    let subtitle = format!(
        "meshctl up (built-in demo), {} {}, {} on {} ({} CPUs); {} traffic; shaded: warm-up",
        meta.binaries,
        meta.proxy,
        meta.date,
        meta.machine,
        meta.cpus,
        report::clock(rec.seconds)
    );
    write(
        "soak.svg",
        &report::svg(&rec.samples, warmup_s, &title, &subtitle),
    )?;

    let (requests, failures) = rec
        .lanes
        .values()
        .fold((0, 0), |(r, f), c| (r + c.requests, f + c.failures()));
    let flagged: Vec<String> = summaries
        .iter()
        .flat_map(|s| {
            s.flags()
                .into_iter()
                .map(move |f| format!("{}: {f}", s.process))
        })
        .collect();
    let not_synced: Vec<&String> = sync_at_end
        .iter()
        .filter(|(_, s)| *s != "SYNCED")
        .map(|(n, _)| n)
        .collect();
    let mut md = String::new();
    let _ = std::fmt::Write::write_fmt(
        &mut md,
        format_args!(
            "# Soak: {} of the local mesh\n\n\
             {} on {} ({} CPUs, kernel {}), load average before {} / after {}; {} binaries, \
             proxies {}; {:.0} req/s asked over {} lanes; a rule change every {} s ({} applied, {} failed); \
             a sample every {} s; start values and slopes after a warm-up of {}{}.\n\n\
             ## Processes\n\n{}\n\
             RSS and fds at the start (after warm-up), at the end, their largest value and their \
             least-squares slope after warm-up (per 10 minutes; in parentheses as a share of the \
             start value); RSS peak: the largest of the whole run, start-up included. A figure growing by more than {} % per \
             10 minutes, on a line that fits (R² ≥ {}), by at least {} MiB of RSS or {} fds, is \
             flagged as a possible leak.\n\n\
             ## Traffic\n\n{}\n\
             {} requests, {} failed (transport errors and non-2xx answers). Proxies in sync at the end: {}.\n\n\
             {}\n",
            report::clock(rec.seconds),
            meta.date,
            meta.machine,
            meta.cpus,
            meta.kernel,
            meta.loadavg_before,
            meta.loadavg_after,
            meta.binaries,
            meta.proxy,
            meta.rate,
            lanes.len(),
            meta.rule_seconds,
            rec.rules.applied,
            rec.rules.failed,
            meta.sample_seconds,
            report::clock(warmup_s),
            if rec.interrupted {
                " (interrupted early)"
            } else {
                ""
            },
            report::table(&summaries),
            report::LEAK_PCT_PER_10_MIN,
            report::STEADY_R2,
            report::MIN_RSS_GROWTH_KIB / 1024.0,
            report::MIN_FD_GROWTH,
            report::traffic_table(&rec.lanes, rec.seconds),
            requests,
            failures,
            if not_synced.is_empty() && !sync_at_end.is_empty() {
                "every proxy SYNCED".to_string()
            } else if sync_at_end.is_empty() {
                "unknown (status failed)".to_string()
            } else {
                format!(
                    "NOT SYNCED: {}",
                    not_synced
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            if !flagged.is_empty() {
                format!(
                    "**Flagged:**\n\n{}",
                    flagged
                        .iter()
                        .map(|f| format!("- {f}\n"))
                        .collect::<String>()
                )
            } else if summaries.iter().any(|s| !s.judged()) {
                format!(
                    "Nothing judged: less than {} after warm-up.",
                    report::clock(report::MIN_VERDICT_WINDOW_S)
                )
            } else {
                "Nothing flagged: no process grew steadily after warm-up.".to_string()
            },
        ),
    );
    let md_path = write("soak.md", &md)?;
    println!("\n{md}");
    println!(
        "soak: wrote {} and soak.csv, soak.json, soak.svg, logs/ beside it",
        md_path.display()
    );
    Ok(())
}
