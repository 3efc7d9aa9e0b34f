//! The proxy's own configuration model: what the data plane runs on.
//!
//! Envoy xDS resources (from a bootstrap file or from ADS) are compiled once
//! into these plain, immutable types by `crate::compile`; the request path
//! never looks at a protobuf. A [`Snapshot`] is the whole configuration in
//! force; it is swapped whole, so a request keeps the snapshot it started
//! with.
//!
//! Defaults are Envoy's (each `DEFAULT_*` names the Envoy field it mirrors),
//! so that the same xDS means the same thing here and in Envoy.

mod cluster;
mod listener;
mod route;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

pub use cluster::*;
pub use listener::*;
pub use route::*;

/// Everything the data plane needs, compiled and validated.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Listeners by name.
    pub listeners: BTreeMap<String, Arc<ListenerConfig>>,
    /// Route tables by `RouteConfiguration.name` (RDS or static).
    pub routes: BTreeMap<String, Arc<RouteTable>>,
    /// Clusters by name.
    pub clusters: BTreeMap<String, Arc<ClusterConfig>>,
    /// Endpoints by EDS service name (`eds_cluster_config.service_name`, or
    /// the cluster name when empty). Static clusters carry theirs inline.
    pub endpoints: BTreeMap<String, Arc<EndpointSet>>,
    /// TLS secrets by name (static `secrets` or SDS), referenced by
    /// [`TlsCertificateSource::Sds`] and [`TlsCaSource::Sds`].
    pub secrets: BTreeMap<String, Arc<TlsSecret>>,
}

/// An SDS `Secret` the TLS layer can use.
#[derive(Debug, Clone)]
pub enum TlsSecret {
    /// `tls_certificate`: always [`TlsCertificateSource::InlinePem`].
    Certificate(TlsCertificateSource),
    /// `validation_context`: always [`TlsCaSource::InlinePem`].
    ValidationContext(TlsValidation),
}

impl Snapshot {
    /// The endpoints a cluster sends to: inline for STATIC, from EDS otherwise.
    pub fn endpoints_of(&self, cluster: &ClusterConfig) -> Option<Arc<EndpointSet>> {
        match &cluster.discovery {
            Discovery::Static(set) => Some(set.clone()),
            Discovery::Eds { service_name } => self.endpoints.get(service_name).cloned(),
        }
    }
}

/// Where a resource came from and which version it is, for `/config_dump`.
#[derive(Debug, Clone)]
pub struct ResourceVersion {
    /// `version_info` of the xDS response that carried it; empty for static.
    pub version_info: String,
    pub last_updated: SystemTime,
}

/// Envoy's `FractionalPercent`: `numerator / denominator`, where denominator
/// is 100, 10,000 or 1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction {
    pub numerator: u32,
    pub denominator: u32,
}

impl Fraction {
    pub const ALWAYS: Fraction = Fraction {
        numerator: 100,
        denominator: 100,
    };

    /// Whether a uniformly drawn `roll` in `0..denominator` falls in the
    /// fraction. Numerators above the denominator count as 100%, as in Envoy.
    pub fn contains(&self, roll: u32) -> bool {
        roll < self.numerator.min(self.denominator)
    }

    /// Draws once from the thread RNG.
    pub fn sample(&self) -> bool {
        if self.denominator == 0 {
            return false;
        }
        self.contains(rand::random_range(0..self.denominator))
    }
}

/// A string matcher (Envoy `type.matcher.v3.StringMatcher`).
#[derive(Debug, Clone)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    /// Envoy's `safe_regex` (RE2): matches the whole value.
    Regex(regex::Regex),
}

#[derive(Debug, Clone)]
pub struct StringMatcher {
    pub pattern: StringMatch,
    pub ignore_case: bool,
}

/// A header to add (`HeaderValueOption`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderToAdd {
    pub name: String,
    pub value: String,
    /// `append_action`: APPEND_IF_EXISTS_OR_ADD (true) or OVERWRITE_IF_EXISTS_OR_ADD (false).
    /// ADD_IF_ABSENT is `append == false && only_if_absent`.
    pub append: bool,
    pub only_if_absent: bool,
}

/// Header mutations applied at one level (route table, virtual host, route,
/// weighted cluster). Envoy applies the most specific level last.
#[derive(Debug, Clone, Default)]
pub struct HeaderMutations {
    pub request_add: Vec<HeaderToAdd>,
    pub request_remove: Vec<String>,
    pub response_add: Vec<HeaderToAdd>,
    pub response_remove: Vec<String>,
}

/// Access log sink and format (`envoy.access_loggers.file` / `stdout` / `stderr`).
#[derive(Debug, Clone)]
pub struct AccessLogConfig {
    pub sink: AccessLogSink,
    pub format: AccessLogFormat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogSink {
    Stdout,
    Stderr,
    File(std::path::PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// Envoy's default text format.
    Default,
    /// A `text_format_source` with `%COMMAND%` operators.
    Text(String),
    /// A `json_format`: key to `%COMMAND%` template.
    Json(Vec<(String, String)>),
}
