//! `RouteConfiguration` into a [`RouteTable`]: virtual hosts and their
//! domains, route matches, actions and the per-route policies (timeouts,
//! retries, hashing, mirroring, faults, CORS).

use std::collections::BTreeSet;
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3 as pb;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3 as cors_pb;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault_pb;
use envoy_types::pb::google::protobuf::Any;

use super::common::*;
use super::errors::{CompileError, Ctx};
use crate::model::*;
use crate::xds_json::{any_type_name, unpack_any};

const FAULT: &str = "envoy.extensions.filters.http.fault.v3.HTTPFault";
const CORS_POLICY: &str = "envoy.extensions.filters.http.cors.v3.CorsPolicy";
const FILTER_CONFIG: &str = "envoy.config.route.v3.FilterConfig";
const PREVIOUS_HOSTS: &str = "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

pub fn compile_route_configuration(
    rc: &pb::RouteConfiguration,
) -> Result<RouteTable, CompileError> {
    let ctx = Ctx::new("route_configuration", &rc.name);
    compile_route_table(&ctx, rc)
}

pub(crate) fn compile_route_table(
    ctx: &Ctx,
    rc: &pb::RouteConfiguration,
) -> Result<RouteTable, CompileError> {
    if rc.vhds.is_some() {
        return Err(ctx.unsupported("vhds", ""));
    }
    if !rc.internal_only_headers.is_empty() {
        return Err(ctx.unsupported("internal_only_headers", ""));
    }
    if !rc.request_mirror_policies.is_empty() {
        return Err(ctx.unsupported("request_mirror_policies", "(at route configuration level)"));
    }
    if !rc.typed_per_filter_config.is_empty() {
        return Err(ctx.unsupported("typed_per_filter_config", "(at route configuration level)"));
    }
    if rc.most_specific_header_mutations_wins {
        return Err(ctx.unsupported("most_specific_header_mutations_wins", ""));
    }
    if rc.ignore_port_in_host_matching {
        return Err(ctx.unsupported("ignore_port_in_host_matching", ""));
    }
    if !rc.vhost_header.is_empty() {
        return Err(ctx.unsupported("vhost_header", &rc.vhost_header));
    }
    if !rc.cluster_specifier_plugins.is_empty() {
        return Err(ctx.unsupported("cluster_specifier_plugins", ""));
    }
    let headers = header_mutations(
        ctx,
        &rc.request_headers_to_add,
        &rc.request_headers_to_remove,
        &rc.response_headers_to_add,
        &rc.response_headers_to_remove,
    )?;
    let mut seen = BTreeSet::new();
    let mut virtual_hosts = Vec::with_capacity(rc.virtual_hosts.len());
    for (i, vh) in rc.virtual_hosts.iter().enumerate() {
        let vctx = ctx.at_index("virtual_hosts", i);
        let vh = virtual_host(&vctx, vh)?;
        for d in &vh.domains {
            // Envoy rejects a domain that appears in two virtual hosts.
            let key = format!("{d:?}");
            if !seen.insert(key) {
                return Err(vctx.invalid(
                    "domains",
                    format!(
                        "domain {} appears in more than one virtual host",
                        domain_text(d)
                    ),
                ));
            }
        }
        virtual_hosts.push(vh);
    }
    Ok(RouteTable::new(rc.name.clone(), virtual_hosts, headers))
}

fn domain_text(d: &DomainPattern) -> String {
    match d {
        DomainPattern::Exact(s) => format!("{s:?}"),
        DomainPattern::Suffix(s) => format!("\"*{s}\""),
        DomainPattern::Prefix(s) => format!("\"{s}*\""),
        DomainPattern::Any => "\"*\"".into(),
    }
}

/// One `VirtualHost.domains` entry. Host matching is case-insensitive, so
/// patterns are stored lower-case. As in Envoy, a `*` elsewhere than at the
/// start or the end is a literal character.
pub(crate) fn domain_pattern(
    ctx: &Ctx,
    field: &str,
    d: &str,
) -> Result<DomainPattern, CompileError> {
    let d = d.to_ascii_lowercase();
    if d.is_empty() {
        return Err(ctx.invalid(field, "empty domain"));
    }
    let pattern = if d == "*" {
        DomainPattern::Any
    } else if let Some(rest) = d.strip_prefix('*') {
        DomainPattern::Suffix(rest.to_string())
    } else if let Some(rest) = d.strip_suffix('*') {
        DomainPattern::Prefix(rest.to_string())
    } else {
        DomainPattern::Exact(d.clone())
    };
    Ok(pattern)
}

