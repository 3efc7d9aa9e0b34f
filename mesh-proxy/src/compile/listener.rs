//! `Listener` into a [`ListenerConfig`]: address, listener filters, filter
//! chains and their network filter (HTTP connection manager or TCP proxy),
//! with access logs.

use std::sync::Arc;

use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as pb;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::FileAccessLog;
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
    StderrAccessLog, StdoutAccessLog,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::google::protobuf::Any;

use super::common::*;
use super::errors::{CompileError, Ctx};
use super::route::{compile_route_table, fault_config};
use super::tls::downstream_tls;
use crate::model::*;
use crate::xds_json::{any_type_name, unpack_any};

const HCM: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP_PROXY: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const ROUTER: &str = "envoy.extensions.filters.http.router.v3.Router";
const FAULT: &str = "envoy.extensions.filters.http.fault.v3.HTTPFault";
const CORS: &str = "envoy.extensions.filters.http.cors.v3.Cors";
const TLS_INSPECTOR: &str = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
const HTTP_INSPECTOR: &str = "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector";
const ORIGINAL_DST: &str = "envoy.extensions.filters.listener.original_dst.v3.OriginalDst";
const FILE_LOG: &str = "envoy.extensions.access_loggers.file.v3.FileAccessLog";
const STDOUT_LOG: &str = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const STDERR_LOG: &str = "envoy.extensions.access_loggers.stream.v3.StderrAccessLog";

/// HTTP filters that only observe (stats) and change nothing in traffic.
const OBSERVING_HTTP_FILTERS: &[&str] =
    &["envoy.extensions.filters.http.grpc_stats.v3.FilterConfig"];

/// `HttpConnectionManager.server_name` default.
pub const DEFAULT_SERVER_NAME: &str = "envoy";
/// `TcpProxy.max_connect_attempts` default.
pub const DEFAULT_TCP_MAX_CONNECT_ATTEMPTS: u32 = 1;

pub fn compile_listener(l: &pb::Listener) -> Result<ListenerConfig, CompileError> {
    let ctx = Ctx::new("listener", &l.name);
    if l.name.is_empty() {
        return Err(ctx.missing("name"));
    }
    reject_unsupported(&ctx, l)?;
    let address = socket_address(&ctx, "address", l.address.as_ref())?;
    let direction = match core::TrafficDirection::try_from(l.traffic_direction) {
        Ok(core::TrafficDirection::Unspecified) => TrafficDirection::Unspecified,
        Ok(core::TrafficDirection::Inbound) => TrafficDirection::Inbound,
        Ok(core::TrafficDirection::Outbound) => TrafficDirection::Outbound,
        Err(_) => {
            return Err(ctx.invalid(
                "traffic_direction",
                format!("unknown value {}", l.traffic_direction),
            ));
        }
    };
    let (mut inspect_tls, mut inspect_http) = (false, false);
    for (i, f) in l.listener_filters.iter().enumerate() {
        let fctx = ctx.at_index("listener_filters", i);
        if f.filter_disabled.is_some() {
            return Err(fctx.unsupported("filter_disabled", ""));
        }
        let typed = match &f.config_type {
            Some(pb::listener_filter::ConfigType::TypedConfig(any)) => {
                any_type_name(any).to_string()
            }
            Some(pb::listener_filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(fctx.unsupported("config_discovery", ""));
            }
            None => String::new(),
        };
        match (typed.as_str(), f.name.as_str()) {
            (TLS_INSPECTOR, _) | ("", "envoy.filters.listener.tls_inspector") => inspect_tls = true,
            (HTTP_INSPECTOR, _) | ("", "envoy.filters.listener.http_inspector") => {
                inspect_http = true
            }
            // The original destination is read by the listener itself when
            // `use_original_dst` is set; the filter adds nothing more.
            (ORIGINAL_DST, _) | ("", "envoy.filters.listener.original_dst") => {}
            (other, name) => {
                return Err(
                    fctx.unsupported("typed_config", if other.is_empty() { name } else { other })
                );
            }
        }
    }
    let filter_chains = l
        .filter_chains
        .iter()
        .enumerate()
        .map(|(i, fc)| filter_chain(&ctx.at_index("filter_chains", i), fc, direction))
        .collect::<Result<Vec<_>, _>>()?;
    let default_filter_chain = l
        .default_filter_chain
        .as_ref()
        .map(|fc| filter_chain(&ctx.at("default_filter_chain"), fc, direction))
        .transpose()?;
    if filter_chains.is_empty() && default_filter_chain.is_none() {
        return Err(ctx.missing("filter_chains"));
    }
    Ok(ListenerConfig {
        name: l.name.clone(),
        address,
        direction,
        use_original_dst: bool_or(l.use_original_dst.as_ref(), false),
        bind_to_port: bool_or(l.bind_to_port.as_ref(), true),
        inspect_tls,
        inspect_http,
        ignore_global_conn_limit: l.ignore_global_conn_limit,
        filter_chains,
        default_filter_chain,
    })
}

