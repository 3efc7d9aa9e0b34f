//! `meshctl analyze [PATH...] [-o text|json|yaml]`: load, analyse, print in
//! Istio's form, and return the exit code `istioctl analyze` would.
//!
//! When a local mesh runs, the files are analysed together with its configuration (each
//! resource of the files replacing the mesh's of the same kind, namespace and name), as
//! `istioctl analyze FILE` does with the live cluster, and with no path the running mesh is
//! analysed; `--use-mesh=false` analyses the files alone. `meshctl apply` runs the same
//! analysis on the change ([`check_change`]) before it writes anything. Besides Istio's
//! analyzers, a document of an Istio API group whose kind Istio does not have is an IST0106.
//!
//! A local mesh directory holds `workloads.yaml` (the `meshctl up` workload
//! file, not Istio YAML) beside its Istio YAML: such a file is recognised and
//! skipped with a note instead of being reported as IST0106.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use mesh_api::analysis::{codes, has_errors};
use mesh_api::constants::ANALYZE_ERROR_EXIT_CODE;
use mesh_api::{Config, Message, Resource};

/// How messages are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
    Yaml,
}

/// The live configuration the files are analysed with: the running local mesh's config
/// dir, or a cluster's objects.
pub struct MeshContext {
    /// `the running local mesh (DIR)`, `the cluster https://...`.
    pub description: String,
    pub config: Config,
    /// Objects the control plane would reject, with why (a cluster's; a local mesh's files
    /// load into `config.errors`).
    pub rejected: Vec<(String, Vec<String>)>,
    /// Whether it is a cluster's.
    pub cluster: bool,
    /// Only messages about this namespace's resources (and those about none) are reported.
    pub namespace: Option<String>,
}

/// Which namespaces of a cluster `analyze` reports on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The kubeconfig context's namespace (`default` when it names none), as istioctl.
    ContextNamespace,
    Namespace(String),
    All,
}

/// An object of the cluster that the control plane's validation rejects, as the IST0106
/// istioctl reports for it.
fn rejected(object: &str, errors: &[String]) -> Message {
    // `KIND NAMESPACE/NAME` (or `KIND NAME` for a cluster-scoped object).
    let (kind, rest) = object.split_once(' ').unwrap_or(("", object));
    let (namespace, name) = rest.split_once('/').unwrap_or(("", rest));
    let prefix = format!("{object}: ");
    let text: Vec<&str> = errors
        .iter()
        .map(|e| e.strip_prefix(&prefix).unwrap_or(e))
        .collect();
    Message {
        message_type: codes::SchemaValidationError,
        text: format!("Schema validation error: {}", text.join("; ")),
        origin: Some(mesh_api::analysis::Origin {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            namespace_explicit: true,
        }),
        reference: None,
    }
}

/// A cluster's live configuration (`meshctl analyze --kubeconfig`), as `istioctl analyze`
/// reads it.
pub fn cluster_mesh(
    kubeconfig: &Path,
    context: Option<&str>,
    scope: Scope,
) -> anyhow::Result<MeshContext> {
    let namespace = match scope {
        Scope::All => None,
        Scope::Namespace(ns) => Some(ns),
        Scope::ContextNamespace => {
            Some(crate::cluster::config(kubeconfig, context)?.default_namespace)
        }
    };
    let live = crate::cluster::live_config(kubeconfig, context)?;
    let server = live
        .source
        .strip_prefix("kubernetes ")
        .unwrap_or(&live.source);
    Ok(MeshContext {
        description: format!("the cluster at {server}"),
        config: live.config,
        rejected: live.rejected,
        cluster: true,
        namespace,
    })
}

/// The local mesh of the state directory when its control plane runs.
pub fn running_mesh() -> Option<MeshContext> {
    let dir = crate::up::state::state_dir().ok()?;
    let state = crate::up::state::MeshState::load(&dir).ok()??;
    let control_plane_runs = state
        .processes
        .iter()
        .any(|p| p.name == "control-plane" && crate::up::process::is_running(p.pid, &p.program));
    control_plane_runs.then(|| MeshContext {
        config: mesh_api::load_path(&state.config_dir),
        description: format!("the running local mesh ({})", state.config_dir.display()),
        rejected: Vec::new(),
        cluster: false,
        namespace: None,
    })
}

/// A resource's identity: kind, namespace, name.
fn identity(r: &Resource) -> (&str, &str, &str) {
    (&r.meta.kind, &r.meta.namespace, &r.meta.name)
}

