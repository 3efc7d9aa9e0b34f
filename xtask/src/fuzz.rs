//! `cargo xtask fuzz`: builds the libFuzzer entry points of `fuzz/` and runs
//! each target for a while, starting from its committed seeds.
//!
//! The build is what `cargo fuzz build --sanitizer none` does (the same
//! sanitizer-coverage flags, `--cfg fuzzing`, debug assertions, an explicit
//! `--target` so that build scripts and proc macros stay uninstrumented),
//! on the stable toolchain, which accepts every one of those flags; only
//! AddressSanitizer (`-Zsanitizer=address`) would need nightly, and the
//! targets are safe Rust. Unlike `cargo fuzz` it does not force one codegen
//! unit, which makes the first build of the proxy's dependencies several
//! minutes shorter, and it needs nothing installed: libfuzzer-sys compiles
//! libFuzzer itself. `cargo fuzz run` works on the same crate for those who
//! have it (docs/fuzzing.md).
//!
//! Each run reads `fuzz/seeds/NAME` and grows `fuzz/corpus/NAME` (not
//! committed); a crash is written to `fuzz/artifacts/NAME/` and the
//! command fails, naming it. libFuzzer's output goes to
//! `fuzz/artifacts/NAME.log`; the command prints one line per target.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};

/// Seconds each target runs unless told.
pub const DEFAULT_SECONDS: u64 = 10;
/// One input that takes longer than this is a finding (a hang).
pub const DEFAULT_INPUT_TIMEOUT_SECS: u64 = 10;

/// `cargo fuzz build -s none`'s flags (cargo-fuzz 0.13), less its
/// `-Ccodegen-units=1`.
const RUSTFLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg",
    "fuzzing",
    "-Cllvm-args=-simplifycfg-branch-fold-threshold=0",
    "-Cllvm-args=-sanitizer-coverage-stack-depth",
    "-Cdebug-assertions",
];

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Seconds each target runs.
    #[arg(long, default_value_t = DEFAULT_SECONDS)]
    seconds: u64,
    /// Targets to run, repeated or comma separated (default: all of fuzz/Cargo.toml).
    #[arg(long = "target", value_delimiter = ',')]
    targets: Vec<String>,
    /// Build the targets and stop.
    #[arg(long)]
    build_only: bool,
    /// Seconds one input may take before it counts as a hang.
    #[arg(long, default_value_t = DEFAULT_INPUT_TIMEOUT_SECS)]
    input_timeout: u64,
    /// More libFuzzer flags, after `--` (`-- -max_len=65536 -dict=FILE`).
    #[arg(last = true)]
    libfuzzer_args: Vec<String>,
}

/// What one run of one target did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    pub executions: u64,
    pub execs_per_sec: u64,
    pub new_units: u64,
    pub peak_rss_mb: u64,
    /// The input libFuzzer wrote for a crash, hang or OOM.
    pub artifact: Option<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

pub fn run(args: FuzzArgs) -> anyhow::Result<()> {
    let fuzz_dir = root().join("fuzz");
    let manifest = fuzz_dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("read {}", manifest.display()))?;
    let all = target_names(&text);
    let targets = if args.targets.is_empty() {
        all.clone()
    } else {
        for t in &args.targets {
            if !all.contains(t) {
                bail!(
                    "no fuzz target {t:?}; fuzz/Cargo.toml has {}",
                    all.join(", ")
                );
            }
        }
        args.targets.clone()
    };
    let triple = host_triple()?;
    build(&manifest, &triple, &targets)?;
    if args.build_only {
        return Ok(());
    }
    let bin_dir = fuzz_dir.join("target").join(&triple).join("release");
    let mut findings = Vec::new();
    println!(
        "{:<10} {:>6} {:>12} {:>9} {:>6} {:>7}  result",
        "target", "secs", "executions", "exec/s", "new", "rss MB"
    );
    for name in &targets {
        let started = Instant::now();
        let stats = run_target(&fuzz_dir, &bin_dir, name, &args)?;
        let result = match &stats.artifact {
            Some(a) => {
                findings.push(format!("{name}: {a}"));
                format!("FINDING {a}")
            }
            None => "ok".to_string(),
        };
        println!(
            "{:<10} {:>6} {:>12} {:>9} {:>6} {:>7}  {result}",
            name,
            started.elapsed().as_secs(),
            stats.executions,
            stats.execs_per_sec,
            stats.new_units,
            stats.peak_rss_mb
        );
    }
    if !findings.is_empty() {
        bail!(
            "fuzzing found {} problem(s); reproduce with the target's binary and the input:\n  {}",
            findings.len(),
            findings.join("\n  ")
        );
    }
    Ok(())
}

