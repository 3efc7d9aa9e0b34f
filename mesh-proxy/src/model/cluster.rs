//! Clusters, their endpoints, load balancing and resilience thresholds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::StringMatcher;

/// `Cluster.connect_timeout` default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upstream `HttpProtocolOptions.idle_timeout` default.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// `LeastRequestLbConfig.choice_count` default.
pub const DEFAULT_LEAST_REQUEST_CHOICES: u32 = 2;
/// `RingHashLbConfig.minimum_ring_size` / `maximum_ring_size` defaults.
pub const DEFAULT_RING_MIN: u64 = 1024;
pub const DEFAULT_RING_MAX: u64 = 8 * 1024 * 1024;
/// `MaglevLbConfig.table_size` default (a prime).
pub const DEFAULT_MAGLEV_TABLE_SIZE: u64 = 65537;
/// Circuit breaker threshold defaults (`CircuitBreakers.Thresholds`).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
pub const DEFAULT_MAX_PENDING_REQUESTS: u32 = 1024;
pub const DEFAULT_MAX_REQUESTS: u32 = 1024;
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// `RetryBudget` defaults.
pub const DEFAULT_RETRY_BUDGET_PERCENT: f64 = 20.0;
pub const DEFAULT_RETRY_BUDGET_MIN_CONCURRENCY: u32 = 3;
/// `OutlierDetection` defaults.
pub const DEFAULT_OUTLIER_CONSECUTIVE_5XX: u32 = 5;
pub const DEFAULT_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE: u32 = 5;
pub const DEFAULT_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE: u32 = 5;
pub const DEFAULT_OUTLIER_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_OUTLIER_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
pub const DEFAULT_OUTLIER_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
pub const DEFAULT_OUTLIER_MAX_EJECTION_PERCENT: u32 = 10;
/// `OutlierDetection` success-rate defaults (`success_rate_stdev_factor` is
/// in thousandths: 1900 is 1.9 standard deviations).
pub const DEFAULT_OUTLIER_SUCCESS_RATE_MINIMUM_HOSTS: u32 = 5;
pub const DEFAULT_OUTLIER_SUCCESS_RATE_REQUEST_VOLUME: u32 = 100;
pub const DEFAULT_OUTLIER_SUCCESS_RATE_STDEV_FACTOR: u32 = 1900;
pub const DEFAULT_OUTLIER_ENFORCING_SUCCESS_RATE: u32 = 100;
/// `OutlierDetection` failure-percentage defaults (enforcing is off).
pub const DEFAULT_OUTLIER_FAILURE_PERCENTAGE_THRESHOLD: u32 = 85;
pub const DEFAULT_OUTLIER_FAILURE_PERCENTAGE_MINIMUM_HOSTS: u32 = 5;
pub const DEFAULT_OUTLIER_FAILURE_PERCENTAGE_REQUEST_VOLUME: u32 = 50;
pub const DEFAULT_OUTLIER_ENFORCING_FAILURE_PERCENTAGE: u32 = 0;

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub name: String,
    pub discovery: Discovery,
    pub connect_timeout: Duration,
    pub lb_policy: LbPolicy,
    pub protocol: UpstreamProtocol,
    pub circuit_breakers: CircuitBreakers,
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream `common_http_protocol_options.idle_timeout`.
    pub idle_timeout: Option<Duration>,
    pub max_connection_duration: Option<Duration>,
    /// `max_requests_per_connection`; 1 disables keep-alive.
    pub max_requests_per_connection: Option<u32>,
    /// Upstream TLS (`transport_socket`); `None` is plaintext.
    pub tls: Option<UpstreamTls>,
    /// `transport_socket_matches`: per endpoint, the first entry whose
    /// labels all appear in the endpoint's `envoy.transport_socket_match`
    /// metadata picks the transport; no match falls back to `tls`.
    pub transport_socket_matches: Vec<TransportSocketMatch>,
    /// `per_connection_buffer_limit_bytes`, used as the retry replay limit.
    pub buffer_limit_bytes: u32,
}

#[derive(Debug, Clone)]
pub enum Discovery {
    /// STATIC with its inline `load_assignment`.
    Static(Arc<EndpointSet>),
    /// EDS, keyed by the service name (the cluster name when empty).
    Eds { service_name: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest {
        choice_count: u32,
    },
    Random,
    RingHash {
        minimum_ring_size: u64,
        maximum_ring_size: u64,
    },
    Maglev {
        table_size: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
    /// `use_downstream_protocol_config`.
    UseDownstream,
}

#[derive(Debug, Clone)]
pub struct CircuitBreakers {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
    pub retry_budget: Option<RetryBudget>,
    /// `per_host_thresholds[].max_connections`.
    pub per_host_max_connections: Option<u32>,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        CircuitBreakers {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_pending_requests: DEFAULT_MAX_PENDING_REQUESTS,
            max_requests: DEFAULT_MAX_REQUESTS,
            max_retries: DEFAULT_MAX_RETRIES,
            retry_budget: None,
            per_host_max_connections: None,
        }
    }
}

/// A retry budget replaces `max_retries`: active retries may not exceed
/// `budget_percent` of active requests, but `min_retry_concurrency` retries
/// are always allowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    pub budget_percent: f64,
    pub min_retry_concurrency: u32,
}