#[expect(deprecated)]
fn virtual_host(ctx: &Ctx, vh: &pb::VirtualHost) -> Result<VirtualHost, CompileError> {
    if vh.domains.is_empty() {
        return Err(ctx.missing("domains"));
    }
    if vh.require_tls != 0 {
        return Err(ctx.unsupported("require_tls", ""));
    }
    if !vh.rate_limits.is_empty() {
        return Err(ctx.unsupported("rate_limits", ""));
    }
    if vh.hedge_policy.is_some() {
        return Err(ctx.unsupported("hedge_policy", ""));
    }
    if !vh.request_mirror_policies.is_empty() {
        return Err(ctx.unsupported("request_mirror_policies", "(at virtual host level)"));
    }
    if vh.matcher.is_some() {
        return Err(ctx.unsupported("matcher", ""));
    }
    if vh.include_request_attempt_count || vh.include_attempt_count_in_response {
        return Err(ctx.unsupported("include_request_attempt_count", ""));
    }
    if vh.retry_policy_typed_config.is_some() {
        return Err(ctx.unsupported("retry_policy_typed_config", ""));
    }
    if vh.include_is_timeout_retry_header {
        return Err(ctx.unsupported("include_is_timeout_retry_header", "true"));
    }
    if vh.per_request_buffer_limit_bytes.is_some() || vh.request_body_buffer_limit.is_some() {
        ctx.note_ignored(
            "per_request_buffer_limit_bytes",
            "the cluster's per_connection_buffer_limit_bytes bounds retry buffering",
        );
    }
    if !vh.virtual_clusters.is_empty() {
        ctx.note_ignored("virtual_clusters", "per virtual cluster stats are not kept");
    }
    let domains = vh
        .domains
        .iter()
        .enumerate()
        .map(|(i, d)| domain_pattern(ctx, &format!("domains[{i}]"), d))
        .collect::<Result<Vec<_>, _>>()?;
    let routes = vh
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| route(&ctx.at_index("routes", i), r))
        .collect::<Result<Vec<_>, _>>()?;
    let filters = per_filter_config(ctx, &vh.typed_per_filter_config)?;
    let cors = match (&vh.cors, filters.cors) {
        (_, Some(c)) => Some(c),
        (Some(c), None) => Some(route_cors(ctx, "cors", c)?),
        (None, None) => None,
    };
    Ok(VirtualHost {
        name: vh.name.clone(),
        domains,
        routes,
        headers: header_mutations(
            ctx,
            &vh.request_headers_to_add,
            &vh.request_headers_to_remove,
            &vh.response_headers_to_add,
            &vh.response_headers_to_remove,
        )?,
        retry_policy: vh
            .retry_policy
            .as_ref()
            .map(|p| retry_policy(&ctx.at("retry_policy"), p))
            .transpose()?,
        fault: filters.fault,
        cors,
    })
}

fn route(ctx: &Ctx, r: &pb::Route) -> Result<Route, CompileError> {
    if r.per_request_buffer_limit_bytes.is_some() || r.request_body_buffer_limit.is_some() {
        ctx.note_ignored(
            "per_request_buffer_limit_bytes",
            "the cluster's per_connection_buffer_limit_bytes bounds retry buffering",
        );
    }
    use pb::route::Action;
    let matcher = route_match(
        &ctx.at("match"),
        r.r#match.as_ref().ok_or_else(|| ctx.missing("match"))?,
    )?;
    let action = match &r.action {
        Some(Action::Route(a)) => RouteAction::Forward(Box::new(forward(&ctx.at("route"), a)?)),
        Some(Action::Redirect(a)) => RouteAction::Redirect(redirect(&ctx.at("redirect"), a)?),
        Some(Action::DirectResponse(d)) => {
            let dctx = ctx.at("direct_response");
            if !(200..=599).contains(&d.status) {
                return Err(dctx.invalid("status", format!("{} is not within 200..599", d.status)));
            }
            if d.body_format.is_some() {
                return Err(dctx.unsupported("body_format", ""));
            }
            RouteAction::DirectResponse {
                status: d.status as u16,
                body: d
                    .body
                    .as_ref()
                    .map(|b| data_source_text(&dctx, "body", b))
                    .transpose()?,
            }
        }
        Some(Action::FilterAction(_)) => return Err(ctx.unsupported("filter_action", "")),
        Some(Action::NonForwardingAction(_)) => {
            return Err(ctx.unsupported("non_forwarding_action", ""));
        }
        None => return Err(ctx.missing("route")),
    };
    let filters = per_filter_config(ctx, &r.typed_per_filter_config)?;
    // The deprecated RouteAction.cors still works when no per-filter one is given.
    let cors = match (&r.action, filters.cors) {
        (_, Some(c)) => Some(c),
        #[expect(deprecated)]
        (Some(Action::Route(a)), None) => a
            .cors
            .as_ref()
            .map(|c| route_cors(ctx, "route.cors", c))
            .transpose()?,
        _ => None,
    };
    Ok(Route {
        name: r.name.clone(),
        matcher,
        action,
        headers: header_mutations(
            ctx,
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
        )?,
        fault: filters.fault,
        cors,
    })
}

