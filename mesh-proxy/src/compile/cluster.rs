//! `Cluster` into a [`ClusterConfig`]: discovery, load balancing,
//! connection settings and the resilience thresholds (circuit breakers,
//! retry budget, outlier detection), with Envoy's defaults.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as pb;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;

use super::common::{duration, timeout, u32_or};
use super::endpoint::{compile_with, resolve_dns};
use super::errors::{CompileError, Ctx};
use super::tls::upstream_tls;
use crate::model::*;
use crate::xds_json::{any_type_name, unpack_any};

/// `per_connection_buffer_limit_bytes` default (1 MiB).
pub const DEFAULT_BUFFER_LIMIT_BYTES: u32 = 1024 * 1024;
/// `typed_extension_protocol_options` key of the upstream HTTP options.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const TCP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions";

pub fn compile_cluster(c: &pb::Cluster) -> Result<ClusterConfig, CompileError> {
    let ctx = Ctx::new("cluster", &c.name);
    if c.name.is_empty() {
        return Err(ctx.missing("name"));
    }
    reject_unsupported(&ctx, c)?;
    let discovery = discovery(&ctx, c)?;
    let connect_timeout = match &c.connect_timeout {
        Some(d) => duration(&ctx, "connect_timeout", d)?,
        None => DEFAULT_CONNECT_TIMEOUT,
    };
    if connect_timeout.is_zero() {
        return Err(ctx.invalid("connect_timeout", "must be greater than 0"));
    }
    let http = http_options(&ctx, c)?;
    let tls = match &c.transport_socket {
        Some(ts) => upstream_tls(&ctx, "transport_socket", ts)?,
        None => None,
    };
    let transport_socket_matches = transport_socket_matches(&ctx, c)?;
    Ok(ClusterConfig {
        name: c.name.clone(),
        discovery,
        connect_timeout,
        lb_policy: lb_policy(&ctx, c)?,
        protocol: http.protocol,
        circuit_breakers: circuit_breakers(&ctx, c.circuit_breakers.as_ref())?,
        outlier_detection: c
            .outlier_detection
            .as_ref()
            .map(|o| outlier_detection(&ctx.at("outlier_detection"), o))
            .transpose()?,
        idle_timeout: http.idle_timeout,
        max_connection_duration: http.max_connection_duration,
        max_requests_per_connection: http.max_requests_per_connection,
        tls,
        transport_socket_matches,
        buffer_limit_bytes: u32_or(
            c.per_connection_buffer_limit_bytes.as_ref(),
            DEFAULT_BUFFER_LIMIT_BYTES,
        ),
    })
}

/// `transport_socket_matches`: labels from each entry's `match` (string or
/// bool values, as Istio writes `tlsMode: istio`), its socket compiled like
/// the cluster's own.
fn transport_socket_matches(
    ctx: &Ctx,
    c: &pb::Cluster,
) -> Result<Vec<crate::model::TransportSocketMatch>, CompileError> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let mut out = Vec::new();
    for (i, m) in c.transport_socket_matches.iter().enumerate() {
        let field = format!("transport_socket_matches[{i}]");
        let mut labels = std::collections::BTreeMap::new();
        if let Some(s) = &m.r#match {
            for (k, v) in &s.fields {
                let value = match &v.kind {
                    Some(Kind::StringValue(s)) => s.clone(),
                    Some(Kind::BoolValue(b)) => b.to_string(),
                    _ => {
                        return Err(ctx.unsupported(
                            &format!("{field}.match.{k}"),
                            "values other than strings and booleans",
                        ));
                    }
                };
                labels.insert(k.clone(), value);
            }
        }
        let ts = m
            .transport_socket
            .as_ref()
            .ok_or_else(|| ctx.missing(&format!("{field}.transport_socket")))?;
        let tls = upstream_tls(ctx, &format!("{field}.transport_socket"), ts)?;
        out.push(crate::model::TransportSocketMatch {
            name: m.name.clone(),
            labels,
            tls,
        });
    }
    Ok(out)
}

