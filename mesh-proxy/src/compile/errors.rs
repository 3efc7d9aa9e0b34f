//! The one error type of the compiler: every message names the resource and
//! the field path inside it, so that a NACK or a failed start says exactly
//! what to change.

use std::fmt;

use crate::xds::resources::StoredResourceError;
use crate::xds_json::XdsJsonError;

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// A setting that changes how traffic is handled and that the proxy
    /// cannot honour (`cluster "x": lb_policy CLUSTER_PROVIDED is not supported`).
    #[error("{resource}: {field}{} is not supported", spaced(.value))]
    Unsupported {
        resource: String,
        field: String,
        value: String,
    },
    /// A value the proxy understands but that is wrong.
    #[error("{resource}: {field}: {reason}")]
    Invalid {
        resource: String,
        field: String,
        reason: String,
    },
    #[error("{resource}: {field} is required")]
    Missing { resource: String, field: String },
    /// A typed config (`Any`) that does not decode as its declared type.
    #[error("{resource}: {field}: {source}")]
    Decode {
        resource: String,
        field: String,
        #[source]
        source: XdsJsonError,
    },
    #[error("{kind} {name:?} is defined more than once")]
    Duplicate { kind: &'static str, name: String },
    /// A kept resource whose bytes no longer decode (see
    /// [`crate::xds::resources::Encoded`]).
    #[error("{0}")]
    Stored(#[from] StoredResourceError),
}

fn spaced(value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        format!(" {value}")
    }
}

impl CompileError {
    /// The resource the error is about, e.g. `cluster "x"`.
    pub fn resource(&self) -> &str {
        match self {
            CompileError::Unsupported { resource, .. }
            | CompileError::Invalid { resource, .. }
            | CompileError::Missing { resource, .. }
            | CompileError::Decode { resource, .. } => resource,
            CompileError::Duplicate { kind, .. } => kind,
            CompileError::Stored(e) => &e.type_name,
        }
    }

    /// The field path inside the resource, e.g.
    /// `virtual_hosts[0].routes[2].route.timeout`.
    pub fn field(&self) -> &str {
        match self {
            CompileError::Unsupported { field, .. }
            | CompileError::Invalid { field, .. }
            | CompileError::Missing { field, .. }
            | CompileError::Decode { field, .. } => field,
            CompileError::Duplicate { name, .. } => name,
            CompileError::Stored(_) => "",
        }
    }
}

/// Where the compiler is: the resource and the field path so far.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    resource: String,
    path: String,
}

impl Ctx {
    pub(crate) fn new(kind: &str, name: &str) -> Ctx {
        Ctx {
            resource: format!("{kind} {name:?}"),
            path: String::new(),
        }
    }

    /// The context of a nested field.
    pub(crate) fn at(&self, field: impl fmt::Display) -> Ctx {
        Ctx {
            resource: self.resource.clone(),
            path: self.join(field),
        }
    }

    /// The context of element `i` of a repeated field.
    pub(crate) fn at_index(&self, field: &str, i: usize) -> Ctx {
        self.at(format_args!("{field}[{i}]"))
    }

    fn join(&self, field: impl fmt::Display) -> String {
        if self.path.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.path)
        }
    }

    /// The full path of a leaf field, for log notes.
    pub(crate) fn describe(&self, field: &str) -> String {
        format!("{}: {}", self.resource, self.join(field))
    }

    pub(crate) fn unsupported(&self, field: &str, value: impl fmt::Display) -> CompileError {
        CompileError::Unsupported {
            resource: self.resource.clone(),
            field: self.join(field),
            value: value.to_string(),
        }
    }

    pub(crate) fn invalid(&self, field: &str, reason: impl fmt::Display) -> CompileError {
        CompileError::Invalid {
            resource: self.resource.clone(),
            field: self.join(field),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn missing(&self, field: &str) -> CompileError {
        CompileError::Missing {
            resource: self.resource.clone(),
            field: self.join(field),
        }
    }

    pub(crate) fn decode(&self, field: &str, source: XdsJsonError) -> CompileError {
        CompileError::Decode {
            resource: self.resource.clone(),
            field: self.join(field),
            source,
        }
    }

    /// Logs a setting that is accepted but has no effect here (it only tunes
    /// Envoy's internals or observability).
    pub(crate) fn note_ignored(&self, field: &str, why: &str) {
        tracing::info!(field = %self.describe(field), "ignored: {why}");
    }
}
