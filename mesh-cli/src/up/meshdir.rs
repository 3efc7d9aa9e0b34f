//! A mesh directory read for `meshctl up`: the workload file, the Istio YAML beside it, and
//! what `up` derives from them (the registry entries to generate, the gateway ports to bind).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::demo;
use super::workloads::{WORKLOAD_FILE, Workload, WorkloadFile};

/// Labels of the ingress gateway proxy (Istio's), which Gateways select.
pub const GATEWAY_LABELS: &[(&str, &str)] =
    &[("istio", "ingressgateway"), ("app", "istio-ingressgateway")];
/// Name and namespace of the ingress gateway proxy.
pub const GATEWAY_NAME: &str = "istio-ingressgateway";
pub const GATEWAY_NAMESPACE: &str = "istio-system";
/// Service account of the ingress gateway proxy (Istio's), the identity in its certificate.
pub const GATEWAY_SERVICE_ACCOUNT: &str = "istio-ingressgateway-service-account";
/// The label that tells the control plane a workload has a sidecar, so callers originate
/// mTLS to it automatically (Istio's auto-mTLS).
pub const TLS_MODE_LABEL: (&str, &str) = ("security.istio.io/tlsMode", "istio");
/// The Gateway port always bound, even with no Gateway yet (one may be applied later).
pub const DEFAULT_GATEWAY_PORT: u32 = 80;

/// The input of `up`.
#[derive(Debug)]
pub struct MeshDir {
    /// Where it came from (`built-in demo` or the path), for messages.
    pub origin: String,
    pub workloads: WorkloadFile,
    /// Istio YAML files: path relative to the directory, content.
    pub files: Vec<(PathBuf, String)>,
    pub config: mesh_api::Config,
}

impl MeshDir {
    /// The built-in helloworld demo.
    pub fn demo() -> anyhow::Result<MeshDir> {
        let workloads = WorkloadFile::parse("built-in demo/workloads.yaml", demo::WORKLOADS)?;
        let files: Vec<(PathBuf, String)> = demo::ISTIO_FILES
            .iter()
            .map(|(n, t)| (PathBuf::from(n), t.to_string()))
            .collect();
        Self::new("built-in demo".into(), workloads, files)
    }

    /// A directory with `workloads.yaml` and Istio YAML (read recursively).
    pub fn read(dir: &Path) -> anyhow::Result<MeshDir> {
        let wpath = dir.join(WORKLOAD_FILE);
        let text = std::fs::read_to_string(&wpath)
            .with_context(|| format!("reading the workload file {}", wpath.display()))?;
        let workloads = WorkloadFile::parse(&wpath.display().to_string(), &text)?;
        let mut files = Vec::new();
        collect(dir, dir, &mut files)?;
        Self::new(dir.display().to_string(), workloads, files)
    }

    fn new(
        origin: String,
        workloads: WorkloadFile,
        files: Vec<(PathBuf, String)>,
    ) -> anyhow::Result<MeshDir> {
        let mut config = mesh_api::Config::default();
        for (name, text) in &files {
            config.extend(mesh_api::load_str(&name.display().to_string(), text));
        }
        if config.has_errors() {
            let errors: Vec<String> = config.errors.iter().map(|e| e.to_string()).collect();
            bail!(
                "{origin}: the Istio YAML does not load:\n  {}",
                errors.join("\n  ")
            );
        }
        Ok(MeshDir {
            origin,
            workloads,
            files,
            config,
        })
    }

    /// Gateway server ports the ingress gateway must bind: those of every Gateway selecting
    /// it, plus port 80.
    pub fn gateway_ports(&self) -> BTreeSet<u32> {
        let mut ports = BTreeSet::from([DEFAULT_GATEWAY_PORT]);
        for (_, gw) in self.config.gateways() {
            let selects = !gw.spec.selector.is_empty()
                && gw
                    .spec
                    .selector
                    .iter()
                    .all(|(k, v)| GATEWAY_LABELS.iter().any(|(gk, gv)| gk == k && gv == v));
            if selects {
                ports.extend(gw.spec.servers.iter().map(|s| s.port.number));
            }
        }
        ports
    }

    /// Services the workloads serve that no ServiceEntry in the directory declares:
    /// `(namespace, name) -> (port, protocol, workloads)`.
    fn services_to_generate(&self) -> BTreeMap<(String, String), (u16, String, Vec<&Workload>)> {
        let declared: BTreeSet<String> = self
            .config
            .service_entries()
            .flat_map(|(_, se)| se.spec.hosts.iter().cloned())
            .collect();
        let mut out: BTreeMap<(String, String), (u16, String, Vec<&Workload>)> = BTreeMap::new();
        for w in &self.workloads.workloads {
            let Some(s) = &w.service else { continue };
            if declared.contains(&fqdn(&s.name, &w.namespace)) {
                continue;
            }
            out.entry((w.namespace.clone(), s.name.clone()))
                .or_insert_with(|| (s.port, s.protocol.clone(), Vec::new()))
                .2
                .push(w);
        }
        out
    }

