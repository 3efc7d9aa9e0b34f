//! `meshctl analyze PATH... [-o text|json|yaml]`: load, analyse, print in
//! Istio's form, and return the exit code `istioctl analyze` would.
//!
//! A local mesh directory holds `workloads.yaml` (the `meshctl up` workload
//! file, not Istio YAML) beside its Istio YAML: such a file is recognised and
//! skipped with a note instead of being reported as IST0106.

use std::io::Write;
use std::path::{Path, PathBuf};

use mesh_api::analysis::has_errors;
use mesh_api::constants::ANALYZE_ERROR_EXIT_CODE;

/// How messages are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
    Yaml,
}

/// Runs the analysis and prints to stdout (skipped documents to stderr);
/// returns 79 when an error-level message was found, 0 otherwise.
pub fn run(paths: &[PathBuf], format: OutputFormat) -> anyhow::Result<u8> {
    let mut config = mesh_api::load_paths(paths);
    let workload_files = drop_workload_files(&mut config);
    let messages = mesh_api::analyze(&config);
    let mut stdout = std::io::stdout().lock();
    match format {
        OutputFormat::Text => {
            if messages.is_empty() {
                writeln!(
                    stdout,
                    "\u{2714} No validation issues found when analyzing {}.",
                    describe(paths)
                )?;
            }
            for m in &messages {
                writeln!(stdout, "{m}")?;
            }
        }
        OutputFormat::Json => {
            let list: Vec<serde_json::Value> = messages.iter().map(|m| m.to_json()).collect();
            writeln!(stdout, "{}", serde_json::to_string_pretty(&list)?)?;
        }
        OutputFormat::Yaml => {
            let list: Vec<serde_json::Value> = messages.iter().map(|m| m.to_json()).collect();
            write!(stdout, "{}", serde_saphyr::to_string(&list)?)?;
        }
    }
    let mut stderr = std::io::stderr().lock();
    for s in &config.skipped {
        writeln!(stderr, "note: {s}")?;
    }
    for f in &workload_files {
        writeln!(
            stderr,
            "note: {f}: skipped, the workload file of `meshctl up` (not Istio YAML; see docs/local-mesh.md)"
        )?;
    }
    Ok(if has_errors(&messages) {
        ANALYZE_ERROR_EXIT_CODE as u8
    } else {
        0
    })
}

/// Removes the load errors of files that are `meshctl up` workload files
/// (named `workloads.yaml` and valid as one); returns those files.
fn drop_workload_files(config: &mut mesh_api::Config) -> Vec<String> {
    let mut skipped: Vec<String> = Vec::new();
    config.errors.retain(|e| {
        let file = e.file();
        let is_workload_file = skipped.iter().any(|s| s == file) || is_workload_file(file);
        if is_workload_file && !skipped.iter().any(|s| s == file) {
            skipped.push(file.to_string());
        }
        !is_workload_file
    });
    skipped
}

fn is_workload_file(file: &str) -> bool {
    let path = Path::new(file);
    if path.file_name().and_then(|n| n.to_str()) != Some(crate::up::workloads::WORKLOAD_FILE) {
        return false;
    }
    std::fs::read_to_string(path)
        .ok()
        .is_some_and(|text| crate::up::workloads::WorkloadFile::parse(file, &text).is_ok())
}

fn describe(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