fn route_match(ctx: &Ctx, m: &pb::RouteMatch) -> Result<RouteMatch, CompileError> {
    use pb::route_match::PathSpecifier as P;
    let case_sensitive = bool_or(m.case_sensitive.as_ref(), true);
    let path = match &m.path_specifier {
        Some(P::Prefix(p)) => PathMatch::Prefix(p.clone()),
        Some(P::Path(p)) => PathMatch::Path(p.clone()),
        Some(P::SafeRegex(r)) => {
            let pattern = if case_sensitive {
                r.regex.clone()
            } else {
                format!("(?i:{})", r.regex)
            };
            PathMatch::Regex(full_regex(ctx, "safe_regex", &pattern)?)
        }
        Some(P::PathSeparatedPrefix(p)) => {
            if p.contains(['?', '#']) || (p.ends_with('/') && p.len() > 1) {
                return Err(ctx.invalid(
                    "path_separated_prefix",
                    format!("{p:?} may not end in / or hold ? or #"),
                ));
            }
            PathMatch::PathSeparatedPrefix(p.clone())
        }
        Some(P::ConnectMatcher(_)) => return Err(ctx.unsupported("connect_matcher", "")),
        Some(P::PathMatchPolicy(p)) => return Err(ctx.unsupported("path_match_policy", &p.name)),
        None => return Err(ctx.missing("prefix")),
    };
    if !m.cookies.is_empty() {
        return Err(ctx.unsupported("cookies", ""));
    }
    if m.tls_context.is_some() {
        return Err(ctx.unsupported("tls_context", ""));
    }
    if !m.dynamic_metadata.is_empty() {
        return Err(ctx.unsupported("dynamic_metadata", ""));
    }
    if !m.filter_state.is_empty() {
        return Err(ctx.unsupported("filter_state", ""));
    }
    let query_parameters = m
        .query_parameters
        .iter()
        .enumerate()
        .map(|(i, q)| query_matcher(ctx, &format!("query_parameters[{i}]"), q))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RouteMatch {
        path,
        case_sensitive,
        headers: header_matchers(ctx, "headers", &m.headers)?,
        query_parameters,
        runtime_fraction: m
            .runtime_fraction
            .as_ref()
            .map(|f| runtime_fraction(ctx, "runtime_fraction", f))
            .transpose()?,
        grpc: m.grpc.is_some(),
    })
}

fn query_matcher(
    ctx: &Ctx,
    field: &str,
    q: &pb::QueryParameterMatcher,
) -> Result<QueryParameterMatcher, CompileError> {
    use pb::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
    if q.name.is_empty() {
        return Err(ctx.missing(&format!("{field}.name")));
    }
    let matcher = match &q.query_parameter_match_specifier {
        Some(Q::StringMatch(m)) => Some(string_matcher(ctx, &format!("{field}.string_match"), m)?),
        Some(Q::PresentMatch(true)) | None => None,
        Some(Q::PresentMatch(false)) => {
            return Err(ctx.invalid(
                &format!("{field}.present_match"),
                "false is not a valid matcher",
            ));
        }
    };
    Ok(QueryParameterMatcher {
        name: q.name.clone(),
        matcher,
    })
}