fn reject_unsupported(ctx: &Ctx, l: &pb::Listener) -> Result<(), CompileError> {
    if !l.additional_addresses.is_empty() {
        return Err(ctx.unsupported("additional_addresses", ""));
    }
    if l.filter_chain_matcher.is_some() {
        return Err(ctx.unsupported("filter_chain_matcher", ""));
    }
    if l.fcds_config.is_some() {
        return Err(ctx.unsupported("fcds_config", ""));
    }
    if l.udp_listener_config.is_some() {
        return Err(ctx.unsupported("udp_listener_config", ""));
    }
    if l.api_listener.is_some() {
        return Err(ctx.unsupported("api_listener", ""));
    }
    if l.listener_specifier.is_some() {
        return Err(ctx.unsupported("internal_listener", ""));
    }
    if bool_or(l.transparent.as_ref(), false) {
        return Err(ctx.unsupported("transparent", "true"));
    }
    if !l.access_log.is_empty() {
        ctx.note_ignored(
            "access_log",
            "listener-level (connection) access logs are not written",
        );
    }
    if !l.socket_options.is_empty() {
        ctx.note_ignored("socket_options", "socket options are not applied");
    }
    Ok(())
}

fn filter_chain(
    ctx: &Ctx,
    fc: &pb::FilterChain,
    direction: TrafficDirection,
) -> Result<FilterChain, CompileError> {
    let matcher = match &fc.filter_chain_match {
        Some(m) => filter_chain_match(&ctx.at("filter_chain_match"), m)?,
        None => FilterChainMatch::default(),
    };
    if bool_or(fc.use_proxy_proto.as_ref(), false) {
        return Err(ctx.unsupported("use_proxy_proto", "true"));
    }
    let tls = match &fc.transport_socket {
        Some(ts) => downstream_tls(ctx, "transport_socket", ts)?,
        None => None,
    };
    if fc.filters.is_empty() {
        return Err(ctx.missing("filters"));
    }
    let last = fc.filters.len() - 1;
    // Only the terminal filter is supported: any filter before it would
    // change the traffic in a way this proxy does not implement.
    let mut filter = None;
    for (i, f) in fc.filters.iter().enumerate() {
        let fctx = ctx.at_index("filters", i);
        let any = match &f.config_type {
            Some(pb::filter::ConfigType::TypedConfig(any)) => any,
            Some(pb::filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(fctx.unsupported("config_discovery", ""));
            }
            None => return Err(fctx.missing("typed_config")),
        };
        let name = any_type_name(any);
        if i != last {
            return Err(fctx.unsupported(
                "typed_config",
                format!("{name} (network filter {:?})", f.name),
            ));
        }
        filter = Some(match name {
            HCM => {
                let h: hcm::HttpConnectionManager =
                    unpack_any(any).map_err(|e| fctx.decode("typed_config", e))?;
                NetworkFilter::Http(Arc::new(http_connection_manager(
                    &fctx.at("typed_config"),
                    &h,
                    direction,
                )?))
            }
            TCP_PROXY => {
                let t: tcp::TcpProxy =
                    unpack_any(any).map_err(|e| fctx.decode("typed_config", e))?;
                NetworkFilter::Tcp(Arc::new(tcp_proxy(&fctx.at("typed_config"), &t)?))
            }
            other => return Err(fctx.unsupported("typed_config", other)),
        });
    }
    Ok(FilterChain {
        name: fc.name.clone(),
        matcher,
        tls,
        filter: filter.ok_or_else(|| ctx.missing("filters"))?,
    })
}