/// `mesh` with `change` applied as `meshctl apply` would: each resource of `change` replaces
/// the mesh's of the same kind, namespace and name (with `delete`: removes it). The change's
/// skipped documents and load errors are kept, so that they are reported.
pub fn overlay(mesh: &Config, change: &Config, delete: bool) -> Config {
    let replaced: BTreeSet<(&str, &str, &str)> = change.resources.iter().map(identity).collect();
    let mut out = Config::default();
    out.resources.extend(
        mesh.resources
            .iter()
            .filter(|r| !replaced.contains(&identity(r)))
            .cloned(),
    );
    if !delete {
        out.resources.extend(change.resources.iter().cloned());
        out.skipped.extend(change.skipped.iter().cloned());
    }
    out.skipped.extend(mesh.skipped.iter().cloned());
    out
}

/// Every kind of Istio's API groups the mesh knows of.
fn istio_kinds() -> impl Iterator<Item = &'static str> {
    mesh_api::resource::ISTIO_KINDS.iter().copied().chain(
        mesh_api::resource::UNIMPLEMENTED_ISTIO_KINDS
            .iter()
            .map(|(_, kind)| *kind),
    )
}

/// A document in an Istio API group (`*.istio.io`) whose kind Istio does not have (a typo such
/// as `VirtualSevice`): reported as IST0106 rather than skipped in silence, as it would
/// otherwise be (a kind of another group is none of the mesh's business).
pub fn unknown_istio_kinds(config: &Config) -> Vec<Message> {
    config
        .skipped
        .iter()
        .filter(|s| {
            let group = s.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
            group.ends_with("istio.io") && !istio_kinds().any(|k| k == s.kind)
        })
        .map(|s| {
            let hint = closest_kind(&s.kind)
                .map(|k| format!(" (did you mean {k}?)"))
                .unwrap_or_default();
            Message {
                message_type: codes::SchemaValidationError,
                text: format!(
                    "Schema validation error: unknown kind {} in {}{hint}",
                    s.kind, s.api_version
                ),
                origin: s.name.as_ref().map(|name| mesh_api::analysis::Origin {
                    kind: s.kind.clone(),
                    namespace: "default".to_string(),
                    name: name.clone(),
                    namespace_explicit: false,
                }),
                reference: Some(format!("{}:{}", s.source.file, s.source.line)),
            }
        })
        .collect()
}

/// The Istio kind at the smallest edit distance from `kind`, if it is close (a typo).
fn closest_kind(kind: &str) -> Option<&'static str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    let lower = kind.to_ascii_lowercase();
    istio_kinds()
        .map(|k| (distance(&lower, &k.to_ascii_lowercase()), k))
        .min()
        .filter(|(d, _)| *d <= 3)
        .map(|(_, k)| k)
}

/// Every message of `config`: the analyzers' and unknown Istio kinds.
pub fn messages(config: &Config) -> Vec<Message> {
    let mut out = mesh_api::analyze(config);
    out.extend(unknown_istio_kinds(config));
    out
}

/// What a message says, without where: the same finding before and after a change.
fn finding(m: &Message) -> (&'static str, Option<(&str, &str, &str)>, &str) {
    (
        m.code(),
        m.origin
            .as_ref()
            .map(|o| (o.kind.as_str(), o.namespace.as_str(), o.name.as_str())),
        &m.text,
    )
}

/// The messages an apply of `paths` (with `delete`: a removal) would add to the running
/// mesh's configuration in `config_dir`: what the analysis finds after the change and did not
/// find before, so that problems the mesh already has do not block every apply.
pub fn check_change(config_dir: &Path, paths: &[PathBuf], delete: bool) -> Vec<Message> {
    let mesh = mesh_api::load_path(config_dir);
    let mut change = mesh_api::load_paths(paths);
    // `apply` loaded every file before (its errors stop it there); what is left is the
    // workload file of a mesh directory, which it skips.
    change.errors.clear();
    let before = messages(&mesh);
    let known: BTreeSet<_> = before.iter().map(finding).collect();
    messages(&overlay(&mesh, &change, delete))
        .into_iter()
        .filter(|m| !known.contains(&finding(m)))
        .collect()
}