#[expect(deprecated)]
fn forward(ctx: &Ctx, a: &pb::RouteAction) -> Result<ForwardAction, CompileError> {
    use pb::route_action::{ClusterSpecifier as C, HostRewriteSpecifier as H};
    let destination = match &a.cluster_specifier {
        Some(C::Cluster(c)) if !c.is_empty() => Destination::Cluster(c.clone()),
        Some(C::Cluster(_)) => return Err(ctx.invalid("cluster", "empty cluster name")),
        Some(C::ClusterHeader(h)) => Destination::ClusterHeader(h.to_ascii_lowercase()),
        Some(C::WeightedClusters(w)) => {
            Destination::Weighted(weighted_clusters(&ctx.at("weighted_clusters"), w)?)
        }
        Some(C::ClusterSpecifierPlugin(p)) => {
            return Err(ctx.unsupported("cluster_specifier_plugin", p));
        }
        Some(C::InlineClusterSpecifierPlugin(_)) => {
            return Err(ctx.unsupported("inline_cluster_specifier_plugin", ""));
        }
        None => return Err(ctx.missing("cluster")),
    };
    let host_rewrite = match &a.host_rewrite_specifier {
        None => None,
        Some(H::HostRewriteLiteral(h)) => Some(h.clone()),
        Some(H::AutoHostRewrite(b)) if !b.value => None,
        Some(H::AutoHostRewrite(_)) => return Err(ctx.unsupported("auto_host_rewrite", "")),
        Some(H::HostRewriteHeader(h)) => return Err(ctx.unsupported("host_rewrite_header", h)),
        Some(H::HostRewritePathRegex(_)) => {
            return Err(ctx.unsupported("host_rewrite_path_regex", ""));
        }
        Some(H::HostRewrite(_)) => return Err(ctx.unsupported("host_rewrite", "")),
    };
    if !a.path_rewrite.is_empty() || a.path_rewrite_policy.is_some() {
        return Err(ctx.unsupported("path_rewrite_policy", ""));
    }
    if a.metadata_match.is_some() {
        return Err(ctx.unsupported("metadata_match", ""));
    }
    if !a.rate_limits.is_empty() {
        return Err(ctx.unsupported("rate_limits", ""));
    }
    if a.hedge_policy.is_some() {
        return Err(ctx.unsupported("hedge_policy", ""));
    }
    if a.internal_redirect_policy.is_some() || a.internal_redirect_action != 0 {
        return Err(ctx.unsupported("internal_redirect_policy", ""));
    }
    if a.cluster_not_found_response_code != 0 {
        return Err(ctx.unsupported(
            "cluster_not_found_response_code",
            a.cluster_not_found_response_code,
        ));
    }
    if a.append_x_forwarded_host {
        return Err(ctx.unsupported("append_x_forwarded_host", "true"));
    }
    if a.retry_policy_typed_config.is_some() {
        return Err(ctx.unsupported("retry_policy_typed_config", ""));
    }
    // Zero durations here are Envoy's "no limit": accept those, refuse the rest.
    let nonzero = |f: &str,
                   d: Option<&envoy_types::pb::google::protobuf::Duration>|
     -> Result<(), CompileError> {
        if opt_duration(ctx, f, d)?.is_some_and(|d| !d.is_zero()) {
            return Err(ctx.unsupported(f, ""));
        }
        Ok(())
    };
    nonzero("max_grpc_timeout", a.max_grpc_timeout.as_ref())?;
    nonzero("grpc_timeout_offset", a.grpc_timeout_offset.as_ref())?;
    if let Some(m) = &a.max_stream_duration {
        nonzero(
            "max_stream_duration.max_stream_duration",
            m.max_stream_duration.as_ref(),
        )?;
        nonzero(
            "max_stream_duration.grpc_timeout_header_max",
            m.grpc_timeout_header_max.as_ref(),
        )?;
        nonzero(
            "max_stream_duration.grpc_timeout_header_offset",
            m.grpc_timeout_header_offset.as_ref(),
        )?;
    }
    let regex_rewrite = match &a.regex_rewrite {
        None => None,
        Some(r) => {
            let p = r
                .pattern
                .as_ref()
                .ok_or_else(|| ctx.missing("regex_rewrite.pattern"))?;
            Some((
                search_regex(ctx, "regex_rewrite.pattern", &p.regex)?,
                envoy_substitution(&r.substitution),
            ))
        }
    };
    if regex_rewrite.is_some() && !a.prefix_rewrite.is_empty() {
        return Err(ctx.invalid(
            "regex_rewrite",
            "prefix_rewrite and regex_rewrite are exclusive",
        ));
    }
    let mut upgrades = Vec::new();
    for (i, u) in a.upgrade_configs.iter().enumerate() {
        if u.connect_config.is_some() {
            return Err(ctx.unsupported(&format!("upgrade_configs[{i}].connect_config"), ""));
        }
        if bool_or(u.enabled.as_ref(), true) {
            upgrades.push(u.upgrade_type.to_ascii_lowercase());
        }
    }
    Ok(ForwardAction {
        destination,
        prefix_rewrite: (!a.prefix_rewrite.is_empty()).then(|| a.prefix_rewrite.clone()),
        regex_rewrite,
        host_rewrite,
        timeout: timeout(
            ctx,
            "timeout",
            a.timeout.as_ref(),
            Some(DEFAULT_ROUTE_TIMEOUT),
        )?,
        // `0s` disables the stream idle timeout for this route; absent keeps
        // the connection manager's.
        idle_timeout: opt_duration(ctx, "idle_timeout", a.idle_timeout.as_ref())?,
        retry_policy: a
            .retry_policy
            .as_ref()
            .map(|p| retry_policy(&ctx.at("retry_policy"), p))
            .transpose()?,
        hash_policy: a
            .hash_policy
            .iter()
            .enumerate()
            .map(|(i, h)| hash_policy(&ctx.at_index("hash_policy", i), h))
            .collect::<Result<_, _>>()?,
        mirrors: a
            .request_mirror_policies
            .iter()
            .enumerate()
            .map(|(i, m)| mirror_policy(&ctx.at_index("request_mirror_policies", i), m))
            .collect::<Result<_, _>>()?,
        upgrades,
    })
}