#[derive(Debug, Clone)]
pub struct OutlierDetection {
    pub consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    pub consecutive_local_origin_failure: u32,
    pub split_external_local_origin_failure: bool,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
    /// `enforcing_*` percentages (0–100).
    pub enforcing_consecutive_5xx: u32,
    pub enforcing_consecutive_gateway_failure: u32,
    pub enforcing_consecutive_local_origin_failure: u32,
    /// Success-rate ejection, run at each `interval` over the hosts with
    /// at least `success_rate_request_volume` requests in it.
    pub success_rate_minimum_hosts: u32,
    pub success_rate_request_volume: u32,
    /// Thousandths of a standard deviation below the mean.
    pub success_rate_stdev_factor: u32,
    pub enforcing_success_rate: u32,
    /// Failure-percentage ejection, run at each `interval`.
    pub failure_percentage_threshold: u32,
    pub failure_percentage_minimum_hosts: u32,
    pub failure_percentage_request_volume: u32,
    pub enforcing_failure_percentage: u32,
}

impl Default for OutlierDetection {
    /// Envoy's defaults for every field.
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx: DEFAULT_OUTLIER_CONSECUTIVE_5XX,
            consecutive_gateway_failure: DEFAULT_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE,
            consecutive_local_origin_failure: DEFAULT_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
            split_external_local_origin_failure: false,
            interval: DEFAULT_OUTLIER_INTERVAL,
            base_ejection_time: DEFAULT_OUTLIER_BASE_EJECTION_TIME,
            max_ejection_time: DEFAULT_OUTLIER_MAX_EJECTION_TIME,
            max_ejection_percent: DEFAULT_OUTLIER_MAX_EJECTION_PERCENT,
            enforcing_consecutive_5xx: 100,
            enforcing_consecutive_gateway_failure: 0,
            enforcing_consecutive_local_origin_failure: 100,
            success_rate_minimum_hosts: DEFAULT_OUTLIER_SUCCESS_RATE_MINIMUM_HOSTS,
            success_rate_request_volume: DEFAULT_OUTLIER_SUCCESS_RATE_REQUEST_VOLUME,
            success_rate_stdev_factor: DEFAULT_OUTLIER_SUCCESS_RATE_STDEV_FACTOR,
            enforcing_success_rate: DEFAULT_OUTLIER_ENFORCING_SUCCESS_RATE,
            failure_percentage_threshold: DEFAULT_OUTLIER_FAILURE_PERCENTAGE_THRESHOLD,
            failure_percentage_minimum_hosts: DEFAULT_OUTLIER_FAILURE_PERCENTAGE_MINIMUM_HOSTS,
            failure_percentage_request_volume: DEFAULT_OUTLIER_FAILURE_PERCENTAGE_REQUEST_VOLUME,
            enforcing_failure_percentage: DEFAULT_OUTLIER_ENFORCING_FAILURE_PERCENTAGE,
        }
    }
}

/// Upstream TLS settings of a cluster (filled in by the mTLS work).
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub sni: Option<String>,
    pub alpn_protocols: Vec<String>,
    pub certificate: Option<super::TlsCertificateSource>,
    pub trusted_ca: Option<super::TlsCaSource>,
    /// Acceptable server identities (SPIFFE URI SANs).
    pub match_subject_alt_names: Vec<StringMatcher>,
    /// `common_tls_context.tls_params` protocol versions.
    pub versions: super::TlsVersions,
}

/// One `Cluster.TransportSocketMatch`.
#[derive(Debug, Clone)]
pub struct TransportSocketMatch {
    pub name: String,
    /// `match`: every pair must be in the endpoint's metadata; empty
    /// matches every endpoint.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `None`: plaintext (`raw_buffer`).
    pub tls: Option<UpstreamTls>,
}

impl ClusterConfig {
    /// The transport for an endpoint: the first matching
    /// `transport_socket_matches` entry, else the cluster's own.
    pub fn transport_for(&self, endpoint: &Endpoint) -> Option<&UpstreamTls> {
        for m in &self.transport_socket_matches {
            if m.labels
                .iter()
                .all(|(k, v)| endpoint.transport_socket_match.get(k) == Some(v))
            {
                return m.tls.as_ref();
            }
        }
        self.tls.as_ref()
    }
}

/// A `ClusterLoadAssignment`.
#[derive(Debug, Clone, Default)]
pub struct EndpointSet {
    pub cluster_name: String,
    pub localities: Vec<LocalityEndpoints>,
}

impl EndpointSet {
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.localities.iter().flat_map(|l| l.endpoints.iter())
    }
}

#[derive(Debug, Clone, Default)]
pub struct LocalityEndpoints {
    pub region: String,
    pub zone: String,
    pub sub_zone: String,
    /// Lower is preferred; traffic moves to the next priority only when
    /// this one lacks healthy hosts.
    pub priority: u32,
    pub load_balancing_weight: Option<u32>,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub address: SocketAddr,
    /// `load_balancing_weight`, default 1.
    pub weight: u32,
    pub health: HealthStatus,
    pub hostname: String,
    /// `metadata.filter_metadata["envoy.transport_socket_match"]` (string
    /// values), matched by `transport_socket_matches`.
    pub transport_socket_match: std::collections::BTreeMap<String, String>,
}

/// `core.v3.HealthStatus` as reported by EDS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    Unknown,
    Healthy,
    Unhealthy,
    Draining,
    Timeout,
    Degraded,
}

impl HealthStatus {
    /// Envoy routes to UNKNOWN and HEALTHY hosts (DEGRADED only as a fallback).
    pub fn is_routable(self) -> bool {
        matches!(self, HealthStatus::Unknown | HealthStatus::Healthy)
    }
}
