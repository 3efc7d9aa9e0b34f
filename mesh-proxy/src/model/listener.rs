//! Listeners, filter chains and the two network filters the proxy runs:
//! the HTTP connection manager and the TCP proxy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{AccessLogConfig, FaultConfig, RouteTable};

/// `HttpConnectionManager.stream_idle_timeout` default.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// `HttpConnectionManager.request_headers_timeout` when unset. Envoy has
/// none by default; without one, a client that opens connections and sends
/// nothing holds them (and their file descriptors) for the hour of the idle
/// timeout, and enough such clients lock everyone else out. It is also the
/// HTTP/1 server's own default (hyper's), which already bounded the wait
/// for request heads after the first.
pub const DEFAULT_REQUEST_HEADERS_TIMEOUT: Duration = Duration::from_secs(30);
/// `HttpProtocolOptions.idle_timeout` default for downstream connections.
pub const DEFAULT_DOWNSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// `TcpProxy.idle_timeout` default.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficDirection {
    Unspecified,
    Inbound,
    Outbound,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    pub direction: TrafficDirection,
    /// `use_original_dst`: hand the connection to the listener that owns the
    /// original destination (SO_ORIGINAL_DST) when one exists.
    pub use_original_dst: bool,
    /// `bind_to_port: false` listeners only receive connections handed over
    /// by a `use_original_dst` listener.
    pub bind_to_port: bool,
    /// Listener filters that inspect the first bytes (TLS SNI/ALPN, HTTP).
    pub inspect_tls: bool,
    pub inspect_http: bool,
    /// `ignore_global_conn_limit`: not counted against, nor refused by, the
    /// global downstream connection limit (`overload.rs`).
    pub ignore_global_conn_limit: bool,
    pub filter_chains: Vec<FilterChain>,
    pub default_filter_chain: Option<FilterChain>,
}

#[derive(Debug, Clone)]
pub struct FilterChain {
    pub name: String,
    pub matcher: FilterChainMatch,
    /// Downstream TLS (`transport_socket` tls); wired by the mTLS work.
    pub tls: Option<DownstreamTls>,
    pub filter: NetworkFilter,
}

/// `FilterChainMatch`; empty fields match anything. Envoy picks the most
/// specific chain in the order: destination port, destination IP, server
/// names, transport protocol, application protocols, source IP/port.
#[derive(Debug, Clone, Default)]
pub struct FilterChainMatch {
    pub destination_port: Option<u16>,
    pub prefix_ranges: Vec<ipnet::IpNet>,
    pub server_names: Vec<String>,
    /// `raw_buffer` or `tls`.
    pub transport_protocol: Option<String>,
    pub application_protocols: Vec<String>,
    pub source_prefix_ranges: Vec<ipnet::IpNet>,
}

/// Downstream TLS settings of a filter chain (filled in by the mTLS work).
#[derive(Debug, Clone)]
pub struct DownstreamTls {
    /// SDS secret names or inline material, resolved by the TLS layer.
    pub certificate: TlsCertificateSource,
    pub validation: Option<TlsValidation>,
    pub require_client_certificate: bool,
    pub alpn_protocols: Vec<String>,
    /// `common_tls_context.tls_params` protocol versions.
    pub versions: TlsVersions,
}

/// The TLS versions a context may negotiate (`tls_params`). rustls speaks
/// TLS 1.2 and 1.3 only; older versions are refused at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersions {
    /// TLS 1.2 or 1.3 (the default here; Envoy's client side stops at 1.2).
    #[default]
    Any,
    Only12,
    Only13,
}

#[derive(Debug, Clone)]
pub enum TlsCertificateSource {
    Sds(String),
    InlinePem {
        cert_chain: String,
        private_key: String,
    },
}

#[derive(Debug, Clone)]
pub struct TlsValidation {
    pub trusted_ca: TlsCaSource,
    /// Accepted subject alternative names (SPIFFE URIs); empty accepts any.
    pub match_subject_alt_names: Vec<super::StringMatcher>,
}

#[derive(Debug, Clone)]
pub enum TlsCaSource {
    Sds(String),
    InlinePem(String),
}