fn cidrs(
    ctx: &Ctx,
    field: &str,
    ranges: &[core::CidrRange],
) -> Result<Vec<ipnet::IpNet>, CompileError> {
    ranges
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let f = format!("{field}[{i}]");
            let address: std::net::IpAddr = r.address_prefix.parse().map_err(|_| {
                ctx.invalid(
                    &format!("{f}.address_prefix"),
                    format!("{:?} is not an IP address", r.address_prefix),
                )
            })?;
            let max = if address.is_ipv4() { 32 } else { 128 };
            let len = r.prefix_len.map(|v| v.value).unwrap_or(max);
            match u8::try_from(len).ok().filter(|l| u32::from(*l) <= max) {
                Some(len) => ipnet::IpNet::new(address, len)
                    .map_err(|e| ctx.invalid(&format!("{f}.prefix_len"), format!("{len}: {e}"))),
                None => {
                    Err(ctx.invalid(&format!("{f}.prefix_len"), format!("{len} is above {max}")))
                }
            }
        })
        .collect()
}

fn filter_chain_match(
    ctx: &Ctx,
    m: &pb::FilterChainMatch,
) -> Result<FilterChainMatch, CompileError> {
    if !m.source_ports.is_empty() {
        return Err(ctx.unsupported("source_ports", ""));
    }
    if !m.direct_source_prefix_ranges.is_empty() {
        return Err(ctx.unsupported("direct_source_prefix_ranges", ""));
    }
    if m.source_type != 0 {
        return Err(ctx.unsupported("source_type", m.source_type));
    }
    let destination_port =
        match m.destination_port {
            None => None,
            Some(p) => Some(u16::try_from(p.value).map_err(|_| {
                ctx.invalid("destination_port", format!("{} is not a port", p.value))
            })?),
        };
    Ok(FilterChainMatch {
        destination_port,
        prefix_ranges: cidrs(ctx, "prefix_ranges", &m.prefix_ranges)?,
        server_names: m
            .server_names
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect(),
        transport_protocol: (!m.transport_protocol.is_empty())
            .then(|| m.transport_protocol.clone()),
        application_protocols: m.application_protocols.clone(),
        source_prefix_ranges: cidrs(ctx, "source_prefix_ranges", &m.source_prefix_ranges)?,
    })
}