#[expect(deprecated)]
fn reject_unsupported(ctx: &Ctx, c: &pb::Cluster) -> Result<(), CompileError> {
    if !c.health_checks.is_empty() {
        return Err(ctx.unsupported("health_checks", "(active health checking)"));
    }
    if c.transport_socket_matcher.is_some() {
        return Err(ctx.unsupported("transport_socket_matcher", ""));
    }
    if let Some(subset) = &c.lb_subset_config
        && !subset.subset_selectors.is_empty()
    {
        return Err(ctx.unsupported("lb_subset_config", ""));
    }
    if !c.filters.is_empty() {
        return Err(ctx.unsupported("filters", ""));
    }
    if c.upstream_config.is_some() {
        return Err(ctx.unsupported("upstream_config", ""));
    }
    if c.load_balancing_policy.is_some() {
        return Err(ctx.unsupported("load_balancing_policy", ""));
    }
    if let Some(p) = &c.upstream_http_protocol_options
        && (p.auto_sni || p.auto_san_validation)
    {
        return Err(ctx.unsupported("upstream_http_protocol_options.auto_sni", ""));
    }
    if c.common_lb_config.is_some() {
        ctx.note_ignored(
            "common_lb_config",
            "panic threshold and locality-aware settings use the defaults",
        );
    }
    if c.upstream_bind_config.is_some() {
        return Err(ctx.unsupported("upstream_bind_config", ""));
    }
    if c.connection_pool_per_downstream_connection {
        return Err(ctx.unsupported("connection_pool_per_downstream_connection", "true"));
    }
    if c.queuing_policies.is_some() {
        return Err(ctx.unsupported("queuing_policies", ""));
    }
    if c.preconnect_policy.is_some() {
        ctx.note_ignored("preconnect_policy", "connections are opened on demand");
    }
    if c.lrs_server.is_some() {
        ctx.note_ignored("lrs_server", "load reporting is not implemented");
    }
    Ok(())
}

fn discovery(ctx: &Ctx, c: &pb::Cluster) -> Result<Discovery, CompileError> {
    use pb::cluster::{ClusterDiscoveryType, DiscoveryType};
    let kind = match &c.cluster_discovery_type {
        None => DiscoveryType::Static,
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(*t)
            .map_err(|_| ctx.invalid("type", format!("unknown value {t}")))?,
        Some(ClusterDiscoveryType::ClusterType(custom)) => {
            return Err(ctx.unsupported("cluster_type", &custom.name));
        }
    };
    let empty = envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment {
        cluster_name: c.name.clone(),
        ..Default::default()
    };
    let assignment = c.load_assignment.as_ref().unwrap_or(&empty);
    let actx = ctx.at("load_assignment");
    match kind {
        DiscoveryType::Static => {
            let set = compile_with(&actx, assignment, &mut |ctx, field, a| {
                super::common::socket_address(ctx, field, a).map(|a| vec![a])
            })?;
            Ok(Discovery::Static(Arc::new(named(set, &c.name))))
        }
        // DNS clusters are resolved once, at load time, into static
        // endpoints; the names are not re-resolved afterwards.
        DiscoveryType::StrictDns | DiscoveryType::LogicalDns => {
            let all = kind == DiscoveryType::StrictDns;
            let set = compile_with(&actx, assignment, &mut |ctx, field, a| {
                resolve_dns(ctx, field, a, all)
            })?;
            Ok(Discovery::Static(Arc::new(named(set, &c.name))))
        }
        DiscoveryType::Eds => {
            if c.load_assignment.is_some() {
                ctx.note_ignored(
                    "load_assignment",
                    "EDS clusters take their endpoints from EDS",
                );
            }
            let service_name = c
                .eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| c.name.clone());
            Ok(Discovery::Eds { service_name })
        }
        DiscoveryType::OriginalDst => Err(ctx.unsupported("type", "ORIGINAL_DST")),
    }
}

fn named(mut set: EndpointSet, cluster: &str) -> EndpointSet {
    if set.cluster_name.is_empty() {
        set.cluster_name = cluster.to_string();
    }
    set
}

