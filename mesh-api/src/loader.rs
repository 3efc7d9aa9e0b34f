//! Reads Istio and Kubernetes YAML (or JSON) into typed [`Resource`]s.
//!
//! Inputs are files, directories (recursively: `.yaml`, `.yml`, `.json`),
//! readers (stdin) and strings. A stream is split into documents first, so a
//! broken document yields one [`LoadError`] and the others still load. Each
//! document is indexed (field path -> line and column) and then decoded with
//! `serde_path_to_error`, so an error names the file, the document, the line,
//! the column and the field: `reviews.yaml: document 2, line 14, column 19:
//! spec.http[0].route[1].weight: invalid type: string "ten", expected u32`.
//! Kinds the mesh does not handle are reported as [`Skipped`], not as errors.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::constants::DEFAULT_NAMESPACE;
use crate::networking::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
};
use crate::resource::{Config, Object, Resource, ResourceMeta, Skipped, Source};
use crate::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::yaml_index::{FieldIndex, Position, split_documents};

/// API groups of the Istio kinds and the versions users have in their files.
pub const NETWORKING_GROUP: &str = "networking.istio.io";
pub const SECURITY_GROUP: &str = "security.istio.io";
pub const NETWORKING_VERSIONS: &[&str] = &["v1alpha3", "v1beta1", "v1"];
pub const SECURITY_VERSIONS: &[&str] = &["v1beta1", "v1"];

/// What went wrong in a document, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentErrorKind {
    /// The text is not valid YAML.
    Syntax,
    /// A value has the wrong type or an impossible value.
    InvalidValue,
    /// A required field is absent.
    MissingField,
    /// A field the schema does not have.
    UnknownField,
    /// An enum field holds a value the schema does not list.
    UnknownEnumValue,
    /// A duration that cannot be read (`10`, `1x`, `-1s`).
    InvalidDuration,
    /// A known Istio kind in an apiVersion the mesh does not accept.
    UnsupportedVersion,
}

/// An error in one document of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    pub file: Arc<str>,
    /// 1-based document index in the file.
    pub document: usize,
    /// 1-based line and column in the file.
    pub line: usize,
    pub column: usize,
    /// Field path (`spec.http[0].route[1].weight`), empty for the whole document.
    pub field: String,
    pub kind: DocumentErrorKind,
    pub message: String,
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: document {}, line {}, column {}: ",
            self.file, self.document, self.line, self.column
        )?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Why an input (or part of it) could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Document(DocumentError),
}

impl LoadError {
    /// The document error, when the error is about a document.
    pub fn as_document(&self) -> Option<&DocumentError> {
        match self {
            LoadError::Document(d) => Some(d),
            LoadError::Io { .. } => None,
        }
    }

    /// The file the error is about.
    pub fn file(&self) -> &str {
        match self {
            LoadError::Io { path, .. } => path,
            LoadError::Document(d) => &d.file,
        }
    }
}

/// Loads every path: files, directories (recursively), and `-` for stdin.
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Config {
    let mut config = Config::default();
    for p in paths {
        config.extend(load_path(p.as_ref()));
    }
    config
}

/// Loads one file, one directory (recursively, `.yaml`/`.yml`/`.json` in name
/// order) or stdin (`-`).
pub fn load_path(path: &Path) -> Config {
    if path == Path::new("-") {
        return load_reader("-", std::io::stdin().lock());
    }
    if path.is_dir() {
        let mut files = Vec::new();
        let mut config = Config::default();
        collect_files(path, &mut files, &mut config);
        files.sort();
        for f in files {
            config.extend(load_file(&f));
        }
        return config;
    }
    load_file(path)
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>, config: &mut Config) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(source) => {
            config.errors.push(LoadError::Io {
                path: dir.display().to_string(),
                source,
            });
            return;
        }
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            collect_files(&p, files, config);
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            files.push(p);
        }
    }
}

fn load_file(path: &Path) -> Config {
    let name = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => load_bytes(&name, &bytes),
        Err(source) => Config {
            errors: vec![LoadError::Io { path: name, source }],
            ..Config::default()
        },
    }
}

/// Loads everything a reader yields (stdin), naming it `name` in errors.
pub fn load_reader(name: &str, mut reader: impl Read) -> Config {
    let mut bytes = Vec::new();
    match reader.read_to_end(&mut bytes) {
        Ok(_) => load_bytes(name, &bytes),
        Err(source) => Config {
            errors: vec![LoadError::Io {
                path: name.to_string(),
                source,
            }],
            ..Config::default()
        },
    }
}

