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

/// The typed object of a resource.
// Objects are built once and kept in a Vec; boxing every variant would only
// burden matching on them.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    VirtualService(VirtualService),
    DestinationRule(DestinationRule),
    Gateway(Gateway),
    ServiceEntry(ServiceEntry),
    WorkloadEntry(WorkloadEntry),
    Sidecar(Sidecar),
    PeerAuthentication(PeerAuthentication),
    AuthorizationPolicy(AuthorizationPolicy),
    RequestAuthentication(RequestAuthentication),
    Namespace(Namespace),
    Service(Service),
    Deployment(Deployment),
    StatefulSet(StatefulSet),
    DaemonSet(DaemonSet),
    ReplicaSet(ReplicaSet),
    Job(Job),
    Pod(Pod),
    ServiceAccount(ServiceAccount),
    EndpointSlice(EndpointSlice),
    ConfigMap(ConfigMap),
    Secret(Secret),
}

impl Object {
    /// Whether this is one of the Istio kinds (as opposed to a Kubernetes object).
    pub fn is_istio(&self) -> bool {
        matches!(
            self,
            Object::VirtualService(_)
                | Object::DestinationRule(_)
                | Object::Gateway(_)
                | Object::ServiceEntry(_)
                | Object::WorkloadEntry(_)
                | Object::Sidecar(_)
                | Object::PeerAuthentication(_)
                | Object::AuthorizationPolicy(_)
                | Object::RequestAuthentication(_)
        )
    }

    /// The object as a JSON value, in its canonical serialised form.
    pub fn to_json(&self) -> serde_json::Value {
        macro_rules! ser {
            ($($v:ident),*) => {
                match self { $(Object::$v(o) => serde_json::to_value(o),)* }
            };
        }
        ser!(
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
        .unwrap_or(serde_json::Value::Null)
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

/// A document whose kind the mesh does not handle; reported, not an error.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub kind: String,
    pub api_version: String,
    pub name: Option<String>,
    pub source: Source,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: document {}, line {}: skipped {} {}{}",
            self.source.file,
            self.source.document,
            self.source.line,
            self.api_version,
            self.kind,
            self.name
                .as_deref()
                .map(|n| format!(" {n}"))
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

macro_rules! accessors {
    ($($fn_name:ident => $variant:ident),* $(,)?) => {
        impl Config {
            $(
                #[doc = concat!("Every loaded `", stringify!($variant), "` with its metadata.")]
                pub fn $fn_name(&self) -> impl Iterator<Item = (&ResourceMeta, &$variant)> {
                    self.resources.iter().filter_map(|r| match &r.object {
                        Object::$variant(o) => Some((&r.meta, o)),
                        _ => None,
                    })
                }
            )*
        }
    };
}

accessors! {
    virtual_services => VirtualService,
    destination_rules => DestinationRule,
    gateways => Gateway,
    service_entries => ServiceEntry,
    workload_entries => WorkloadEntry,
    sidecars => Sidecar,
    peer_authentications => PeerAuthentication,
    authorization_policies => AuthorizationPolicy,
    request_authentications => RequestAuthentication,
    namespaces => Namespace,
    services => Service,
    deployments => Deployment,
    pods => Pod,
    service_accounts => ServiceAccount,
    endpoint_slices => EndpointSlice,
    config_maps => ConfigMap,
    secrets => Secret,
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
