//! Loaded resources: each object with the metadata consumers need to name it
//! and point at it (kind, name, namespace, labels, file, document, line).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::networking::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
};
use crate::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::yaml_index::FieldIndex;

/// Where a resource came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source {
    /// File name as given (`-` or a caller's label for stdin and strings).
    pub file: Arc<str>,
    /// 1-based index of the YAML document in the file.
    pub document: usize,
    /// 1-based line where the object starts (of the list item for `kind: List`).
    pub line: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Identity and provenance of a loaded resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceMeta {
    /// `VirtualService`, `Service`, ...
    pub kind: String,
    /// The apiVersion as written (`networking.istio.io/v1alpha3`, `v1`, ...).
    pub api_version: String,
    pub name: String,
    /// The namespace, `default` when the file names none.
    pub namespace: String,
    /// Whether the namespace was written in the file (Istio's analyzer names
    /// resources without one as just `Kind name`).
    pub namespace_explicit: bool,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub source: Source,
}

impl ResourceMeta {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One loaded resource.
#[derive(Debug, Clone)]
pub struct Resource {
    pub meta: ResourceMeta,
    pub object: Object,
    pub(crate) fields: Arc<FieldIndex>,
}

impl Resource {
    /// Line of a field given by its path (`spec.http[0].route[1].destination`),
    /// falling back to the nearest enclosing field that has a line, and to the
    /// object's first line.
    pub fn line_of(&self, path: &str) -> usize {
        self.fields.line_of(path).unwrap_or(self.meta.source.line)
    }

    /// `file:line` of a field, for messages.
    pub fn location_of(&self, path: &str) -> String {
        format!("{}:{}", self.meta.source.file, self.line_of(path))
    }
}

/// The kinds of Istio's API the mesh does not implement, with their API group: a document of
/// one of them is loaded as [`Skipped`] and reported (by `meshctl analyze`, in the control
/// plane's `/debug/configz`), never applied.
pub const UNIMPLEMENTED_ISTIO_KINDS: &[(&str, &str)] = &[
    ("networking.istio.io", "WorkloadGroup"),
    ("networking.istio.io", "EnvoyFilter"),
    ("networking.istio.io", "ProxyConfig"),
    ("telemetry.istio.io", "Telemetry"),
    ("extensions.istio.io", "WasmPlugin"),
    ("install.istio.io", "IstioOperator"),
];

/// A document whose kind the mesh does not handle; reported, not an error.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub kind: String,
    pub api_version: String,
    pub name: Option<String>,
    pub source: Source,
    /// Why, when the kind alone does not say (an EndpointSlice of addresses the mesh cannot
    /// route to).
    pub reason: Option<String>,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: document {}, line {}: skipped {} {}{}{}",
            self.source.file,
            self.source.document,
            self.source.line,
            self.api_version,
            self.kind,
            self.name
                .as_deref()
                .map(|n| format!(" {n}"))
                .unwrap_or_default(),
            self.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )
    }
}

/// Everything loaded from a set of inputs: the good resources, the skipped
/// documents and the errors, side by side (one bad document hides nothing).
#[derive(Debug, Default)]
pub struct Config {
    pub resources: Vec<Resource>,
    pub skipped: Vec<Skipped>,
    pub errors: Vec<crate::loader::LoadError>,
}

/// The kinds the mesh loads, each once: the `Object` enum, `is_istio`, `to_json`, the
/// `Config` accessors and the kind lists come from this one table.
macro_rules! kinds {
    (
        istio { $($iv:ident => $ifn:ident),* $(,)? }
        kubernetes { $($kv:ident => $kfn:ident),* $(,)? }
    ) => {
        /// The typed object of a resource.
        // Objects are built once and kept in a Vec; boxing every variant would only
        // burden matching on them.
        #[expect(clippy::large_enum_variant)]
        #[derive(Debug, Clone, PartialEq)]
        pub enum Object {
            $($iv($iv),)*
            $($kv($kv),)*
        }

        /// The Istio kinds the mesh loads and translates, by name.
        pub const ISTIO_KINDS: &[&str] = &[$(stringify!($iv)),*];
        /// The Kubernetes kinds the mesh loads (for the registry and the analyzers), by name.
        pub const KUBERNETES_KINDS: &[&str] = &[$(stringify!($kv)),*];

        impl Object {
            /// Whether this is one of the Istio kinds (as opposed to a Kubernetes object).
            pub fn is_istio(&self) -> bool {
                matches!(self, $(Object::$iv(_))|*)
            }

            /// The object as a JSON value, in its canonical serialised form.
            pub fn to_json(&self) -> serde_json::Value {
                match self {
                    $(Object::$iv(o) => serde_json::to_value(o),)*
                    $(Object::$kv(o) => serde_json::to_value(o),)*
                }
                .unwrap_or(serde_json::Value::Null)
            }
        }

        impl Config {
            $(
                #[doc = concat!("Every loaded `", stringify!($iv), "` with its metadata.")]
                pub fn $ifn(&self) -> impl Iterator<Item = (&ResourceMeta, &$iv)> {
                    self.resources.iter().filter_map(|r| match &r.object {
                        Object::$iv(o) => Some((&r.meta, o)),
                        _ => None,
                    })
                }
            )*
            $(
                #[doc = concat!("Every loaded `", stringify!($kv), "` with its metadata.")]
                pub fn $kfn(&self) -> impl Iterator<Item = (&ResourceMeta, &$kv)> {
                    self.resources.iter().filter_map(|r| match &r.object {
                        Object::$kv(o) => Some((&r.meta, o)),
                        _ => None,
                    })
                }
            )*
        }
    };
}

kinds! {
    istio {
        VirtualService => virtual_services,
        DestinationRule => destination_rules,
        Gateway => gateways,
        ServiceEntry => service_entries,
        WorkloadEntry => workload_entries,
        Sidecar => sidecars,
        PeerAuthentication => peer_authentications,
        AuthorizationPolicy => authorization_policies,
        RequestAuthentication => request_authentications,
    }
    kubernetes {
        Namespace => namespaces,
        Service => services,
        Deployment => deployments,
        StatefulSet => stateful_sets,
        DaemonSet => daemon_sets,
        ReplicaSet => replica_sets,
        Job => jobs,
        Pod => pods,
        ServiceAccount => service_accounts,
        EndpointSlice => endpoint_slices,
        ConfigMap => config_maps,
        Secret => secrets,
    }
}

impl Config {
    /// Adds everything from `other`.
    pub fn extend(&mut self, other: Config) {
        self.resources.extend(other.resources);
        self.skipped.extend(other.skipped);
        self.errors.extend(other.errors);
    }

    /// Whether any input failed to load.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }
}