    /// The ServiceEntries and WorkloadEntries of the registry, as one YAML file.
    /// `inbound` gives each workload's sidecar inbound port (what its WorkloadEntry lists).
    pub fn registry_yaml(&self, inbound: &BTreeMap<String, u16>) -> anyhow::Result<String> {
        let mut out = String::from(
            "# Generated by `meshctl up`: the services of workloads.yaml and one WorkloadEntry per\n\
             # workload, pointing at its sidecar's inbound listener.\n",
        );
        for ((ns, name), (port, protocol, members)) in self.services_to_generate() {
            // The selector is what every workload of the service has in common.
            let mut common = members[0].labels.clone();
            for w in &members[1..] {
                common.retain(|k, v| w.labels.get(k) == Some(v));
            }
            if common.is_empty() {
                bail!(
                    "the workloads of service {name}.{ns} ({}) share no label for the ServiceEntry to select; add one such as `app: {name}`",
                    members
                        .iter()
                        .map(|w| w.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let _ = write!(
                out,
                "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  hosts: [{host}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: {port}, name: {pname}, protocol: {protocol}}}\n  workloadSelector:\n    labels: {labels}\n",
                host = fqdn(&name, &ns),
                pname = protocol.to_ascii_lowercase(),
                labels = flow_map(&common),
            );
        }
        let existing: BTreeSet<String> = self
            .config
            .workload_entries()
            .map(|(m, _)| m.key())
            .collect();
        for w in &self.workloads.workloads {
            let (Some(s), Some(port)) = (&w.service, inbound.get(&w.name)) else {
                continue;
            };
            if existing.contains(&format!("{}/{}", w.namespace, w.name)) {
                continue;
            }
            // Every workload `up` starts has a sidecar.
            let mut entry_labels = w.labels.clone();
            entry_labels.insert(TLS_MODE_LABEL.0.into(), TLS_MODE_LABEL.1.into());
            let _ = write!(
                out,
                "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  address: 127.0.0.1\n  ports: {{{pname}: {port}}}\n  labels: {labels}\n  serviceAccount: {sa}\n",
                name = w.name,
                ns = w.namespace,
                pname = s.protocol.to_ascii_lowercase(),
                labels = flow_map(&entry_labels),
                sa = w.service_account,
            );
        }
        Ok(out)
    }
}

fn fqdn(name: &str, ns: &str) -> String {
    format!("{name}.{ns}.svc.cluster.local")
}

/// `{a: "1", b: "x"}` with values quoted, so `version: 1` stays a string.
fn flow_map(m: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}: {}", serde_json::Value::from(v.as_str())))
        .collect();
    format!("{{{}}}", items.join(", "))
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) && !(dir == root && name == WORKLOAD_FILE)
        {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            out.push((rel, text));
        }
    }
    Ok(())
}

/// What `meshctl apply` writes under the config directory: one file per applied resource,
/// `applied/KIND.NAMESPACE.NAME.yaml`, so a resource is replaced by its identity whatever the
/// file it came from was called.
pub const APPLIED_DIR: &str = "applied";

/// A resource's identity: what `apply` replaces and `apply --delete` removes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ResourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} ({})",
            self.kind.to_ascii_lowercase(),
            self.name,
            self.namespace
        )
    }
}

impl ResourceId {
    fn of(meta: &mesh_api::ResourceMeta) -> ResourceId {
        ResourceId {
            kind: meta.kind.clone(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
        }
    }

    /// `applied/virtualservice.default.helloworld.yaml`.
    pub fn applied_path(&self) -> PathBuf {
        Path::new(APPLIED_DIR).join(format!(
            "{}.{}.{}.yaml",
            self.kind.to_ascii_lowercase(),
            self.namespace,
            self.name
        ))
    }
}

/// One YAML document of a file and the resources it holds (several for a `kind: List`).
#[derive(Debug, Clone)]
pub struct Document {
    pub text: String,
    pub ids: Vec<ResourceId>,
}

/// Whether `line` is a YAML document marker, by the rules of mesh-api's loader (`---` or
/// `...` at column 0, then nothing or blanks), so documents are cut where it cuts them.
fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
}