fn lb_policy(ctx: &Ctx, c: &pb::Cluster) -> Result<LbPolicy, CompileError> {
    use pb::cluster::{LbConfig, LbPolicy as P};
    let policy = P::try_from(c.lb_policy)
        .map_err(|_| ctx.invalid("lb_policy", format!("unknown value {}", c.lb_policy)))?;
    let config = c.lb_config.as_ref();
    let mismatch = |name: &str| {
        ctx.invalid(
            name,
            format!("does not apply to lb_policy {}", policy.as_str_name()),
        )
    };
    match config {
        Some(LbConfig::OriginalDstLbConfig(_)) => {
            return Err(ctx.unsupported("original_dst_lb_config", ""));
        }
        Some(LbConfig::RoundRobinLbConfig(rr)) if rr.slow_start_config.is_some() => {
            return Err(ctx.unsupported("round_robin_lb_config.slow_start_config", ""));
        }
        _ => {}
    }
    Ok(match policy {
        P::RoundRobin => match config {
            None | Some(LbConfig::RoundRobinLbConfig(_)) => LbPolicy::RoundRobin,
            Some(_) => return Err(mismatch("lb_config")),
        },
        P::Random => match config {
            None => LbPolicy::Random,
            Some(_) => return Err(mismatch("lb_config")),
        },
        P::LeastRequest => match config {
            None => LbPolicy::LeastRequest {
                choice_count: DEFAULT_LEAST_REQUEST_CHOICES,
            },
            Some(LbConfig::LeastRequestLbConfig(lr)) => {
                let f = "least_request_lb_config";
                if lr.slow_start_config.is_some() {
                    return Err(ctx.unsupported(&format!("{f}.slow_start_config"), ""));
                }
                if lr.active_request_bias.is_some() {
                    return Err(ctx.unsupported(&format!("{f}.active_request_bias"), ""));
                }
                let choice_count = u32_or(lr.choice_count.as_ref(), DEFAULT_LEAST_REQUEST_CHOICES);
                if choice_count < 2 {
                    return Err(ctx.invalid(&format!("{f}.choice_count"), "must be at least 2"));
                }
                LbPolicy::LeastRequest { choice_count }
            }
            Some(_) => return Err(mismatch("lb_config")),
        },
        P::RingHash => match config {
            None => LbPolicy::RingHash {
                minimum_ring_size: DEFAULT_RING_MIN,
                maximum_ring_size: DEFAULT_RING_MAX,
            },
            Some(LbConfig::RingHashLbConfig(rh)) => {
                let f = "ring_hash_lb_config";
                if rh.hash_function != pb::cluster::ring_hash_lb_config::HashFunction::XxHash as i32
                {
                    return Err(ctx.unsupported(&format!("{f}.hash_function"), "MURMUR_HASH_2"));
                }
                let min = rh
                    .minimum_ring_size
                    .map(|v| v.value)
                    .unwrap_or(DEFAULT_RING_MIN);
                let max = rh
                    .maximum_ring_size
                    .map(|v| v.value)
                    .unwrap_or(DEFAULT_RING_MAX);
                if min > max {
                    return Err(ctx.invalid(
                        &format!("{f}.minimum_ring_size"),
                        format!("{min} is above maximum_ring_size {max}"),
                    ));
                }
                if max > DEFAULT_RING_MAX {
                    return Err(ctx.invalid(
                        &format!("{f}.maximum_ring_size"),
                        format!("{max} is above the limit {DEFAULT_RING_MAX}"),
                    ));
                }
                LbPolicy::RingHash {
                    minimum_ring_size: min,
                    maximum_ring_size: max,
                }
            }
            Some(_) => return Err(mismatch("lb_config")),
        },
        P::Maglev => match config {
            None => LbPolicy::Maglev {
                table_size: DEFAULT_MAGLEV_TABLE_SIZE,
            },
            Some(LbConfig::MaglevLbConfig(m)) => {
                let table_size = m
                    .table_size
                    .map(|v| v.value)
                    .unwrap_or(DEFAULT_MAGLEV_TABLE_SIZE);
                if !is_prime(table_size) {
                    return Err(ctx.invalid(
                        "maglev_lb_config.table_size",
                        format!("{table_size} is not a prime number"),
                    ));
                }
                LbPolicy::Maglev { table_size }
            }
            Some(_) => return Err(mismatch("lb_config")),
        },
        P::ClusterProvided => return Err(ctx.unsupported("lb_policy", "CLUSTER_PROVIDED")),
        P::LoadBalancingPolicyConfig => {
            return Err(ctx.unsupported("lb_policy", "LOAD_BALANCING_POLICY_CONFIG"));
        }
    })
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

struct HttpSettings {
    protocol: UpstreamProtocol,
    idle_timeout: Option<Duration>,
    max_connection_duration: Option<Duration>,
    max_requests_per_connection: Option<u32>,
}

#[expect(deprecated)]
fn http_options(ctx: &Ctx, c: &pb::Cluster) -> Result<HttpSettings, CompileError> {
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
        UpstreamProtocolOptions as U, explicit_http_config::ProtocolConfig,
    };
    let mut protocol = UpstreamProtocol::Http1;
    let mut common: Option<core::HttpProtocolOptions> = c.common_http_protocol_options;
    let mut common_field = "common_http_protocol_options".to_string();
    // The deprecated cluster-level fields.
    if c.http2_protocol_options.is_some() {
        protocol = UpstreamProtocol::Http2;
    }
    if c.protocol_selection == pb::cluster::ClusterProtocolSelection::UseDownstreamProtocol as i32 {
        protocol = UpstreamProtocol::UseDownstream;
    }
    let mut max_requests = c.max_requests_per_connection.map(|v| v.value);

    for (key, any) in &c.typed_extension_protocol_options {
        let f = format!("typed_extension_protocol_options[{key:?}]");
        match any_type_name(any) {
            HTTP_PROTOCOL_OPTIONS => {
                let o: HttpProtocolOptions = unpack_any(any).map_err(|e| ctx.decode(&f, e))?;
                match &o.upstream_protocol_options {
                    None => {}
                    Some(U::ExplicitHttpConfig(e)) => match &e.protocol_config {
                        Some(ProtocolConfig::HttpProtocolOptions(_)) | None => {
                            protocol = UpstreamProtocol::Http1
                        }
                        Some(ProtocolConfig::Http2ProtocolOptions(_)) => {
                            protocol = UpstreamProtocol::Http2
                        }
                        Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                            return Err(ctx.unsupported(
                                &format!("{f}.explicit_http_config.http3_protocol_options"),
                                "",
                            ));
                        }
                    },
                    Some(U::UseDownstreamProtocolConfig(d)) => {
                        if d.http3_protocol_options.is_some() {
                            return Err(ctx.unsupported(
                                &format!(
                                    "{f}.use_downstream_protocol_config.http3_protocol_options"
                                ),
                                "",
                            ));
                        }
                        protocol = UpstreamProtocol::UseDownstream;
                    }
                    Some(U::AutoConfig(_)) => {
                        return Err(ctx.unsupported(&format!("{f}.auto_config"), ""));
                    }
                }
                if !o.http_filters.is_empty() {
                    return Err(ctx.unsupported(&format!("{f}.http_filters"), ""));
                }
                // Newer cluster-level copies of route policies.
                if o.outlier_detection.is_some() {
                    return Err(ctx.unsupported(&format!("{f}.outlier_detection"), ""));
                }
                if o.retry_policy.is_some() {
                    return Err(ctx.unsupported(&format!("{f}.retry_policy"), ""));
                }
                if !o.hash_policy.is_empty() {
                    return Err(ctx.unsupported(&format!("{f}.hash_policy"), ""));
                }
                if !o.request_mirror_policies.is_empty() {
                    return Err(ctx.unsupported(&format!("{f}.request_mirror_policies"), ""));
                }
                if o.common_http_protocol_options.is_some() {
                    common = o.common_http_protocol_options;
                    common_field = format!("{f}.common_http_protocol_options");
                }
            }
            TCP_PROTOCOL_OPTIONS => ctx.note_ignored(&f, "TCP upstream options are not applied"),
            other => return Err(ctx.unsupported(&f, other)),
        }
    }

    let mut idle_timeout = Some(DEFAULT_UPSTREAM_IDLE_TIMEOUT);
    let mut max_connection_duration = None;
    if let Some(common) = &common {
        let cctx = ctx.at(&common_field);
        idle_timeout = timeout(
            &cctx,
            "idle_timeout",
            common.idle_timeout.as_ref(),
            idle_timeout,
        )?;
        max_connection_duration = timeout(
            &cctx,
            "max_connection_duration",
            common.max_connection_duration.as_ref(),
            None,
        )?;
        if let Some(v) = common.max_requests_per_connection {
            max_requests = Some(v.value);
        }
        super::common::reject_unsupported_http_options(&cctx, common)?;
    }
    Ok(HttpSettings {
        protocol,
        idle_timeout,
        max_connection_duration,
        // 0 means unlimited in Envoy.
        max_requests_per_connection: max_requests.filter(|v| *v > 0),
    })
}

