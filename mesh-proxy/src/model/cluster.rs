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
    /// Upstream TLS (`transport_socket`); wired by the mTLS work.
    pub tls: Option<UpstreamTls>,
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
