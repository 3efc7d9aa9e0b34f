//! `meshctl apply`: write Istio YAML into the running mesh's configuration and wait for the
//! proxies it affects.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use super::state::MeshState;

use super::*;

/// What `meshctl apply` does.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Files and directories.
    pub files: Vec<PathBuf>,
    /// Remove their resources instead.
    pub delete: bool,
    /// Wait (at most this long) until every affected proxy ACKed the change.
    pub wait: Option<Duration>,
    /// Apply even when the analysis finds errors.
    pub force: bool,
}

/// `meshctl apply -f FILE|DIR...` (`--delete`: remove): every file must load first, and the
/// analysis of the change with the running mesh's configuration must find no error (unless
/// `force`; its warnings are printed); then each resource replaces (or removes) the one of the same kind, namespace and name in the
/// running mesh's config dir (which the control plane watches), whatever file either came
/// from; then, unless told not to, waits until every proxy the change affects has ACKed the
/// configuration generation that holds it (see [`crate::wait`]).
pub fn apply(opts: &ApplyOptions) -> anyhow::Result<()> {
    let dir = state::state_dir()?;
    let Some(state) = MeshState::load(&dir)? else {
        bail!(
            "no local mesh running (state dir {}); start one with `meshctl up`",
            dir.display()
        );
    };
    let docs = meshdir::read_apply_input(&opts.files)?;
    // The analysis of the change with the mesh's configuration: what it would add.
    let found = crate::analyze::check_change(&state.config_dir, &opts.files, opts.delete);
    for m in &found {
        eprintln!("{m}");
    }
    if mesh_api::analysis::has_errors(&found) {
        if !opts.force {
            bail!(
                "nothing applied: the analysis of the change with the running mesh's configuration found errors (above); fix them, or apply anyway with --force"
            );
        }
        eprintln!("applying despite the errors above (--force)");
    }
    if docs.is_empty() {
        bail!("no Istio resource in {}", display_paths(&opts.files));
    }
    let debug = state.control_plane.debug_address;
    // Before writing: which proxies get a push is judged against this.
    let before = match opts.wait {
        Some(_) => Some(crate::wait::snapshot(debug).context(
            "cannot wait for the proxies (is the mesh running? see `meshctl status`); \
             `--wait=false` applies without waiting",
        )?),
        None => None,
    };
    let outcome = meshdir::apply_to_config_dir(&state.config_dir, &docs, opts.delete)?;
    let mut missing = Vec::new();
    for (id, action) in &outcome {
        println!("{id} {action}");
        if *action == meshdir::ApplyAction::NotFound {
            missing.push(id.to_string());
        }
    }
    if !missing.is_empty() {
        bail!("not in the running mesh: {}", missing.join(", "));
    }
    if let (Some(timeout), Some(before)) = (opts.wait, before) {
        let expected = crate::wait::Expectation::of_documents(&docs, opts.delete);
        let done = crate::wait::wait(debug, &expected, Some(&before), timeout)?;
        println!("{}", done.describe());
    }
    Ok(())
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
