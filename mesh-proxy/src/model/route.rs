//! Route tables: virtual hosts, routes, matches and actions, with the
//! per-route resilience policies (timeouts, retries, faults, mirroring).

use std::collections::HashMap;
use std::time::Duration;

use super::{Fraction, HeaderMutations, StringMatcher};

/// Envoy's route `timeout` default when the field is absent.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
/// `RetryPolicy.num_retries` default.
pub const DEFAULT_NUM_RETRIES: u32 = 1;
/// `RetryPolicy.retry_back_off.base_interval` default.
pub const DEFAULT_RETRY_BASE_INTERVAL: Duration = Duration::from_millis(25);
/// `max_interval` defaults to ten times the base interval.
pub const DEFAULT_RETRY_MAX_INTERVAL_FACTOR: u32 = 10;

/// A `RouteConfiguration`. Built with [`RouteTable::new`], which indexes the
/// exact domains: with a thousand services a linear scan of every domain on
/// every request cost more than the rest of the routing.
#[derive(Debug, Clone)]
pub struct RouteTable {
    pub name: String,
    /// Private: the domain index below is built from it.
    virtual_hosts: Vec<VirtualHost>,
    pub headers: HeaderMutations,
    /// Lower-cased exact domain -> index into `virtual_hosts` (first wins).
    exact: HashMap<Box<str>, usize>,
    /// (virtual host, domain) indices of the wildcard and `*` domains, in
    /// table order.
    wildcards: Vec<(usize, usize)>,
}

impl RouteTable {
    pub fn new(name: String, virtual_hosts: Vec<VirtualHost>, headers: HeaderMutations) -> Self {
        let mut exact = HashMap::new();
        let mut wildcards = Vec::new();
        for (v, vh) in virtual_hosts.iter().enumerate() {
            for (d, domain) in vh.domains.iter().enumerate() {
                match domain {
                    DomainPattern::Exact(s) => {
                        exact.entry(s.to_ascii_lowercase().into()).or_insert(v);
                    }
                    _ => wildcards.push((v, d)),
                }
            }
        }
        RouteTable {
            name,
            virtual_hosts,
            headers,
            exact,
            wildcards,
        }
    }

    pub fn virtual_hosts(&self) -> &[VirtualHost] {
        &self.virtual_hosts
    }

    /// One route, to change in place (domains stay as indexed).
    pub fn route_mut(&mut self, vh: usize, route: usize) -> Option<&mut Route> {
        self.virtual_hosts.get_mut(vh)?.routes.get_mut(route)
    }

    /// The virtual host with an exact domain equal to `host` (ASCII case
    /// ignored).
    pub fn exact_virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        let index = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.exact.get(host.to_ascii_lowercase().as_str())
        } else {
            self.exact.get(host)
        };
        index.map(|&i| &self.virtual_hosts[i])
    }

    /// The wildcard and `*` domains with their virtual hosts, in table order.
    pub fn wildcard_domains(&self) -> impl Iterator<Item = (&VirtualHost, &DomainPattern)> {
        self.wildcards.iter().map(|&(v, d)| {
            let vh = &self.virtual_hosts[v];
            (vh, &vh.domains[d])
        })
    }
}

#[derive(Debug, Clone)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<DomainPattern>,
    pub routes: Vec<Route>,
    pub headers: HeaderMutations,
    /// Virtual-host level retry policy; a route's own policy replaces it.
    pub retry_policy: Option<RetryPolicy>,
    /// `typed_per_filter_config` for `envoy.filters.http.fault`.
    pub fault: Option<FaultConfig>,
    pub cors: Option<CorsPolicy>,
}

/// One entry of `VirtualHost.domains`. Envoy's precedence: exact, then the
/// longest suffix wildcard, then the longest prefix wildcard, then `*`. A
/// pattern with a port only matches a Host with that port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    Exact(String),
    /// `*.example.com` is stored as `.example.com`; `*-bar.com` as `-bar.com`.
    Suffix(String),
    /// `foo.*` is stored as `foo.`.
    Prefix(String),
    Any,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    pub headers: HeaderMutations,
    /// `typed_per_filter_config` for `envoy.filters.http.fault`.
    pub fault: Option<FaultConfig>,
    pub cors: Option<CorsPolicy>,
}

#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub path: PathMatch,
    /// `case_sensitive` (default true) for prefix and path.
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatcher>,
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// `runtime_fraction`: the route matches only this share of requests.
    pub runtime_fraction: Option<Fraction>,
    /// `grpc: {}`: only gRPC requests (content-type application/grpc).
    pub grpc: bool,
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Prefix(String),
    Path(String),
    /// `safe_regex` on the path without the query string, whole-match.
    Regex(regex::Regex),
    /// `path_separated_prefix`: prefix that ends at a `/`, `?` or the end.
    PathSeparatedPrefix(String),
}

#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    /// Lower-case header name; `:authority`, `:method`, `:path` and `:scheme`
    /// match the pseudo-headers.
    pub name: String,
    pub kind: HeaderMatchKind,
    pub invert: bool,
    /// `treat_missing_header_as_empty`.
    pub treat_missing_as_empty: bool,
}

#[derive(Debug, Clone)]
pub enum HeaderMatchKind {
    String(StringMatcher),
    Present(bool),
    /// `range_match`: start inclusive, end exclusive.
    Range {
        start: i64,
        end: i64,
    },
}

#[derive(Debug, Clone)]
pub struct QueryParameterMatcher {
    pub name: String,
    /// `None` is `present_match: true`.
    pub matcher: Option<StringMatcher>,
}