/// RE2 substitutions write groups as `\1`; the regex crate wants `${1}`.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(d) if d.is_ascii_digit() => {
                    out.push_str(&format!("${{{d}}}"));
                    chars.next();
                }
                Some('\\') => {
                    out.push('\\');
                    chars.next();
                }
                _ => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn weighted_clusters(
    ctx: &Ctx,
    w: &pb::WeightedCluster,
) -> Result<Vec<WeightedCluster>, CompileError> {
    use pb::weighted_cluster::cluster_weight::HostRewriteSpecifier;
    if w.clusters.is_empty() {
        return Err(ctx.missing("clusters"));
    }
    if w.random_value_specifier.is_some() {
        return Err(ctx.unsupported("header_name", "(random value specifier)"));
    }
    let mut out = Vec::with_capacity(w.clusters.len());
    for (i, c) in w.clusters.iter().enumerate() {
        let cctx = ctx.at_index("clusters", i);
        if !c.cluster_header.is_empty() {
            return Err(cctx.unsupported("cluster_header", &c.cluster_header));
        }
        if c.name.is_empty() {
            return Err(cctx.missing("name"));
        }
        if c.metadata_match.is_some() {
            return Err(cctx.unsupported("metadata_match", ""));
        }
        if !c.typed_per_filter_config.is_empty() {
            return Err(cctx.unsupported("typed_per_filter_config", ""));
        }
        out.push(WeightedCluster {
            name: c.name.clone(),
            weight: c.weight.map(|v| v.value).unwrap_or(0),
            headers: header_mutations(
                &cctx,
                &c.request_headers_to_add,
                &c.request_headers_to_remove,
                &c.response_headers_to_add,
                &c.response_headers_to_remove,
            )?,
            host_rewrite: c
                .host_rewrite_specifier
                .as_ref()
                .map(|HostRewriteSpecifier::HostRewriteLiteral(h)| h.clone()),
        });
    }
    if out.iter().all(|c| c.weight == 0) {
        return Err(ctx.invalid("clusters", "the sum of the weights must be greater than 0"));
    }
    Ok(out)
}

fn redirect(ctx: &Ctx, r: &pb::RedirectAction) -> Result<RedirectAction, CompileError> {
    use pb::redirect_action::{
        PathRewriteSpecifier as P, RedirectResponseCode as R, SchemeRewriteSpecifier as S,
    };
    let scheme = match &r.scheme_rewrite_specifier {
        Some(S::HttpsRedirect(true)) => Some("https".to_string()),
        Some(S::HttpsRedirect(false)) | None => None,
        Some(S::SchemeRedirect(s)) => Some(s.to_ascii_lowercase()),
    };
    let (path, prefix_rewrite) = match &r.path_rewrite_specifier {
        None => (None, None),
        Some(P::PathRedirect(p)) => (Some(p.clone()), None),
        Some(P::PrefixRewrite(p)) => (None, Some(p.clone())),
        Some(P::RegexRewrite(_)) => return Err(ctx.unsupported("regex_rewrite", "")),
        Some(P::PathRewrite(_)) => return Err(ctx.unsupported("path_rewrite", "")),
    };
    let status = match R::try_from(r.response_code) {
        Ok(R::MovedPermanently) => 301,
        Ok(R::Found) => 302,
        Ok(R::SeeOther) => 303,
        Ok(R::TemporaryRedirect) => 307,
        Ok(R::PermanentRedirect) => 308,
        Err(_) => {
            return Err(ctx.invalid(
                "response_code",
                format!("unknown value {}", r.response_code),
            ));
        }
    };
    let port = match r.port_redirect {
        0 => None,
        p => Some(
            u16::try_from(p)
                .map_err(|_| ctx.invalid("port_redirect", format!("{p} is not a port")))?,
        ),
    };
    Ok(RedirectAction {
        scheme,
        host: (!r.host_redirect.is_empty()).then(|| r.host_redirect.clone()),
        port,
        path,
        prefix_rewrite,
        status,
        strip_query: r.strip_query,
    })
}

/// The retry conditions of `retry_on` (comma separated, Envoy's names).
pub(crate) fn retry_on(ctx: &Ctx, field: &str, s: &str) -> Result<RetryOn, CompileError> {
    let mut on = RetryOn::default();
    for cond in s.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        match cond {
            "5xx" => on.server_error_5xx = true,
            "gateway-error" => on.gateway_error = true,
            "reset" => on.reset = true,
            "connect-failure" => on.connect_failure = true,
            "refused-stream" => on.refused_stream = true,
            "retriable-4xx" => on.retriable_4xx = true,
            "retriable-status-codes" => on.retriable_status_codes = true,
            "retriable-headers" => on.retriable_headers = true,
            "cancelled" => on.grpc_cancelled = true,
            "deadline-exceeded" => on.grpc_deadline_exceeded = true,
            "internal" => on.grpc_internal = true,
            "resource-exhausted" => on.grpc_resource_exhausted = true,
            "unavailable" => on.grpc_unavailable = true,
            "reset-before-request" | "envoy-ratelimited" | "http3-post-connect-failure" => {
                return Err(ctx.unsupported(field, format!("condition {cond:?}")));
            }
            // Envoy ignores conditions it does not know; so does this proxy,
            // with a note so that a typo can be found.
            other => ctx.note_ignored(field, &format!("unknown retry condition {other:?}")),
        }
    }
    Ok(on)
}