fn http_connection_manager(
    ctx: &Ctx,
    h: &hcm::HttpConnectionManager,
    direction: TrafficDirection,
) -> Result<HttpConnectionManagerConfig, CompileError> {
    use hcm::http_connection_manager::{CodecType, RouteSpecifier};
    let codec = match CodecType::try_from(h.codec_type) {
        Ok(CodecType::Auto) => HttpCodec::Auto,
        Ok(CodecType::Http1) => HttpCodec::Http1,
        Ok(CodecType::Http2) => HttpCodec::Http2,
        Ok(CodecType::Http3) => return Err(ctx.unsupported("codec_type", "HTTP3")),
        Err(_) => return Err(ctx.invalid("codec_type", format!("unknown value {}", h.codec_type))),
    };
    let routes = match &h.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => {
            if rds.route_config_name.is_empty() {
                return Err(ctx.missing("rds.route_config_name"));
            }
            RouteSource::Rds(rds.route_config_name.clone())
        }
        Some(RouteSpecifier::RouteConfig(rc)) => {
            RouteSource::Inline(Arc::new(compile_route_table(&ctx.at("route_config"), rc)?))
        }
        Some(RouteSpecifier::ScopedRoutes(_)) => return Err(ctx.unsupported("scoped_routes", "")),
        None => return Err(ctx.missing("route_config")),
    };
    if h.local_reply_config.is_some() {
        return Err(ctx.unsupported("local_reply_config", ""));
    }
    if bool_or(h.normalize_path.as_ref(), false) {
        return Err(ctx.unsupported("normalize_path", "true"));
    }
    if h.merge_slashes {
        return Err(ctx.unsupported("merge_slashes", "true"));
    }
    if h.path_with_escaped_slashes_action > 1 {
        return Err(ctx.unsupported(
            "path_with_escaped_slashes_action",
            h.path_with_escaped_slashes_action,
        ));
    }
    if h.strip_matching_host_port || h.strip_port_mode.is_some() {
        return Err(ctx.unsupported("strip_any_host_port", ""));
    }
    if h.skip_xff_append {
        return Err(ctx.unsupported("skip_xff_append", "true"));
    }
    if !h.via.is_empty() {
        return Err(ctx.unsupported("via", &h.via));
    }
    if h.always_set_request_id_in_response {
        return Err(ctx.unsupported("always_set_request_id_in_response", "true"));
    }
    if h.request_id_extension.is_some() {
        return Err(ctx.unsupported("request_id_extension", ""));
    }
    if !h.original_ip_detection_extensions.is_empty()
        || !h.early_header_mutation_extensions.is_empty()
    {
        return Err(ctx.unsupported("original_ip_detection_extensions", ""));
    }
    if h.server_header_transformation != 0 {
        return Err(ctx.unsupported(
            "server_header_transformation",
            h.server_header_transformation,
        ));
    }
    if h.append_x_forwarded_port {
        return Err(ctx.unsupported("append_x_forwarded_port", "true"));
    }
    if bool_or(h.add_user_agent.as_ref(), false) {
        return Err(ctx.unsupported("add_user_agent", "true"));
    }
    if h.proxy_status_config.is_some() {
        return Err(ctx.unsupported("proxy_status_config", ""));
    }
    if h.tracing.is_some() {
        ctx.note_ignored("tracing", "tracing is not implemented");
    }
    if h.internal_address_config.is_some() {
        // Without it no request counts as internal, so `x-envoy-retry-on`
        // and friends are stripped, never honoured: the safe reading.
        ctx.note_ignored(
            "internal_address_config",
            "no request is treated as internal; x-envoy-* retry headers are stripped",
        );
    }

    let http_filters = http_filters(ctx, &h.http_filters)?;
    let access_log = access_logs(ctx, "access_log", &h.access_log)?;
    let mut upgrades = Vec::new();
    for (i, u) in h.upgrade_configs.iter().enumerate() {
        if !u.filters.is_empty() {
            return Err(ctx.unsupported(&format!("upgrade_configs[{i}].filters"), ""));
        }
        if bool_or(u.enabled.as_ref(), true) {
            upgrades.push(u.upgrade_type.to_ascii_lowercase());
        }
    }
    let common = h.common_http_protocol_options.unwrap_or_default();
    let cctx = ctx.at("common_http_protocol_options");
    reject_unsupported_http_options(&cctx, &common)?;
    let allow_absolute_url = h
        .http_protocol_options
        .as_ref()
        .and_then(|o| o.allow_absolute_url.as_ref())
        .map(|b| b.value)
        .unwrap_or(true);
    let (forward_client_cert, client_cert_details) = client_cert(ctx, h)?;
    Ok(HttpConnectionManagerConfig {
        forward_client_cert,
        client_cert_details,
        stat_prefix: h.stat_prefix.clone(),
        codec,
        routes,
        http_filters,
        access_log,
        idle_timeout: timeout(
            &cctx,
            "idle_timeout",
            common.idle_timeout.as_ref(),
            Some(DEFAULT_DOWNSTREAM_IDLE_TIMEOUT),
        )?,
        max_connection_duration: timeout(
            &cctx,
            "max_connection_duration",
            common.max_connection_duration.as_ref(),
            None,
        )?,
        max_requests_per_connection: common
            .max_requests_per_connection
            .map(|v| v.value)
            .filter(|v| *v > 0),
        stream_idle_timeout: timeout(
            ctx,
            "stream_idle_timeout",
            h.stream_idle_timeout.as_ref(),
            Some(DEFAULT_STREAM_IDLE_TIMEOUT),
        )?,
        request_timeout: timeout(ctx, "request_timeout", h.request_timeout.as_ref(), None)?,
        request_headers_timeout: timeout(
            ctx,
            "request_headers_timeout",
            h.request_headers_timeout.as_ref(),
            Some(DEFAULT_REQUEST_HEADERS_TIMEOUT),
        )?,
        use_remote_address: bool_or(h.use_remote_address.as_ref(), false),
        xff_num_trusted_hops: h.xff_num_trusted_hops,
        generate_request_id: bool_or(h.generate_request_id.as_ref(), true),
        upgrades,
        server_name: if h.server_name.is_empty() {
            DEFAULT_SERVER_NAME.to_string()
        } else {
            h.server_name.clone()
        },
        accept_absolute_form: allow_absolute_url || direction == TrafficDirection::Outbound,
    })
}