#[derive(Debug, Clone)]
pub enum RouteAction {
    Forward(Box<ForwardAction>),
    Redirect(RedirectAction),
    DirectResponse { status: u16, body: Option<String> },
}

#[derive(Debug, Clone)]
pub struct ForwardAction {
    pub destination: Destination,
    pub prefix_rewrite: Option<String>,
    /// `regex_rewrite`: pattern and substitution on the path.
    pub regex_rewrite: Option<(regex::Regex, String)>,
    pub host_rewrite: Option<String>,
    /// `timeout`; `None` disables it (`0s` in xDS). Absent in xDS is
    /// [`DEFAULT_ROUTE_TIMEOUT`], applied by the compiler.
    pub timeout: Option<Duration>,
    /// `idle_timeout` of the stream: replaces the connection manager's
    /// `stream_idle_timeout`; `Some(0)` disables it, `None` keeps the HCM's.
    pub idle_timeout: Option<Duration>,
    pub retry_policy: Option<RetryPolicy>,
    pub hash_policy: Vec<HashPolicy>,
    pub mirrors: Vec<MirrorPolicy>,
    /// `upgrade_configs` enabled on this route (e.g. `websocket`), on top of
    /// the connection manager's.
    pub upgrades: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Destination {
    Cluster(String),
    /// `weighted_clusters`; the total is the sum of weights.
    Weighted(Vec<WeightedCluster>),
    /// `cluster_header`: the cluster named by this request header.
    ClusterHeader(String),
}

#[derive(Debug, Clone)]
pub struct WeightedCluster {
    pub name: String,
    pub weight: u32,
    pub headers: HeaderMutations,
    pub host_rewrite: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RedirectAction {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub prefix_rewrite: Option<String>,
    /// 301 (default), 302, 303, 307, 308.
    pub status: u16,
    pub strip_query: bool,
}

/// Conditions of `retry_on`, as Envoy names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub server_error_5xx: bool,
    pub gateway_error: bool,
    pub reset: bool,
    pub connect_failure: bool,
    pub refused_stream: bool,
    pub retriable_4xx: bool,
    pub retriable_status_codes: bool,
    pub retriable_headers: bool,
    /// gRPC status conditions.
    pub grpc_cancelled: bool,
    pub grpc_deadline_exceeded: bool,
    pub grpc_internal: bool,
    pub grpc_resource_exhausted: bool,
    pub grpc_unavailable: bool,
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub retry_on: RetryOn,
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub per_try_idle_timeout: Option<Duration>,
    pub retriable_status_codes: Vec<u16>,
    /// `retriable_headers`: with the `retriable-headers` condition, a
    /// response matching any of these is retried.
    pub retriable_headers: Vec<HeaderMatcher>,
    /// `envoy.retry_host_predicates.previous_hosts`.
    pub avoid_previous_hosts: bool,
    /// `host_selection_retry_max_attempts` (default 1).
    pub host_selection_retry_max_attempts: u32,
    pub base_interval: Duration,
    pub max_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct HashPolicy {
    pub kind: HashPolicyKind,
    /// `terminal`: stop at this policy when it produced a hash.
    pub terminal: bool,
}

#[derive(Debug, Clone)]
pub enum HashPolicyKind {
    Header {
        name: String,
    },
    /// With a `ttl`, a cookie is generated and set on the response when the
    /// request has none (a zero `ttl`: a session cookie, without
    /// `Max-Age`); without one, a missing cookie hashes nothing.
    Cookie {
        name: String,
        ttl: Option<Duration>,
        path: Option<String>,
        /// Extra `Set-Cookie` attributes (`SameSite=Strict`, `Secure`), as
        /// (name, value); an empty value is written as the bare name.
        attributes: Vec<(String, String)>,
    },
    SourceIp,
    QueryParameter {
        name: String,
    },
}

#[derive(Debug, Clone)]
pub struct MirrorPolicy {
    pub cluster: String,
    /// `runtime_fraction` default value; `None` mirrors everything.
    pub fraction: Option<Fraction>,
}

/// `envoy.extensions.filters.http.fault.v3.HTTPFault`.
#[derive(Debug, Clone, Default)]
pub struct FaultConfig {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
    /// `max_active_faults`; `None` is unlimited.
    pub max_active_faults: Option<u32>,
    /// `headers`: the fault applies only when these match.
    pub headers: Vec<HeaderMatcher>,
}

#[derive(Debug, Clone)]
pub struct FaultDelay {
    pub kind: FaultDelayKind,
    pub percentage: Fraction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultDelayKind {
    Fixed(Duration),
    /// `header_delay`: duration taken from `x-envoy-fault-delay-request`.
    FromHeader,
}

#[derive(Debug, Clone)]
pub struct FaultAbort {
    pub kind: FaultAbortKind,
    pub percentage: Fraction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultAbortKind {
    Http(u16),
    Grpc(u32),
    /// `header_abort`: status taken from `x-envoy-fault-abort-request`.
    FromHeader,
}

/// `envoy.extensions.filters.http.cors.v3.CorsPolicy`.
#[derive(Debug, Clone, Default)]
pub struct CorsPolicy {
    pub allow_origin: Vec<StringMatcher>,
    pub allow_methods: Option<String>,
    pub allow_headers: Option<String>,
    pub expose_headers: Option<String>,
    pub max_age: Option<String>,
    pub allow_credentials: Option<bool>,
}