#[derive(Debug, Clone)]
pub enum NetworkFilter {
    Http(Arc<HttpConnectionManagerConfig>),
    Tcp(Arc<TcpProxyConfig>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpCodec {
    /// Detect HTTP/1.1 or HTTP/2 (prior knowledge, or ALPN under TLS).
    Auto,
    Http1,
    Http2,
}

#[derive(Debug, Clone)]
pub struct HttpConnectionManagerConfig {
    pub stat_prefix: String,
    pub codec: HttpCodec,
    pub routes: RouteSource,
    /// HTTP filters in order; the router is last and implicit.
    pub http_filters: Vec<HttpFilter>,
    pub access_log: Vec<AccessLogConfig>,
    /// `common_http_protocol_options.idle_timeout`.
    pub idle_timeout: Option<Duration>,
    /// `common_http_protocol_options.max_connection_duration`.
    pub max_connection_duration: Option<Duration>,
    /// `common_http_protocol_options.max_requests_per_connection`.
    pub max_requests_per_connection: Option<u32>,
    /// `stream_idle_timeout`; `None` disables it.
    pub stream_idle_timeout: Option<Duration>,
    /// `request_timeout`; `None` disables it (Envoy's default).
    pub request_timeout: Option<Duration>,
    /// `request_headers_timeout` (default [`DEFAULT_REQUEST_HEADERS_TIMEOUT`],
    /// `0s` disables it): a new connection must start its first request
    /// within it, and an HTTP/1.1 request head must arrive within it (hyper
    /// times the wait for a keep-alive connection's next head too, so an
    /// idle HTTP/1.1 connection closes after it; Envoy's timer starts at the
    /// head's first byte).
    pub request_headers_timeout: Option<Duration>,
    /// `use_remote_address`: append the peer address to `x-forwarded-for`.
    pub use_remote_address: bool,
    pub xff_num_trusted_hops: u32,
    /// `generate_request_id` (default true): add `x-request-id` when absent.
    pub generate_request_id: bool,
    /// Upgrade types allowed (`upgrade_configs`), e.g. `websocket`.
    pub upgrades: Vec<String>,
    /// `server_name` for the `server` header of local replies.
    pub server_name: String,
    /// Accept absolute-form request targets (`GET http://host/path`), so the
    /// listener also works as an `http_proxy`. Always on for outbound listeners.
    pub accept_absolute_form: bool,
    /// `forward_client_cert_details` (XFCC handling).
    pub forward_client_cert: ForwardClientCert,
    /// `set_current_client_cert_details`.
    pub client_cert_details: ClientCertDetails,
}

/// `HttpConnectionManager.ForwardClientCertDetails`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardClientCert {
    /// Drop the header (Envoy's default).
    #[default]
    Sanitize,
    /// mTLS: forward as received.
    ForwardOnly,
    /// mTLS: append this hop's element.
    AppendForward,
    /// mTLS: replace with this hop's element.
    SanitizeSet,
    /// Forward as received, mTLS or not.
    AlwaysForwardOnly,
}

/// `HttpConnectionManager.SetCurrentClientCertDetails` (`cert`/`chain`
/// are refused by the compiler: they would copy whole PEMs into a header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientCertDetails {
    pub subject: bool,
    pub dns: bool,
    pub uri: bool,
}

#[derive(Debug, Clone)]
pub enum RouteSource {
    /// RDS: looked up by name in the snapshot at request time.
    Rds(String),
    Inline(Arc<RouteTable>),
}

#[derive(Debug, Clone)]
pub enum HttpFilter {
    /// `envoy.filters.http.fault` with its listener-level config; routes may
    /// override it through `typed_per_filter_config`.
    Fault(Arc<FaultConfig>),
    /// `envoy.filters.http.cors`: applies each route's CORS policy.
    Cors,
}

#[derive(Debug, Clone)]
pub struct TcpProxyConfig {
    pub stat_prefix: String,
    pub cluster: TcpDestination,
    pub idle_timeout: Option<Duration>,
    pub max_connect_attempts: u32,
    pub access_log: Vec<AccessLogConfig>,
}

#[derive(Debug, Clone)]
pub enum TcpDestination {
    Cluster(String),
    Weighted(Vec<(String, u32)>),
}