fn http_filters(ctx: &Ctx, filters: &[hcm::HttpFilter]) -> Result<Vec<HttpFilter>, CompileError> {
    use hcm::http_filter::ConfigType;
    let mut out = Vec::new();
    let mut saw_router = false;
    for (i, f) in filters.iter().enumerate() {
        let fctx = ctx.at_index("http_filters", i);
        if saw_router {
            return Err(fctx.invalid("name", "no HTTP filter may follow the router"));
        }
        let any: Option<&Any> = match &f.config_type {
            Some(ConfigType::TypedConfig(any)) => Some(any),
            Some(ConfigType::ConfigDiscovery(_)) => {
                return Err(fctx.unsupported("config_discovery", ""));
            }
            None => None,
        };
        let type_name = any.map(any_type_name).unwrap_or_default();
        let known = match (type_name, f.name.as_str()) {
            (ROUTER, _) | ("", "envoy.filters.http.router") => "router",
            (FAULT, _) | ("", "envoy.filters.http.fault") => "fault",
            (CORS, _) | ("", "envoy.filters.http.cors") => "cors",
            (t, _) if OBSERVING_HTTP_FILTERS.contains(&t) => "observer",
            _ => "",
        };
        if f.disabled && known != "router" {
            // A disabled filter only runs where a route enables it, which
            // is not supported; with no route doing so it is a no-op.
            fctx.note_ignored("disabled", "filters disabled at listener level stay off");
            continue;
        }
        match known {
            "router" => saw_router = true,
            "fault" => {
                let fault = match any {
                    Some(any) => {
                        let h: HttpFault =
                            unpack_any(any).map_err(|e| fctx.decode("typed_config", e))?;
                        fault_config(&fctx, "typed_config", &h)?
                    }
                    None => FaultConfig::default(),
                };
                out.push(HttpFilter::Fault(Arc::new(fault)));
            }
            "cors" => out.push(HttpFilter::Cors),
            "observer" => fctx.note_ignored(
                "typed_config",
                "an observing filter with no effect on traffic",
            ),
            _ if f.is_optional => {
                fctx.note_ignored("typed_config", "an optional filter that is not supported")
            }
            _ => {
                let what = if type_name.is_empty() {
                    f.name.as_str()
                } else {
                    type_name
                };
                return Err(fctx.unsupported("typed_config", what));
            }
        }
    }
    if !saw_router {
        return Err(ctx.invalid(
            "http_filters",
            "the last HTTP filter must be envoy.filters.http.router",
        ));
    }
    Ok(out)
}