fn retry_policy(ctx: &Ctx, p: &pb::RetryPolicy) -> Result<RetryPolicy, CompileError> {
    let on = retry_on(ctx, "retry_on", &p.retry_on)?;
    if p.retry_priority.is_some() {
        return Err(ctx.unsupported("retry_priority", ""));
    }
    if !p.retry_options_predicates.is_empty() {
        return Err(ctx.unsupported("retry_options_predicates", ""));
    }
    if p.rate_limited_retry_back_off.is_some() {
        return Err(ctx.unsupported("rate_limited_retry_back_off", ""));
    }
    if !p.retriable_request_headers.is_empty() {
        return Err(ctx.unsupported("retriable_request_headers", ""));
    }
    let mut avoid_previous_hosts = false;
    for (i, pred) in p.retry_host_predicate.iter().enumerate() {
        use pb::retry_policy::retry_host_predicate::ConfigType;
        let typed = match &pred.config_type {
            Some(ConfigType::TypedConfig(any)) => any_type_name(any).to_string(),
            None => String::new(),
        };
        if typed == PREVIOUS_HOSTS || pred.name == "envoy.retry_host_predicates.previous_hosts" {
            avoid_previous_hosts = true;
        } else {
            let what = if typed.is_empty() {
                pred.name.clone()
            } else {
                typed
            };
            return Err(ctx.unsupported(&format!("retry_host_predicate[{i}]"), what));
        }
    }
    let mut retriable_status_codes = Vec::with_capacity(p.retriable_status_codes.len());
    for (i, c) in p.retriable_status_codes.iter().enumerate() {
        if !(100..=599).contains(c) {
            return Err(ctx.invalid(
                &format!("retriable_status_codes[{i}]"),
                format!("{c} is not an HTTP status"),
            ));
        }
        retriable_status_codes.push(*c as u16);
    }
    let (base_interval, max_interval) = match &p.retry_back_off {
        None => (
            DEFAULT_RETRY_BASE_INTERVAL,
            DEFAULT_RETRY_BASE_INTERVAL * DEFAULT_RETRY_MAX_INTERVAL_FACTOR,
        ),
        Some(b) => {
            let base = match &b.base_interval {
                Some(d) => duration(ctx, "retry_back_off.base_interval", d)?,
                None => return Err(ctx.missing("retry_back_off.base_interval")),
            };
            if base < Duration::from_millis(1) {
                return Err(ctx.invalid("retry_back_off.base_interval", "must be at least 1ms"));
            }
            let max = match &b.max_interval {
                Some(d) => duration(ctx, "retry_back_off.max_interval", d)?,
                None => base * DEFAULT_RETRY_MAX_INTERVAL_FACTOR,
            };
            if max < base {
                return Err(ctx.invalid(
                    "retry_back_off.max_interval",
                    "must not be below base_interval",
                ));
            }
            (base, max)
        }
    };
    Ok(RetryPolicy {
        retry_on: on,
        num_retries: u32_or(p.num_retries.as_ref(), DEFAULT_NUM_RETRIES),
        per_try_timeout: timeout(ctx, "per_try_timeout", p.per_try_timeout.as_ref(), None)?,
        per_try_idle_timeout: timeout(
            ctx,
            "per_try_idle_timeout",
            p.per_try_idle_timeout.as_ref(),
            None,
        )?,
        retriable_status_codes,
        retriable_headers: header_matchers(ctx, "retriable_headers", &p.retriable_headers)?,
        avoid_previous_hosts,
        host_selection_retry_max_attempts: p
            .host_selection_retry_max_attempts
            .clamp(1, u32::MAX as i64) as u32,
        base_interval,
        max_interval,
    })
}

