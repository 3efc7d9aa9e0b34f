//! `meshctl analyze PATH... [-o text|json|yaml]`: load, analyse, print in
//! Istio's form, and return the exit code `istioctl analyze` would.

use std::io::Write;
use std::path::PathBuf;

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
    let config = mesh_api::load_paths(paths);
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
    Ok(if has_errors(&messages) {
        ANALYZE_ERROR_EXIT_CODE as u8
    } else {
        0
    })
}

fn describe(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