fn tcp_proxy(ctx: &Ctx, t: &tcp::TcpProxy) -> Result<TcpProxyConfig, CompileError> {
    use tcp::tcp_proxy::ClusterSpecifier;
    let cluster = match &t.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => TcpDestination::Cluster(c.clone()),
        Some(ClusterSpecifier::Cluster(_)) | None => return Err(ctx.missing("cluster")),
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            if w.clusters.is_empty() {
                return Err(ctx.missing("weighted_clusters.clusters"));
            }
            let mut out = Vec::new();
            for (i, c) in w.clusters.iter().enumerate() {
                if c.metadata_match.is_some() {
                    return Err(ctx.unsupported(
                        &format!("weighted_clusters.clusters[{i}].metadata_match"),
                        "",
                    ));
                }
                if c.name.is_empty() {
                    return Err(ctx.missing(&format!("weighted_clusters.clusters[{i}].name")));
                }
                out.push((c.name.clone(), c.weight));
            }
            if out.iter().all(|(_, w)| *w == 0) {
                return Err(ctx.invalid(
                    "weighted_clusters.clusters",
                    "the sum of the weights must be greater than 0",
                ));
            }
            TcpDestination::Weighted(out)
        }
    };
    if t.tunneling_config.is_some() {
        return Err(ctx.unsupported("tunneling_config", ""));
    }
    if t.on_demand.is_some() {
        return Err(ctx.unsupported("on_demand", ""));
    }
    if t.metadata_match.is_some() {
        return Err(ctx.unsupported("metadata_match", ""));
    }
    if !t.hash_policy.is_empty() {
        return Err(ctx.unsupported("hash_policy", ""));
    }
    if t.max_downstream_connection_duration.is_some() {
        return Err(ctx.unsupported("max_downstream_connection_duration", ""));
    }
    if t.downstream_idle_timeout.is_some() || t.upstream_idle_timeout.is_some() {
        return Err(ctx.unsupported("downstream_idle_timeout", ""));
    }
    let max_connect_attempts = u32_or(
        t.max_connect_attempts.as_ref(),
        DEFAULT_TCP_MAX_CONNECT_ATTEMPTS,
    );
    if max_connect_attempts == 0 {
        return Err(ctx.invalid("max_connect_attempts", "must be at least 1"));
    }
    Ok(TcpProxyConfig {
        stat_prefix: t.stat_prefix.clone(),
        cluster,
        idle_timeout: timeout(
            ctx,
            "idle_timeout",
            t.idle_timeout.as_ref(),
            Some(DEFAULT_TCP_IDLE_TIMEOUT),
        )?,
        max_connect_attempts,
        access_log: access_logs(ctx, "access_log", &t.access_log)?,
    })
}

/// Access logs of an HCM or TCP proxy: file, stdout and stderr loggers.
/// Other loggers (gRPC, OpenTelemetry) are telemetry only: skipped with a note.
pub(crate) fn access_logs(
    ctx: &Ctx,
    field: &str,
    logs: &[accesslog::AccessLog],
) -> Result<Vec<AccessLogConfig>, CompileError> {
    use envoy_types::pb::envoy::extensions::access_loggers::file::v3::file_access_log::AccessLogFormat as FileFormat;
    let mut out = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        let lf = format!("{field}[{i}]");
        if log.filter.is_some() {
            ctx.note_ignored(
                &format!("{lf}.filter"),
                "access log filters are not applied; every request is logged",
            );
        }
        let any = match &log.config_type {
            Some(accesslog::access_log::ConfigType::TypedConfig(any)) => any,
            None => return Err(ctx.missing(&format!("{lf}.typed_config"))),
        };
        let tf = format!("{lf}.typed_config");
        let (sink, format) = match any_type_name(any) {
            FILE_LOG => {
                let f: FileAccessLog = unpack_any(any).map_err(|e| ctx.decode(&tf, e))?;
                let sink = match f.path.as_str() {
                    "" => return Err(ctx.missing(&format!("{tf}.path"))),
                    "/dev/stdout" => AccessLogSink::Stdout,
                    "/dev/stderr" => AccessLogSink::Stderr,
                    p => AccessLogSink::File(p.into()),
                };
                #[expect(deprecated)]
                let format = match &f.access_log_format {
                    None => AccessLogFormat::Default,
                    Some(FileFormat::Format(s)) if s.is_empty() => AccessLogFormat::Default,
                    Some(FileFormat::Format(s)) => AccessLogFormat::Text(s.clone()),
                    Some(FileFormat::JsonFormat(s)) | Some(FileFormat::TypedJsonFormat(s)) => {
                        json_format(ctx, &format!("{tf}.json_format"), s)?
                    }
                    Some(FileFormat::LogFormat(s)) => {
                        substitution_format(ctx, &format!("{tf}.log_format"), s)?
                    }
                };
                (sink, format)
            }
            STDOUT_LOG => {
                let s: StdoutAccessLog = unpack_any(any).map_err(|e| ctx.decode(&tf, e))?;
                let format = match &s.access_log_format {
                    None => AccessLogFormat::Default,
                    Some(envoy_types::pb::envoy::extensions::access_loggers::stream::v3::stdout_access_log::AccessLogFormat::LogFormat(f)) => {
                        substitution_format(ctx, &format!("{tf}.log_format"), f)?
                    }
                };
                (AccessLogSink::Stdout, format)
            }
            STDERR_LOG => {
                let s: StderrAccessLog = unpack_any(any).map_err(|e| ctx.decode(&tf, e))?;
                let format = match &s.access_log_format {
                    None => AccessLogFormat::Default,
                    Some(envoy_types::pb::envoy::extensions::access_loggers::stream::v3::stderr_access_log::AccessLogFormat::LogFormat(f)) => {
                        substitution_format(ctx, &format!("{tf}.log_format"), f)?
                    }
                };
                (AccessLogSink::Stderr, format)
            }
            other => {
                ctx.note_ignored(&tf, &format!("access logger {other} is not supported"));
                continue;
            }
        };
        out.push(AccessLogConfig { sink, format });
    }
    Ok(out)
}