fn hash_policy(ctx: &Ctx, h: &pb::route_action::HashPolicy) -> Result<HashPolicy, CompileError> {
    use pb::route_action::hash_policy::PolicySpecifier as P;
    let kind = match &h.policy_specifier {
        Some(P::Header(x)) => {
            if x.regex_rewrite.is_some() {
                return Err(ctx.unsupported("header.regex_rewrite", ""));
            }
            if x.header_name.is_empty() {
                return Err(ctx.missing("header.header_name"));
            }
            HashPolicyKind::Header {
                name: x.header_name.to_ascii_lowercase(),
            }
        }
        Some(P::Cookie(c)) => {
            if c.name.is_empty() {
                return Err(ctx.missing("cookie.name"));
            }
            // Everything here ends up in a `Set-Cookie` value: checked now,
            // so that a cookie never fails to be built on the request path.
            let cookie_text = |field: &str, v: &str| {
                if v.bytes()
                    .all(|b| (0x21..0x7f).contains(&b) && b != b';' && b != b',')
                {
                    Ok(())
                } else {
                    Err(ctx.invalid(field, "must be visible ASCII without ';', ',' or spaces"))
                }
            };
            cookie_text("cookie.name", &c.name)?;
            cookie_text("cookie.path", &c.path)?;
            let mut attributes = Vec::with_capacity(c.attributes.len());
            for (i, a) in c.attributes.iter().enumerate() {
                if a.name.is_empty() {
                    return Err(ctx.missing(&format!("cookie.attributes[{i}].name")));
                }
                cookie_text(&format!("cookie.attributes[{i}].name"), &a.name)?;
                cookie_text(&format!("cookie.attributes[{i}].value"), &a.value)?;
                attributes.push((a.name.clone(), a.value.clone()));
            }
            HashPolicyKind::Cookie {
                name: c.name.clone(),
                ttl: opt_duration(ctx, "cookie.ttl", c.ttl.as_ref())?,
                path: (!c.path.is_empty()).then(|| c.path.clone()),
                attributes,
            }
        }
        Some(P::ConnectionProperties(c)) if c.source_ip => HashPolicyKind::SourceIp,
        Some(P::ConnectionProperties(_)) => {
            return Err(ctx.invalid("connection_properties.source_ip", "must be true"));
        }
        Some(P::QueryParameter(q)) => {
            if q.name.is_empty() {
                return Err(ctx.missing("query_parameter.name"));
            }
            HashPolicyKind::QueryParameter {
                name: q.name.clone(),
            }
        }
        Some(P::FilterState(f)) => return Err(ctx.unsupported("filter_state", &f.key)),
        None => return Err(ctx.missing("policy_specifier")),
    };
    Ok(HashPolicy {
        kind,
        terminal: h.terminal,
    })
}

fn mirror_policy(
    ctx: &Ctx,
    m: &pb::route_action::RequestMirrorPolicy,
) -> Result<MirrorPolicy, CompileError> {
    if !m.cluster_header.is_empty() {
        return Err(ctx.unsupported("cluster_header", &m.cluster_header));
    }
    if m.cluster.is_empty() {
        return Err(ctx.missing("cluster"));
    }
    if m.disable_shadow_host_suffix_append {
        return Err(ctx.unsupported("disable_shadow_host_suffix_append", ""));
    }
    if !m.request_headers_mutations.is_empty() {
        return Err(ctx.unsupported("request_headers_mutations", ""));
    }
    if !m.host_rewrite_literal.is_empty() {
        return Err(ctx.unsupported("host_rewrite_literal", &m.host_rewrite_literal));
    }
    Ok(MirrorPolicy {
        cluster: m.cluster.clone(),
        fraction: m
            .runtime_fraction
            .as_ref()
            .map(|f| runtime_fraction(ctx, "runtime_fraction", f))
            .transpose()?,
    })
}

#[derive(Default)]
struct PerFilter {
    fault: Option<FaultConfig>,
    cors: Option<CorsPolicy>,
}

/// `typed_per_filter_config`: fault and CORS overrides, recognised by type.
fn per_filter_config(
    ctx: &Ctx,
    map: &std::collections::HashMap<String, Any>,
) -> Result<PerFilter, CompileError> {
    let mut out = PerFilter::default();
    // Sorted for deterministic errors.
    let mut keys: Vec<_> = map.keys().collect();
    keys.sort();
    for key in keys {
        let field = format!("typed_per_filter_config[{key:?}]");
        let mut any = map[key].clone();
        if any_type_name(&any) == FILTER_CONFIG {
            let fc: pb::FilterConfig = unpack_any(&any).map_err(|e| ctx.decode(&field, e))?;
            if fc.disabled {
                return Err(ctx.unsupported(&format!("{field}.disabled"), ""));
            }
            match fc.config {
                Some(inner) => any = inner,
                None => return Err(ctx.missing(&format!("{field}.config"))),
            }
        }
        match any_type_name(&any) {
            FAULT => {
                let f: fault_pb::HttpFault = unpack_any(&any).map_err(|e| ctx.decode(&field, e))?;
                out.fault = Some(fault_config(ctx, &field, &f)?);
            }
            CORS_POLICY => {
                let c: cors_pb::CorsPolicy = unpack_any(&any).map_err(|e| ctx.decode(&field, e))?;
                out.cors = Some(filter_cors(ctx, &field, &c)?);
            }
            other => return Err(ctx.unsupported(&field, other)),
        }
    }
    Ok(out)
}