/// The non-empty documents of a YAML stream, each without its `---` line.
pub fn split_documents(text: &str) -> Vec<String> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut flush = |current: &mut String| {
        let has_content = current.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        });
        if has_content {
            docs.push(current.trim_end().to_string() + "\n");
        }
        current.clear();
    };
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if is_marker(bare, "---") || is_marker(bare, "...") {
            flush(&mut current);
            // A marker line may carry content after it (`--- {kind: ...}`).
            let rest = bare[3..].trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                current.push_str(rest);
                current.push('\n');
            }
        } else {
            current.push_str(line);
        }
    }
    flush(&mut current);
    docs
}

/// Loads `text` (named `file` in errors) document by document; the loader's errors (file,
/// document, line, column, field) when any document does not load.
pub fn load_documents(file: &str, text: &str) -> Result<Vec<Document>, Vec<String>> {
    let config = mesh_api::load_str(file, text);
    if config.has_errors() {
        return Err(config.errors.iter().map(|e| e.to_string()).collect());
    }
    let mut out: Vec<Document> = split_documents(text)
        .into_iter()
        .map(|text| Document {
            text,
            ids: Vec::new(),
        })
        .collect();
    let count = out.len();
    for r in &config.resources {
        match out.get_mut(r.meta.source.document.saturating_sub(1)) {
            Some(d) => d.ids.push(ResourceId::of(&r.meta)),
            None => {
                return Err(vec![format!(
                    "{file}: document {} of {count} could not be cut out of the file",
                    r.meta.source.document,
                )]);
            }
        }
    }
    Ok(out)
}

/// The documents to apply from files and directories (searched recursively for `.yaml`,
/// `.yml`, `.json`; a top-level `workloads.yaml` is skipped). Every error of every file, or
/// the documents: nothing is written unless all of them load.
pub fn read_apply_input(paths: &[PathBuf]) -> anyhow::Result<Vec<Document>> {
    let mut files: Vec<(String, String)> = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            collect(p, p, &mut found)?;
            files.extend(
                found
                    .into_iter()
                    .map(|(rel, text)| (p.join(rel).display().to_string(), text)),
            );
        } else {
            match std::fs::read_to_string(p) {
                Ok(text) => files.push((p.display().to_string(), text)),
                Err(e) => errors.push(format!("{}: {e}", p.display())),
            }
        }
    }
    let mut docs = Vec::new();
    for (name, text) in &files {
        match load_documents(name, text) {
            Ok(d) => docs.extend(d.into_iter().filter(|d| !d.ids.is_empty())),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        bail!("nothing applied:\n  {}", errors.join("\n  "));
    }
    let mut seen = BTreeSet::new();
    for id in docs.iter().flat_map(|d| &d.ids) {
        if !seen.insert(id.clone()) {
            bail!("nothing applied: {id} is given twice");
        }
    }
    Ok(docs)
}

/// What `apply` did to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyAction {
    /// New, or its content changed.
    Configured,
    Unchanged,
    Deleted,
    NotFound,
}

impl std::fmt::Display for ApplyAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApplyAction::Configured => "configured",
            ApplyAction::Unchanged => "unchanged",
            ApplyAction::Deleted => "deleted",
            ApplyAction::NotFound => "not found",
        })
    }
}