fn circuit_breakers(
    ctx: &Ctx,
    cb: Option<&pb::CircuitBreakers>,
) -> Result<CircuitBreakers, CompileError> {
    let mut out = CircuitBreakers::default();
    let Some(cb) = cb else { return Ok(out) };
    let default_priority = core::RoutingPriority::Default as i32;
    for (i, t) in cb.thresholds.iter().enumerate() {
        let tctx = ctx.at_index("circuit_breakers.thresholds", i);
        // Routes always use the default priority here, so HIGH thresholds
        // never apply.
        if t.priority != default_priority {
            tctx.note_ignored("priority", "only DEFAULT priority thresholds apply");
            continue;
        }
        out.max_connections = u32_or(t.max_connections.as_ref(), DEFAULT_MAX_CONNECTIONS);
        out.max_pending_requests = u32_or(
            t.max_pending_requests.as_ref(),
            DEFAULT_MAX_PENDING_REQUESTS,
        );
        out.max_requests = u32_or(t.max_requests.as_ref(), DEFAULT_MAX_REQUESTS);
        out.max_retries = u32_or(t.max_retries.as_ref(), DEFAULT_MAX_RETRIES);
        out.retry_budget = match &t.retry_budget {
            None => None,
            Some(b) => {
                let percent = b
                    .budget_percent
                    .as_ref()
                    .map(|p| p.value)
                    .unwrap_or(DEFAULT_RETRY_BUDGET_PERCENT);
                if !(0.0..=100.0).contains(&percent) {
                    return Err(tctx.invalid(
                        "retry_budget.budget_percent",
                        format!("{percent} is not within 0..100"),
                    ));
                }
                if b.budget_interval.is_some() {
                    tctx.note_ignored(
                        "retry_budget.budget_interval",
                        "the budget counts active requests",
                    );
                }
                Some(RetryBudget {
                    budget_percent: percent,
                    min_retry_concurrency: u32_or(
                        b.min_retry_concurrency.as_ref(),
                        DEFAULT_RETRY_BUDGET_MIN_CONCURRENCY,
                    ),
                })
            }
        };
        if t.max_connection_pools.is_some() {
            return Err(tctx.unsupported("max_connection_pools", ""));
        }
    }
    for (i, t) in cb.per_host_thresholds.iter().enumerate() {
        let tctx = ctx.at_index("circuit_breakers.per_host_thresholds", i);
        if t.priority != default_priority {
            tctx.note_ignored("priority", "only DEFAULT priority thresholds apply");
            continue;
        }
        if t.max_pending_requests.is_some() || t.max_requests.is_some() || t.max_retries.is_some() {
            return Err(tctx.unsupported(
                "max_requests",
                "(only max_connections is supported per host)",
            ));
        }
        out.per_host_max_connections = t.max_connections.map(|v| v.value);
    }
    Ok(out)
}

