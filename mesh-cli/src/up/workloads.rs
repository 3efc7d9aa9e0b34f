//! The workload file (`workloads.yaml`) of a local mesh directory: which processes to start,
//! with the identity (namespace, labels, service account) their sidecars present to the
//! control plane and the service they serve.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

/// Name of the workload file in a mesh directory.
pub const WORKLOAD_FILE: &str = "workloads.yaml";
/// Namespace of a workload that names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Service account of a workload that names none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The placeholder in a command replaced by the app's port.
pub const PORT_PLACEHOLDER: &str = "{port}";

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadFile {
    pub workloads: Vec<Workload>,
}

/// One process behind its own sidecar.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Workload {
    /// Unique name: the pod name in the sidecar's node id and the WorkloadEntry's name.
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default = "default_service_account")]
    pub service_account: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The service this workload is an endpoint of; none for a client-only workload.
    pub service: Option<ServiceRef>,
    /// Program and arguments; `{port}` is replaced by the app's port. Empty: a sidecar with no
    /// process behind it, for clients run by hand through its `http_proxy` address.
    #[serde(default)]
    pub command: Vec<String>,
    /// Extra environment for the process (`PORT` and `http_proxy` are always set).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// `service: {name, port}`: the ServiceEntry host `NAME.NAMESPACE.svc.cluster.local` and port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRef {
    pub name: String,
    pub port: u16,
    /// Istio protocol of the port (`HTTP` by default).
    #[serde(default = "default_protocol")]
    pub protocol: String,
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}
fn default_service_account() -> String {
    DEFAULT_SERVICE_ACCOUNT.to_string()
}
fn default_protocol() -> String {
    "HTTP".to_string()
}

/// A workload file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadFileError {
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: workloads[{index}] ({name:?}): {reason}")]
    Invalid {
        file: String,
        index: usize,
        name: String,
        reason: String,
    },
    #[error("{file}: no workloads")]
    Empty { file: String },
}

impl WorkloadFile {
    /// Parses and checks a workload file; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<WorkloadFile, WorkloadFileError> {
        let parsed: WorkloadFile =
            serde_saphyr::from_str(text).map_err(|e| WorkloadFileError::Syntax {
                file: file.to_string(),
                message: e.to_string(),
            })?;
        if parsed.workloads.is_empty() {
            return Err(WorkloadFileError::Empty {
                file: file.to_string(),
            });
        }
        let mut names = BTreeSet::new();
        for (index, w) in parsed.workloads.iter().enumerate() {
            let invalid = |reason: String| WorkloadFileError::Invalid {
                file: file.to_string(),
                index,
                name: w.name.clone(),
                reason,
            };
            if !is_dns_label(&w.name) {
                return Err(invalid(
                    "name must be a DNS label (lower case letters, digits, '-')".into(),
                ));
            }
            if !is_dns_label(&w.namespace) {
                return Err(invalid(format!(
                    "namespace {:?} must be a DNS label",
                    w.namespace
                )));
            }
            if !names.insert((w.namespace.clone(), w.name.clone())) {
                return Err(invalid(
                    "another workload has this name and namespace".into(),
                ));
            }
            if let Some(s) = &w.service {
                if !is_dns_label(&s.name) {
                    return Err(invalid(format!(
                        "service.name {:?} must be a DNS label",
                        s.name
                    )));
                }
                if s.port == 0 {
                    return Err(invalid("service.port must not be 0".into()));
                }
                if w.labels.is_empty() {
                    return Err(invalid(
                        "a workload with a service needs labels (the ServiceEntry selects them)"
                            .into(),
                    ));
                }
            }
            if w.command.first().is_some_and(|p| p.trim().is_empty()) {
                return Err(invalid("command[0] (the program) is empty".into()));
            }
        }
        Ok(parsed)
    }
}

impl Workload {
    /// The command with `{port}` replaced.
    pub fn command_with_port(&self, port: u16) -> Vec<String> {
        self.command
            .iter()
            .map(|a| a.replace(PORT_PLACEHOLDER, &port.to_string()))
            .collect()
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_demo_with_defaults() {
        let f = WorkloadFile::parse("demo", crate::up::demo::WORKLOADS).unwrap();
        assert_eq!(f.workloads.len(), 2);
        let safe = &f.workloads[0];
        assert_eq!(safe.name, "helloworld-safe");
        assert_eq!(safe.namespace, "default");
        assert_eq!(safe.labels["version"], "safe");
        assert_eq!(
            safe.service,
            Some(ServiceRef {
                name: "helloworld".into(),
                port: 5000,
                protocol: "HTTP".into()
            })
        );
        assert!(safe.command_with_port(4321).contains(&"4321".to_string()));
    }

    #[test]
    fn errors_name_the_file_and_the_workload() {
        let e = WorkloadFile::parse("w.yaml", "workloads:\n- name: Bad_Name\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("w.yaml: workloads[0] (\"Bad_Name\")"), "{e}");
        let e = WorkloadFile::parse("w.yaml", "workloads:\n- name: a\n  colour: red\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("w.yaml") && e.contains("colour"), "{e}");
        let e = WorkloadFile::parse(
            "w.yaml",
            "workloads:\n- name: a\n  service: {name: s, port: 80}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("needs labels"), "{e}");
        let e = WorkloadFile::parse("w.yaml", "workloads:\n- name: a\n- name: a\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("workloads[1]"), "{e}");
        assert!(WorkloadFile::parse("w.yaml", "workloads: []\n").is_err());
    }
}