/// Applies (or, with `delete`, removes) `docs` in the watched `config_dir` by resource
/// identity: a resource already there, in whatever file, is taken out of that file (the file
/// goes when nothing is left in it) and the new one lands in `applied/`. Files are written
/// whole then renamed, so the control plane never reads half of one.
pub fn apply_to_config_dir(
    config_dir: &Path,
    docs: &[Document],
    delete: bool,
) -> anyhow::Result<Vec<(ResourceId, ApplyAction)>> {
    let wanted: BTreeMap<&ResourceId, &Document> = docs
        .iter()
        .flat_map(|d| d.ids.iter().map(move |id| (id, d)))
        .collect();
    let mut existing_files = Vec::new();
    collect(config_dir, config_dir, &mut existing_files)?;
    // Where each wanted resource is now, and the files to rewrite without it.
    let mut old_text: BTreeMap<ResourceId, String> = BTreeMap::new();
    let mut rewrites: Vec<(PathBuf, Vec<Document>)> = Vec::new();
    for (rel, text) in &existing_files {
        let file_docs = load_documents(&rel.display().to_string(), text).map_err(|e| {
            anyhow::anyhow!(
                "the running mesh's config {} does not load:\n  {}",
                config_dir.join(rel).display(),
                e.join("\n  ")
            )
        })?;
        let mut keep = Vec::new();
        let mut changed = false;
        for d in file_docs {
            let hit: Vec<&ResourceId> = d.ids.iter().filter(|id| wanted.contains_key(id)).collect();
            if hit.is_empty() {
                keep.push(d);
                continue;
            }
            if hit.len() != d.ids.len() {
                bail!(
                    "{} holds {} in one document with other resources; edit that file instead",
                    config_dir.join(rel).display(),
                    hit[0]
                );
            }
            for id in hit {
                old_text.insert(id.clone(), d.text.clone());
            }
            changed = true;
        }
        if changed {
            rewrites.push((rel.clone(), keep));
        }
    }
    let mut outcome = Vec::new();
    let mut writes: Vec<(PathBuf, String)> = Vec::new();
    for (id, doc) in &wanted {
        let action = match (delete, old_text.get(*id)) {
            (true, Some(_)) => ApplyAction::Deleted,
            (true, None) => ApplyAction::NotFound,
            (false, Some(old)) if old.trim() == doc.text.trim() => ApplyAction::Unchanged,
            (false, _) => ApplyAction::Configured,
        };
        if !delete {
            writes.push((doc_path(doc), doc.text.clone()));
        }
        outcome.push(((*id).clone(), action));
    }
    writes.sort();
    writes.dedup();
    for (rel, keep) in rewrites {
        if writes.iter().any(|(w, _)| *w == rel) {
            continue; // overwritten below
        }
        let path = config_dir.join(&rel);
        if keep.is_empty() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        } else {
            let text: Vec<&str> = keep.iter().map(|d| d.text.as_str()).collect();
            write_atomic(&path, &text.join("---\n"))?;
        }
    }
    for (rel, text) in writes {
        let path = config_dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        write_atomic(&path, &text)?;
    }
    Ok(outcome)
}

/// A document's file under the config dir: named for its first resource.
fn doc_path(doc: &Document) -> PathBuf {
    doc.ids
        .first()
        .map(ResourceId::applied_path)
        .unwrap_or_else(|| PathBuf::from(APPLIED_DIR).join("empty.yaml"))
}

fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A dot file: the control plane's directory source and `collect` both skip it.
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_registry_has_one_service_and_a_workload_entry_per_version() {
        let d = MeshDir::demo().unwrap();
        assert_eq!(d.gateway_ports(), BTreeSet::from([80]));
        let inbound = BTreeMap::from([
            ("helloworld-safe".to_string(), 20001),
            ("helloworld-risky".to_string(), 20002),
        ]);
        let yaml = d.registry_yaml(&inbound).unwrap();
        let config = mesh_api::load_str("generated", &yaml);
        assert!(!config.has_errors(), "{:?}\n{yaml}", config.errors);
        let ses: Vec<_> = config.service_entries().collect();
        assert_eq!(ses.len(), 1, "{yaml}");
        assert_eq!(
            ses[0].1.spec.hosts,
            ["helloworld.default.svc.cluster.local"]
        );
        let wes: Vec<_> = config.workload_entries().collect();
        assert_eq!(wes.len(), 2, "{yaml}");
        assert!(yaml.contains("ports: {http: 20001}"), "{yaml}");
        assert!(yaml.contains("version: \"risky\""), "{yaml}");
        // The selector is the labels both versions share.
        assert!(yaml.contains("labels: {app: \"helloworld\"}"), "{yaml}");
        // Each WorkloadEntry says it has a sidecar (auto-mTLS).
        for (_, we) in &wes {
            assert_eq!(
                we.spec
                    .labels
                    .get("security.istio.io/tlsMode")
                    .map(String::as_str),
                Some("istio"),
                "{yaml}"
            );
        }
    }

    #[test]
    fn a_declared_service_entry_is_not_generated_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(WORKLOAD_FILE), demo::WORKLOADS).unwrap();
        std::fs::write(
            dir.path().join("se.yaml"),
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: hw, namespace: default}\nspec:\n  hosts: [helloworld.default.svc.cluster.local]\n  ports: [{number: 5000, name: http, protocol: HTTP}]\n  resolution: STATIC\n",
        )
        .unwrap();
        let d = MeshDir::read(dir.path()).unwrap();
        assert_eq!(d.files.len(), 1, "workloads.yaml is not Istio YAML");
        let yaml = d
            .registry_yaml(&BTreeMap::from([("helloworld-safe".to_string(), 1)]))
            .unwrap();
        assert!(!yaml.contains("kind: ServiceEntry"), "{yaml}");
        assert!(yaml.contains("kind: WorkloadEntry"), "{yaml}");
    }

    #[test]
    fn bad_istio_yaml_is_reported_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(WORKLOAD_FILE), demo::WORKLOADS).unwrap();
        std::fs::write(dir.path().join("bad.yaml"), "kind: VirtualService\n").unwrap();
        let e = format!("{:#}", MeshDir::read(dir.path()).unwrap_err());
        assert!(e.contains("bad.yaml"), "{e}");
    }

    const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: hw, namespace: default}\nspec:\n  hosts: [helloworld]\n  http:\n  - route:\n    - destination: {host: helloworld, subset: SUBSET}\n";
    const DR: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: hw}\nspec:\n  host: helloworld\n";

    fn vs(subset: &str) -> String {
        VS.replace("SUBSET", subset)
    }

    fn apply(config: &Path, file: &Path, delete: bool) -> Vec<(ResourceId, ApplyAction)> {
        let docs = read_apply_input(&[file.to_path_buf()]).unwrap();
        apply_to_config_dir(config, &docs, delete).unwrap()
    }

    fn loaded(config: &Path) -> mesh_api::Config {
        mesh_api::load_paths(&[config])
    }

    #[test]
    fn documents_are_cut_as_the_loader_cuts_them() {
        let text = format!("# lead\n---\n{}---\n\n--- \n{DR}...\n", vs("a"));
        let docs = load_documents("f.yaml", &text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].ids[0].kind, "VirtualService");
        assert_eq!(docs[1].ids[0].name, "hw");
        assert_eq!(docs[1].ids[0].namespace, "default");
        assert!(docs[1].text.starts_with("apiVersion"), "{}", docs[1].text);
    }

    #[test]
    fn apply_replaces_by_kind_namespace_and_name_whatever_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("config");
        std::fs::create_dir(&config).unwrap();
        // As `up` copies it: both resources in one file of the mesh directory.
        std::fs::write(
            config.join("helloworld.yaml"),
            format!("{}---\n{DR}", vs("a")),
        )
        .unwrap();
        let moved = tmp.path().join("other-name.yaml");
        std::fs::write(&moved, vs("b")).unwrap();
        let r = apply(&config, &moved, false);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].1, ApplyAction::Configured);
        // One VirtualService in force, the new one; the DestinationRule untouched.
        let c = loaded(&config);
        assert!(!c.has_errors(), "{:?}", c.errors);
        assert_eq!(c.virtual_services().count(), 1);
        let applied =
            std::fs::read_to_string(config.join("applied/virtualservice.default.hw.yaml")).unwrap();
        assert!(applied.contains("subset: b"), "{applied}");
        assert_eq!(c.destination_rules().count(), 1);
        let left = std::fs::read_to_string(config.join("helloworld.yaml")).unwrap();
        assert!(!left.contains("VirtualService"), "{left}");
        // The same again, under yet another name: unchanged, still one.
        let again = tmp.path().join("third.yaml");
        std::fs::write(&again, vs("b")).unwrap();
        assert_eq!(apply(&config, &again, false)[0].1, ApplyAction::Unchanged);
        assert_eq!(loaded(&config).virtual_services().count(), 1);
        // Delete by identity; the file left empty goes.
        let dr = tmp.path().join("dr.yaml");
        std::fs::write(&dr, DR).unwrap();
        assert_eq!(apply(&config, &dr, true)[0].1, ApplyAction::Deleted);
        assert!(!config.join("helloworld.yaml").exists());
        assert_eq!(loaded(&config).destination_rules().count(), 0);
        assert_eq!(apply(&config, &dr, true)[0].1, ApplyAction::NotFound);
    }

    #[test]
    fn bad_yaml_is_refused_with_its_position_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("config");
        std::fs::create_dir(&config).unwrap();
        let dir = tmp.path().join("rules");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("good.yaml"), vs("a")).unwrap();
        std::fs::write(
            dir.join("bad.yaml"),
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec:\n  hosts: 3\n",
        )
        .unwrap();
        std::fs::write(dir.join(WORKLOAD_FILE), demo::WORKLOADS).unwrap();
        let e = format!(
            "{:#}",
            read_apply_input(std::slice::from_ref(&dir)).unwrap_err()
        );
        assert!(e.contains("bad.yaml: document 1, line 5"), "{e}");
        assert!(!e.contains("good.yaml"), "{e}");
        assert!(std::fs::read_dir(&config).unwrap().next().is_none());
        // Without the bad file the directory applies, its workload file skipped.
        std::fs::remove_file(dir.join("bad.yaml")).unwrap();
        assert_eq!(read_apply_input(&[dir]).unwrap().len(), 1);
    }
}