fn percent_field(
    ctx: &Ctx,
    field: &str,
    v: Option<&envoy_types::pb::google::protobuf::UInt32Value>,
    default: u32,
) -> Result<u32, CompileError> {
    let v = u32_or(v, default);
    if v > 100 {
        return Err(ctx.invalid(field, format!("{v} is above 100")));
    }
    Ok(v)
}

fn outlier_detection(
    ctx: &Ctx,
    o: &pb::OutlierDetection,
) -> Result<OutlierDetection, CompileError> {
    // Success-rate and failure-percentage ejection run on external
    // (HTTP status) outcomes; their local-origin variants are not
    // implemented: turning them on explicitly is an error.
    if u32_or(o.enforcing_failure_percentage_local_origin.as_ref(), 0) > 0 {
        return Err(ctx.unsupported(
            "enforcing_failure_percentage_local_origin",
            "(local-origin failure percentage ejection)",
        ));
    }
    if o.split_external_local_origin_errors
        && o.enforcing_local_origin_success_rate
            .as_ref()
            .is_some_and(|v| v.value > 0)
    {
        return Err(ctx.unsupported(
            "enforcing_local_origin_success_rate",
            "(local-origin success rate ejection)",
        ));
    }
    if !o.monitors.is_empty() {
        return Err(ctx.unsupported("monitors", ""));
    }
    if o.successful_active_health_check_uneject_host.is_some() {
        ctx.note_ignored(
            "successful_active_health_check_uneject_host",
            "no active health checking",
        );
    }
    let base_ejection_time = match &o.base_ejection_time {
        Some(d) => duration(ctx, "base_ejection_time", d)?,
        None => DEFAULT_OUTLIER_BASE_EJECTION_TIME,
    };
    let interval = match &o.interval {
        Some(d) => duration(ctx, "interval", d)?,
        None => DEFAULT_OUTLIER_INTERVAL,
    };
    if interval.is_zero() {
        return Err(ctx.invalid("interval", "must be greater than 0"));
    }
    // Envoy raises max_ejection_time to base_ejection_time when it is lower.
    let max_ejection_time = match &o.max_ejection_time {
        Some(d) => duration(ctx, "max_ejection_time", d)?,
        None => DEFAULT_OUTLIER_MAX_EJECTION_TIME,
    }
    .max(base_ejection_time);
    Ok(OutlierDetection {
        success_rate_minimum_hosts: u32_or(
            o.success_rate_minimum_hosts.as_ref(),
            DEFAULT_OUTLIER_SUCCESS_RATE_MINIMUM_HOSTS,
        ),
        success_rate_request_volume: u32_or(
            o.success_rate_request_volume.as_ref(),
            DEFAULT_OUTLIER_SUCCESS_RATE_REQUEST_VOLUME,
        ),
        success_rate_stdev_factor: u32_or(
            o.success_rate_stdev_factor.as_ref(),
            DEFAULT_OUTLIER_SUCCESS_RATE_STDEV_FACTOR,
        ),
        enforcing_success_rate: percent_field(
            ctx,
            "enforcing_success_rate",
            o.enforcing_success_rate.as_ref(),
            DEFAULT_OUTLIER_ENFORCING_SUCCESS_RATE,
        )?,
        failure_percentage_threshold: percent_field(
            ctx,
            "failure_percentage_threshold",
            o.failure_percentage_threshold.as_ref(),
            DEFAULT_OUTLIER_FAILURE_PERCENTAGE_THRESHOLD,
        )?,
        failure_percentage_minimum_hosts: u32_or(
            o.failure_percentage_minimum_hosts.as_ref(),
            DEFAULT_OUTLIER_FAILURE_PERCENTAGE_MINIMUM_HOSTS,
        ),
        failure_percentage_request_volume: u32_or(
            o.failure_percentage_request_volume.as_ref(),
            DEFAULT_OUTLIER_FAILURE_PERCENTAGE_REQUEST_VOLUME,
        ),
        enforcing_failure_percentage: percent_field(
            ctx,
            "enforcing_failure_percentage",
            o.enforcing_failure_percentage.as_ref(),
            DEFAULT_OUTLIER_ENFORCING_FAILURE_PERCENTAGE,
        )?,
        consecutive_5xx: u32_or(o.consecutive_5xx.as_ref(), DEFAULT_OUTLIER_CONSECUTIVE_5XX),
        consecutive_gateway_failure: u32_or(
            o.consecutive_gateway_failure.as_ref(),
            DEFAULT_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE,
        ),
        consecutive_local_origin_failure: u32_or(
            o.consecutive_local_origin_failure.as_ref(),
            DEFAULT_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
        ),
        split_external_local_origin_failure: o.split_external_local_origin_errors,
        interval,
        base_ejection_time,
        max_ejection_time,
        max_ejection_percent: percent_field(
            ctx,
            "max_ejection_percent",
            o.max_ejection_percent.as_ref(),
            DEFAULT_OUTLIER_MAX_EJECTION_PERCENT,
        )?,
        enforcing_consecutive_5xx: percent_field(
            ctx,
            "enforcing_consecutive_5xx",
            o.enforcing_consecutive_5xx.as_ref(),
            100,
        )?,
        // Envoy's default for gateway failures is 0: counted, not enforced.
        enforcing_consecutive_gateway_failure: percent_field(
            ctx,
            "enforcing_consecutive_gateway_failure",
            o.enforcing_consecutive_gateway_failure.as_ref(),
            0,
        )?,
        enforcing_consecutive_local_origin_failure: percent_field(
            ctx,
            "enforcing_consecutive_local_origin_failure",
            o.enforcing_consecutive_local_origin_failure.as_ref(),
            100,
        )?,
    })
}
