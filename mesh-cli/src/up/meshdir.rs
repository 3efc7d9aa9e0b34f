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
}