fn host_triple() -> anyhow::Result<String> {
    let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .context("run rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .context("rustc -vV names no host")
}

fn build(manifest: &Path, triple: &str, targets: &[String]) -> anyhow::Result<()> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.arg("build").arg("--manifest-path").arg(manifest).args([
        "--release",
        "--locked",
        "--target",
        triple,
    ]);
    for t in targets {
        cmd.args(["--bin", t]);
    }
    // The instrumentation must reach every crate the targets link, and
    // only them: with `--target`, build scripts and proc macros do not get
    // RUSTFLAGS.
    cmd.env("RUSTFLAGS", RUSTFLAGS.join(" "))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR");
    let status = cmd.status().context("run cargo build for fuzz/")?;
    if !status.success() {
        bail!("building the fuzz targets failed ({status})");
    }
    Ok(())
}

fn run_target(
    fuzz_dir: &Path,
    bin_dir: &Path,
    name: &str,
    args: &FuzzArgs,
) -> anyhow::Result<RunStats> {
    let corpus = fuzz_dir.join("corpus").join(name);
    let seeds = fuzz_dir.join("seeds").join(name);
    let artifacts = fuzz_dir.join("artifacts").join(name);
    for dir in [&corpus, &artifacts] {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let log_path = fuzz_dir.join("artifacts").join(format!("{name}.log"));
    let log = File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;
    // New inputs go to the first directory; the seeds are only read.
    let status = Command::new(bin_dir.join(name))
        .arg(&corpus)
        .arg(&seeds)
        .arg(format!("-max_total_time={}", args.seconds))
        .arg(format!("-timeout={}", args.input_timeout))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .args(&args.libfuzzer_args)
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("run {}", bin_dir.join(name).display()))?;
    let text = std::fs::read_to_string(&log_path)?;
    let stats = parse_stats(&text);
    if !status.success() && stats.artifact.is_none() {
        bail!(
            "{name} exited with {status} and wrote no input; see {}",
            log_path.display()
        );
    }
    Ok(stats)
}

/// The `[[bin]]` names of the fuzz crate's manifest, in order.
pub fn target_names(manifest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
            continue;
        }
        if in_bin
            && let Some(value) = line.strip_prefix("name")
            && let Some(value) = value.trim_start().strip_prefix('=')
        {
            out.push(value.trim().trim_matches('"').to_string());
        }
    }
    out
}

/// Reads libFuzzer's final stats (`-print_final_stats=1`) and the input it
/// wrote, if any.
pub fn parse_stats(log: &str) -> RunStats {
    let mut stats = RunStats::default();
    for line in log.lines() {
        let number = |key: &str| {
            line.strip_prefix(key)
                .and_then(|rest| rest.trim().parse::<u64>().ok())
        };
        if let Some(n) = number("stat::number_of_executed_units:") {
            stats.executions = n;
        } else if let Some(n) = number("stat::average_exec_per_sec:") {
            stats.execs_per_sec = n;
        } else if let Some(n) = number("stat::new_units_added:") {
            stats.new_units = n;
        } else if let Some(n) = number("stat::peak_rss_mb:") {
            stats.peak_rss_mb = n;
        } else if let Some((_, path)) = line.split_once("Test unit written to ") {
            stats.artifact = Some(path.trim().to_string());
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_bin_sections() {
        let manifest = "[package]\nname = \"mesh-fuzz-libfuzzer\"\n\n[dependencies]\nname = 1\n\n\
                        [[bin]]\nname = \"loader\"\npath = \"x.rs\"\n\n[[bin]]\nname=\"xds\"\n";
        assert_eq!(target_names(manifest), ["loader", "xds"]);
    }

    #[test]
    fn every_target_of_the_fuzz_crate_has_seeds() {
        let text = std::fs::read_to_string(root().join("fuzz/Cargo.toml")).unwrap();
        let names = target_names(&text);
        assert!(names.len() >= 5, "{names:?}");
        for name in names {
            let seeds = root().join("fuzz/seeds").join(&name);
            assert!(
                std::fs::read_dir(&seeds).is_ok_and(|mut d| d.next().is_some()),
                "{} is empty or missing",
                seeds.display()
            );
        }
    }

    #[test]
    fn reads_final_stats_and_the_crash() {
        let log = "#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   thread '<unnamed>' panicked at src/x.rs:1:1:\n\
                   ==1== ERROR: libFuzzer: deadly signal\n\
                   artifact_prefix='fuzz/artifacts/xds/'; Test unit written to fuzz/artifacts/xds/crash-abc\n\
                   stat::number_of_executed_units: 1234\n\
                   stat::average_exec_per_sec:     411\n\
                   stat::new_units_added:          7\n\
                   stat::slowest_unit_time_sec:    0\n\
                   stat::peak_rss_mb:              88\n";
        assert_eq!(
            parse_stats(log),
            RunStats {
                executions: 1234,
                execs_per_sec: 411,
                new_units: 7,
                peak_rss_mb: 88,
                artifact: Some("fuzz/artifacts/xds/crash-abc".into()),
            }
        );
        assert_eq!(parse_stats("Done 5 runs in 1 second(s)\n").artifact, None);
    }
}