/// The HTTP fault filter's config, at listener level or per route.
pub(crate) fn fault_config(
    ctx: &Ctx,
    field: &str,
    f: &fault_pb::HttpFault,
) -> Result<FaultConfig, CompileError> {
    use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
    use fault_pb::fault_abort::ErrorType;
    if !f.upstream_cluster.is_empty() {
        return Err(ctx.unsupported(&format!("{field}.upstream_cluster"), &f.upstream_cluster));
    }
    if !f.downstream_nodes.is_empty() {
        return Err(ctx.unsupported(&format!("{field}.downstream_nodes"), ""));
    }
    if f.response_rate_limit.is_some() {
        return Err(ctx.unsupported(&format!("{field}.response_rate_limit"), ""));
    }
    let delay = match &f.delay {
        None => None,
        Some(d) => {
            let df = format!("{field}.delay");
            let kind = match &d.fault_delay_secifier {
                Some(FaultDelaySecifier::FixedDelay(x)) => {
                    FaultDelayKind::Fixed(duration(ctx, &format!("{df}.fixed_delay"), x)?)
                }
                Some(FaultDelaySecifier::HeaderDelay(_)) => FaultDelayKind::FromHeader,
                None => return Err(ctx.missing(&format!("{df}.fixed_delay"))),
            };
            Some(FaultDelay {
                kind,
                percentage: percentage_or_zero(
                    ctx,
                    &format!("{df}.percentage"),
                    d.percentage.as_ref(),
                )?,
            })
        }
    };
    let abort = match &f.abort {
        None => None,
        Some(a) => {
            let af = format!("{field}.abort");
            if !a.response_body.is_empty() {
                return Err(ctx.unsupported(&format!("{af}.response_body"), ""));
            }
            let kind = match &a.error_type {
                Some(ErrorType::HttpStatus(s)) => {
                    if !(200..600).contains(s) {
                        return Err(ctx.invalid(
                            &format!("{af}.http_status"),
                            format!("{s} is not within 200..599"),
                        ));
                    }
                    FaultAbortKind::Http(*s as u16)
                }
                Some(ErrorType::GrpcStatus(s)) => FaultAbortKind::Grpc(*s),
                Some(ErrorType::HeaderAbort(_)) => FaultAbortKind::FromHeader,
                None => return Err(ctx.missing(&format!("{af}.http_status"))),
            };
            Some(FaultAbort {
                kind,
                percentage: percentage_or_zero(
                    ctx,
                    &format!("{af}.percentage"),
                    a.percentage.as_ref(),
                )?,
            })
        }
    };
    Ok(FaultConfig {
        delay,
        abort,
        max_active_faults: f.max_active_faults.map(|v| v.value),
        headers: header_matchers(ctx, &format!("{field}.headers"), &f.headers)?,
    })
}

fn percentage_or_zero(
    ctx: &Ctx,
    field: &str,
    p: Option<&envoy_types::pb::envoy::r#type::v3::FractionalPercent>,
) -> Result<Fraction, CompileError> {
    match p {
        Some(p) => fraction(ctx, field, p),
        None => Ok(Fraction {
            numerator: 0,
            denominator: 100,
        }),
    }
}

fn filter_cors(
    ctx: &Ctx,
    field: &str,
    c: &cors_pb::CorsPolicy,
) -> Result<CorsPolicy, CompileError> {
    if let Some(f) = &c.filter_enabled
        && runtime_fraction(ctx, &format!("{field}.filter_enabled"), f)? != Fraction::ALWAYS
    {
        return Err(ctx.unsupported(&format!("{field}.filter_enabled"), "below 100%"));
    }
    if c.shadow_enabled.is_some() {
        return Err(ctx.unsupported(&format!("{field}.shadow_enabled"), ""));
    }
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(CorsPolicy {
        allow_origin: c
            .allow_origin_string_match
            .iter()
            .enumerate()
            .map(|(i, m)| {
                string_matcher(ctx, &format!("{field}.allow_origin_string_match[{i}]"), m)
            })
            .collect::<Result<_, _>>()?,
        allow_methods: opt(&c.allow_methods),
        allow_headers: opt(&c.allow_headers),
        expose_headers: opt(&c.expose_headers),
        max_age: opt(&c.max_age),
        allow_credentials: c.allow_credentials.map(|b| b.value),
    })
}

/// The deprecated route-level `cors` field: the same policy as the filter's.
fn route_cors(ctx: &Ctx, field: &str, c: &pb::CorsPolicy) -> Result<CorsPolicy, CompileError> {
    use pb::cors_policy::EnabledSpecifier;
    let as_filter = cors_pb::CorsPolicy {
        allow_origin_string_match: c.allow_origin_string_match.clone(),
        allow_methods: c.allow_methods.clone(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        max_age: c.max_age.clone(),
        allow_credentials: c.allow_credentials,
        filter_enabled: c
            .enabled_specifier
            .as_ref()
            .map(|EnabledSpecifier::FilterEnabled(f)| f.clone()),
        shadow_enabled: c.shadow_enabled.clone(),
        ..Default::default()
    };
    filter_cors(ctx, field, &as_filter)
}