fn load_bytes(name: &str, bytes: &[u8]) -> Config {
    match std::str::from_utf8(bytes) {
        Ok(text) => load_str(name, text),
        Err(e) => Config {
            errors: vec![LoadError::Io {
                path: name.to_string(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }],
            ..Config::default()
        },
    }
}

/// Loads a YAML (or JSON) stream held in memory, naming it `name` in errors.
pub fn load_str(name: &str, text: &str) -> Config {
    let file: Arc<str> = Arc::from(name);
    let mut config = Config::default();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for doc in split_documents(text) {
        let ctx = DocContext {
            file: file.clone(),
            document: doc.index,
        };
        let index = match FieldIndex::build(doc.text, doc.first_line) {
            Ok(i) => i,
            Err(e) => {
                config.errors.push(ctx.error(
                    e.position,
                    "",
                    DocumentErrorKind::Syntax,
                    if e.message.is_empty() {
                        "invalid YAML".to_string()
                    } else {
                        e.message
                    },
                ));
                continue;
            }
        };
        let value: Value = match serde_saphyr::from_str(doc.text) {
            Ok(v) => v,
            Err(e) => {
                let position = e
                    .location()
                    .map(|l| Position {
                        line: l.line() as usize + doc.first_line - 1,
                        column: l.column() as usize,
                    })
                    .unwrap_or(Position {
                        line: doc.first_line,
                        column: 1,
                    });
                config.errors.push(ctx.error(
                    position,
                    "",
                    DocumentErrorKind::Syntax,
                    yaml_error_message(&e),
                ));
                continue;
            }
        };
        match value {
            Value::Null => {}
            Value::Object(_) => {
                let is_list = value.get("kind").and_then(Value::as_str) == Some("List")
                    && value.get("items").is_some_and(Value::is_array);
                if is_list {
                    let Value::Object(mut map) = value else {
                        continue;
                    };
                    let items = match map.remove("items") {
                        Some(Value::Array(items)) => items,
                        _ => Vec::new(),
                    };
                    for (i, item) in items.into_iter().enumerate() {
                        let item_index = index.rooted_at(&format!("items[{i}]"));
                        ctx.load_object(item, item_index, &mut config);
                    }
                } else {
                    ctx.load_object(value, index, &mut config);
                }
            }
            other => config.errors.push(ctx.error(
                index.position_of("").unwrap_or(Position {
                    line: doc.first_line,
                    column: 1,
                }),
                "",
                DocumentErrorKind::InvalidValue,
                format!(
                    "a Kubernetes object must be a mapping, found {}",
                    json_type(&other)
                ),
            )),
        }
    }
    config
}

/// The parser's message, except for its limits: those say which limit and
/// why it exists rather than the parser's own names for them.
fn yaml_error_message(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::budget::BudgetBreach;
    let mut inner = e;
    while let serde_saphyr::Error::AliasError { error, .. }
    | serde_saphyr::Error::WithSnippet { error, .. } = inner
    {
        inner = error;
    }
    let serde_saphyr::Error::Budget { breach, .. } = inner else {
        return first_line_of(&e.to_string());
    };
    let what = match breach {
        BudgetBreach::Nodes { nodes } => format!("more than {} nodes", nodes.saturating_sub(1)),
        BudgetBreach::Aliases { aliases } => {
            format!("more than {} aliases", aliases.saturating_sub(1))
        }
        BudgetBreach::Events { events } => {
            format!("more than {} parser events", events.saturating_sub(1))
        }
        BudgetBreach::Anchors { anchors } => {
            format!("more than {} anchors", anchors.saturating_sub(1))
        }
        BudgetBreach::Depth { depth } => format!("nesting deeper than {}", depth.saturating_sub(1)),
        other => format!("{other:?}"),
    };
    format!(
        "document too large to load: {what} once its aliases are expanded \
         (a limit against YAML alias bombs; no Istio resource comes near it)"
    )
}

fn first_line_of(message: &str) -> String {
    message.lines().next().unwrap_or(message).to_string()
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

struct DocContext {
    file: Arc<str>,
    document: usize,
}

/// Top level fields of an Istio object (`status` is written by controllers and ignored).
const TOP_LEVEL_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

/// An Istio object as written: metadata and spec.
#[derive(Deserialize)]
struct IstioDocument<S> {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: S,
}

impl DocContext {
    fn error(
        &self,
        position: Position,
        field: &str,
        kind: DocumentErrorKind,
        message: String,
    ) -> LoadError {
        LoadError::Document(DocumentError {
            file: self.file.clone(),
            document: self.document,
            line: position.line,
            column: position.column,
            field: field.to_string(),
            kind,
            message,
        })
    }

    fn load_object(&self, value: Value, index: FieldIndex, config: &mut Config) {
        let position = index
            .position_of("")
            .unwrap_or(Position { line: 0, column: 0 });
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if kind.is_empty() || api_version.is_empty() {
            let missing = if kind.is_empty() {
                "kind"
            } else {
                "apiVersion"
            };
            config.errors.push(self.error(
                position,
                "",
                DocumentErrorKind::MissingField,
                format!("missing field `{missing}`"),
            ));
            return;
        }
        let (group, version) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version.as_str()),
        };
        let source = Source {
            file: self.file.clone(),
            document: self.document,
            line: position.line,
        };

        macro_rules! istio {
            ($ty:ident, $versions:expr) => {{
                if !$versions.contains(&version) {
                    config.errors.push(self.error(
                        index.position_of("apiVersion").unwrap_or(position),
                        "apiVersion",
                        DocumentErrorKind::UnsupportedVersion,
                        format!(
                            "{} {api_version} is not supported; use one of {}",
                            kind,
                            $versions
                                .iter()
                                .map(|v| format!("{group}/{v}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                    return;
                }
                if let Some(key) = value
                    .as_object()
                    .and_then(|o| o.keys().find(|k| !TOP_LEVEL_FIELDS.contains(&k.as_str())))
                {
                    config.errors.push(self.error(
                        index.position_of(key).unwrap_or(position),
                        key,
                        DocumentErrorKind::UnknownField,
                        format!(
                            "unknown field `{key}`, expected one of `apiVersion`, `kind`, `metadata`, `spec`, `status`"
                        ),
                    ));
                    return;
                }
                self.decode::<IstioDocument<_>>(value, &index)
                    .map(|d| Object::$ty($ty { metadata: d.metadata, spec: d.spec }))
            }};
        }
        macro_rules! kube {
            ($ty:ty, $variant:ident) => {
                self.decode::<$ty>(value, &index).map(Object::$variant)
            };
        }
        use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core};
        let decoded = match (group, version, kind.as_str()) {
            (NETWORKING_GROUP, _, "VirtualService") => istio!(VirtualService, NETWORKING_VERSIONS),
            (NETWORKING_GROUP, _, "DestinationRule") => {
                istio!(DestinationRule, NETWORKING_VERSIONS)
            }
            (NETWORKING_GROUP, _, "Gateway") => istio!(Gateway, NETWORKING_VERSIONS),
            (NETWORKING_GROUP, _, "ServiceEntry") => istio!(ServiceEntry, NETWORKING_VERSIONS),
            (NETWORKING_GROUP, _, "WorkloadEntry") => istio!(WorkloadEntry, NETWORKING_VERSIONS),
            (NETWORKING_GROUP, _, "Sidecar") => istio!(Sidecar, NETWORKING_VERSIONS),
            (SECURITY_GROUP, _, "PeerAuthentication") => {
                istio!(PeerAuthentication, SECURITY_VERSIONS)
            }
            (SECURITY_GROUP, _, "AuthorizationPolicy") => {
                istio!(AuthorizationPolicy, SECURITY_VERSIONS)
            }
            (SECURITY_GROUP, _, "RequestAuthentication") => {
                istio!(RequestAuthentication, SECURITY_VERSIONS)
            }
            ("", "v1", "Namespace") => kube!(core::Namespace, Namespace),
            ("", "v1", "Service") => kube!(core::Service, Service),
            ("", "v1", "Pod") => kube!(core::Pod, Pod),
            ("", "v1", "ServiceAccount") => kube!(core::ServiceAccount, ServiceAccount),
            ("", "v1", "ConfigMap") => kube!(core::ConfigMap, ConfigMap),
            ("", "v1", "Secret") => kube!(core::Secret, Secret),
            ("apps", "v1", "Deployment") => kube!(apps::Deployment, Deployment),
            ("apps", "v1", "StatefulSet") => kube!(apps::StatefulSet, StatefulSet),
            ("apps", "v1", "DaemonSet") => kube!(apps::DaemonSet, DaemonSet),
            ("apps", "v1", "ReplicaSet") => kube!(apps::ReplicaSet, ReplicaSet),
            ("batch", "v1", "Job") => kube!(batch::Job, Job),
            ("discovery.k8s.io", "v1", "EndpointSlice") => {
                kube!(
                    k8s_openapi::api::discovery::v1::EndpointSlice,
                    EndpointSlice
                )
            }
            _ => {
                let name = value
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                config.skipped.push(Skipped {
                    kind,
                    api_version,
                    name,
                    source,
                    reason: None,
                });
                return;
            }
        };
        let object = match decoded {
            Ok(o) => o,
            Err(e) => {
                config.errors.push(e);
                return;
            }
        };
        let metadata = object_meta(&object);
        let name = metadata
            .name
            .clone()
            .or_else(|| metadata.generate_name.clone())
            .unwrap_or_default();
        if name.is_empty() && object.is_istio() {
            config.errors.push(self.error(
                index.position_of("metadata").unwrap_or(position),
                "metadata.name",
                DocumentErrorKind::MissingField,
                "missing field `name`".to_string(),
            ));
            return;
        }
        let meta = ResourceMeta {
            kind,
            api_version,
            name,
            namespace: metadata
                .namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
            namespace_explicit: metadata.namespace.is_some(),
            labels: metadata.labels.clone().unwrap_or_default(),
            annotations: metadata.annotations.clone().unwrap_or_default(),
            source,
        };
        config.resources.push(Resource {
            meta,
            object,
            fields: Arc::new(index),
        });
    }

    fn decode<T: DeserializeOwned>(
        &self,
        value: Value,
        index: &FieldIndex,
    ) -> Result<T, LoadError> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let field = match e.path().to_string() {
                p if p == "." => String::new(),
                p => p,
            };
            let message = e.inner().to_string();
            let kind = classify(&message);
            let position = index
                .position_of(&field)
                .unwrap_or(Position { line: 0, column: 0 });
            self.error(position, &field, kind, message)
        })
    }
}

fn classify(message: &str) -> DocumentErrorKind {
    if message.starts_with("missing field") {
        DocumentErrorKind::MissingField
    } else if message.starts_with("unknown field") {
        DocumentErrorKind::UnknownField
    } else if message.starts_with("unknown variant") {
        DocumentErrorKind::UnknownEnumValue
    } else if message.contains("duration") {
        DocumentErrorKind::InvalidDuration
    } else {
        DocumentErrorKind::InvalidValue
    }
}

fn object_meta(object: &Object) -> &ObjectMeta {
    macro_rules! meta {
        ($($v:ident),*) => {
            match object { $(Object::$v(o) => &o.metadata,)* }
        };
    }
    meta!(
        VirtualService,
        DestinationRule,
        Gateway,
        ServiceEntry,
        WorkloadEntry,
        Sidecar,
        PeerAuthentication,
        AuthorizationPolicy,
        RequestAuthentication,
        Namespace,
        Service,
        Deployment,
        StatefulSet,
        DaemonSet,
        ReplicaSet,
        Job,
        Pod,
        ServiceAccount,
        EndpointSlice,
        ConfigMap,
        Secret
    )
}

/// Labels of an object's pod template (or of the pod itself), for selector matching.
pub fn workload_labels(object: &Object) -> Option<&BTreeMap<String, String>> {
    match object {
        Object::Pod(p) => p.metadata.labels.as_ref(),
        Object::Deployment(d) => template(&d.spec.template),
        Object::StatefulSet(d) => template(&d.spec.template),
        Object::DaemonSet(d) => template(&d.spec.template),
        Object::ReplicaSet(d) => d.spec.template.as_ref().and_then(template),
        Object::Job(d) => d.spec.as_ref().and_then(|s| template(&s.template)),
        Object::WorkloadEntry(w) => Some(&w.spec.labels),
        _ => None,
    }
}

fn template(t: &k8s_openapi::api::core::v1::PodTemplateSpec) -> Option<&BTreeMap<String, String>> {
    t.metadata.as_ref().and_then(|m| m.labels.as_ref())
}