fn substitution_format(
    ctx: &Ctx,
    field: &str,
    s: &core::SubstitutionFormatString,
) -> Result<AccessLogFormat, CompileError> {
    use core::substitution_format_string::Format;
    if !s.formatters.is_empty() {
        return Err(ctx.unsupported(&format!("{field}.formatters"), ""));
    }
    match &s.format {
        None => Ok(AccessLogFormat::Default),
        Some(Format::TextFormat(t)) => Ok(AccessLogFormat::Text(t.clone())),
        Some(Format::TextFormatSource(d)) => Ok(AccessLogFormat::Text(data_source_text(
            ctx,
            &format!("{field}.text_format_source"),
            d,
        )?)),
        Some(Format::JsonFormat(j)) => json_format(ctx, &format!("{field}.json_format"), j),
    }
}

fn json_format(
    ctx: &Ctx,
    field: &str,
    s: &envoy_types::pb::google::protobuf::Struct,
) -> Result<AccessLogFormat, CompileError> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let mut out = Vec::with_capacity(s.fields.len());
    for (k, v) in &s.fields {
        match &v.kind {
            Some(Kind::StringValue(t)) => out.push((k.clone(), t.clone())),
            _ => {
                return Err(ctx.unsupported(
                    &format!("{field}.{k}"),
                    "(only string values are supported)",
                ));
            }
        }
    }
    // The proto map has no order; a stable one keeps log lines comparable.
    out.sort();
    Ok(AccessLogFormat::Json(out))
}

/// `forward_client_cert_details` and `set_current_client_cert_details`.
fn client_cert(
    ctx: &Ctx,
    h: &envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager,
) -> Result<
    (
        crate::model::ForwardClientCert,
        crate::model::ClientCertDetails,
    ),
    CompileError,
> {
    use crate::model::{ClientCertDetails, ForwardClientCert as F};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::ForwardClientCertDetails as Pb;
    let mode = match Pb::try_from(h.forward_client_cert_details) {
        Ok(Pb::Sanitize) => F::Sanitize,
        Ok(Pb::ForwardOnly) => F::ForwardOnly,
        Ok(Pb::AppendForward) => F::AppendForward,
        Ok(Pb::SanitizeSet) => F::SanitizeSet,
        Ok(Pb::AlwaysForwardOnly) => F::AlwaysForwardOnly,
        Err(_) => {
            return Err(ctx.invalid(
                "forward_client_cert_details",
                format!("unknown value {}", h.forward_client_cert_details),
            ));
        }
    };
    let details = match &h.set_current_client_cert_details {
        None => ClientCertDetails::default(),
        Some(d) => {
            if d.cert || d.chain {
                return Err(ctx.unsupported(
                    "set_current_client_cert_details.cert",
                    "(the PEM certificate or chain in XFCC)",
                ));
            }
            ClientCertDetails {
                subject: d.subject.as_ref().is_some_and(|b| b.value),
                dns: d.dns,
                uri: d.uri,
            }
        }
    };
    Ok((mode, details))
}