/// Runs the analysis and prints to stdout (skipped documents to stderr);
/// returns 79 when an error-level message was found, 0 otherwise.
///
/// With `mesh` (the running local mesh, see [`running_mesh`]) the files are analysed together
/// with its configuration, as `istioctl analyze FILE` does with the live cluster's; with no
/// paths the running mesh alone is.
pub fn run(
    paths: &[PathBuf],
    format: OutputFormat,
    mesh: Option<MeshContext>,
) -> anyhow::Result<u8> {
    let mut files = mesh_api::load_paths(paths);
    let workload_files = drop_workload_files(&mut files);
    let (config, what) = match (&mesh, paths.is_empty()) {
        (None, true) => anyhow::bail!(
            "no files given and no local mesh running: give files or directories, or start a mesh with `meshctl up`"
        ),
        (Some(m), true) => (overlay(&m.config, &files, false), m.description.clone()),
        (Some(m), false) => {
            let mut merged = overlay(&m.config, &files, false);
            merged.errors = files.errors;
            (
                merged,
                format!("{} together with {}", describe(paths), m.description),
            )
        }
        (None, false) => (files, describe(paths)),
    };
    let mut messages = messages(&config);
    if let Some(m) = &mesh {
        messages.extend(
            m.rejected
                .iter()
                .map(|(object, errors)| rejected(object, errors)),
        );
        if m.cluster {
            // A cluster object's "file:line" is its own name and a line of the JSON the
            // control plane made of it: the origin already says which object.
            for message in &mut messages {
                if let Some(o) = &message.origin
                    && message.reference.as_deref().is_some_and(|r| {
                        r.starts_with(&format!("{} {}/{}:", o.kind, o.namespace, o.name))
                    })
                {
                    message.reference = None;
                }
            }
        }
    }
    let what = match mesh.as_ref().and_then(|m| m.namespace.as_deref()) {
        Some(ns) => {
            messages.retain(|m| m.origin.as_ref().is_none_or(|o| o.namespace == ns));
            format!("{what}, namespace {ns}")
        }
        None => what,
    };
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    match format {
        OutputFormat::Text => {
            if messages.is_empty() {
                writeln!(
                    stdout,
                    "\u{2714} No validation issues found when analyzing {what}."
                )?;
            } else if mesh.is_some() {
                writeln!(stderr, "note: analyzed {what}")?;
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
    if format != OutputFormat::Text && mesh.is_some() {
        writeln!(stderr, "note: analyzed {what}")?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const DR: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: hw}\nspec:\n  host: hw\n  subsets:\n  - {name: a, labels: {v: a}}\n";
    const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: hw}\nspec:\n  hosts: [hw]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  location: MESH_INTERNAL\n  endpoints: [{address: 127.0.0.1}]\n";

    fn vs(name: &str, host: &str, subset: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{host}]\n  http:\n  - route:\n    - destination: {{host: {host}, subset: {subset}}}\n"
        )
    }

    #[test]
    fn a_change_is_judged_by_what_it_adds_to_the_mesh() {
        let mesh = tempfile::tempdir().unwrap();
        std::fs::write(mesh.path().join("base.yaml"), format!("{SE}---\n{DR}")).unwrap();
        // A problem the mesh already has does not block an unrelated change.
        std::fs::write(mesh.path().join("old.yaml"), vs("old", "elsewhere", "gone")).unwrap();
        let change = tempfile::tempdir().unwrap();
        let good = change.path().join("good.yaml");
        std::fs::write(&good, vs("new", "hw", "a")).unwrap();
        assert_eq!(
            check_change(mesh.path(), std::slice::from_ref(&good), false),
            []
        );
        // A route to a missing subset is the change's own error.
        let bad = change.path().join("bad.yaml");
        std::fs::write(&bad, vs("new", "hw", "b")).unwrap();
        let found = check_change(mesh.path(), &[bad], false);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].code(), "IST0101");
        // Deleting the DestinationRule breaks the route applied before it.
        std::fs::write(mesh.path().join("new.yaml"), vs("new", "hw", "a")).unwrap();
        let dr = change.path().join("dr.yaml");
        std::fs::write(&dr, DR).unwrap();
        let found = check_change(mesh.path(), &[dr], true);
        assert!(
            found
                .iter()
                .any(|m| m.code() == "IST0101" && m.text.contains("hw+a")),
            "{found:?}"
        );
    }

    #[test]
    fn typos_of_istio_kinds_get_a_suggestion() {
        assert_eq!(closest_kind("VirtualSevice"), Some("VirtualService"));
        assert_eq!(closest_kind("destinationrules"), Some("DestinationRule"));
        assert_eq!(closest_kind("Frobnicator"), None);
    }
}
