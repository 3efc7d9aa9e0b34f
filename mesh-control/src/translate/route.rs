//! VirtualService `http` rules to Envoy routes, in order, one route per match (a rule without
//! matches is a catch-all), as Istio builds them; a service without a VirtualService gets
//! Istio's default route.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteMatch, WeightedCluster, header_matcher, query_parameter_matcher,
    redirect_action, retry_policy, route, route_action, route_match, weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as EnvoyCors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::google::protobuf::Any;
use mesh_api::common::StringMatch;
use mesh_api::constants::outbound_cluster_name;
use mesh_api::networking::virtual_service::{
    CorsPolicy, Destination, HttpFaultInjection, HttpMatchRequest, HttpRedirect, HttpRetry,
    HttpRoute, RedirectPortSelection,
};

use super::cluster::policy_for;
use super::envoy::{
    any, boolv, duration, header_ops, istio_config_metadata, percent_hundred, percent_million,
    runtime_fraction, string_matcher, u32v,
};
use super::{Scope, VsRef};
use crate::registry::labels_match;

pub(crate) const FAULT_FILTER: &str = "envoy.filters.http.fault";
pub(crate) const CORS_FILTER: &str = "envoy.filters.http.cors";
const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";
/// Istio's default `retryOn`.
pub(crate) const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
pub(crate) const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
/// Istio's default retriable status codes: a 503 (an instance going away, a sidecar whose
/// app is down) is retried on another host.
pub(crate) const DEFAULT_RETRIABLE_STATUS_CODES: [u32; 1] = [503];

/// Istio's route for a service port without a VirtualService.
pub(crate) fn default_route(
    scope: &Scope<'_>,
    svc: &crate::registry::Service,
    cluster: &str,
    port: u32,
) -> Route {
    let hash = hash_policy(scope, svc, port, None);
    let action = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_string())),
        timeout: Some(duration(std::time::Duration::ZERO)),
        retry_policy: retry_policy(None, !hash.is_empty()),
        hash_policy: hash,
        ..Default::default()
    };
    Route {
        name: "default".to_string(),
        r#match: Some(prefix_match("/")),
        action: Some(route::Action::Route(action)),
        ..Default::default()
    }
}

fn prefix_match(prefix: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(prefix.to_string())),
        ..Default::default()
    }
}

/// The routes of a VirtualService for a listener `port` and a `gateway` (`mesh` for sidecars),
/// keeping only rules and matches that apply to this proxy.
pub(crate) fn vs_routes(scope: &Scope<'_>, vs: &VsRef<'_>, port: u32, gateway: &str) -> Vec<Route> {
    let mut routes = Vec::new();
    for rule in &vs.spec.http {
        if rule.delegate.is_some() {
            tracing::warn!(vs = %vs.meta.key(), "delegate VirtualServices are not supported; rule skipped");
            continue;
        }
        let matches: Vec<Option<&HttpMatchRequest>> = if rule.matches.is_empty() {
            vec![None]
        } else {
            rule.matches
                .iter()
                .filter(|m| match_applies(scope, m, port, gateway, &vs.meta.namespace))
                .map(Some)
                .collect()
        };
        for m in matches {
            routes.push(build_route(scope, vs, rule, m, port));
        }
    }
    routes
}

/// Whether a match's proxy-side conditions (source labels and namespace, port, gateways) hold.
fn match_applies(
    scope: &Scope<'_>,
    m: &HttpMatchRequest,
    port: u32,
    gateway: &str,
    vs_namespace: &str,
) -> bool {
    if !labels_match(&m.source_labels, &scope.proxy.labels) {
        return false;
    }
    if m.source_namespace
        .as_ref()
        .is_some_and(|ns| ns != &scope.proxy.namespace)
    {
        return false;
    }
    if m.port.is_some_and(|p| p != port) {
        return false;
    }
    if !m.gateways.is_empty()
        && !m
            .gateways
            .iter()
            .any(|g| super::qualify_gateway(g, vs_namespace) == gateway)
    {
        return false;
    }
    true
}

fn build_route(
    scope: &Scope<'_>,
    vs: &VsRef<'_>,
    rule: &HttpRoute,
    m: Option<&HttpMatchRequest>,
    port: u32,
) -> Route {
    let name = match (rule.name.as_deref(), m.and_then(|m| m.name.as_deref())) {
        (Some(r), Some(m)) => format!("{r}.{m}"),
        (Some(r), None) => r.to_string(),
        (None, Some(m)) => m.to_string(),
        (None, None) => String::new(),
    };
    let mut route = Route {
        name,
        r#match: Some(route_match(m)),
        // The VirtualService behind the route, as Istio records it.
        metadata: Some(istio_config_metadata(vs.meta)),
        ..Default::default()
    };
    if let Some(h) = &rule.headers {
        if let Some(req) = &h.request {
            let (add, remove) = header_ops(req);
            route.request_headers_to_add = add;
            route.request_headers_to_remove = remove;
        }
        if let Some(resp) = &h.response {
            let (add, remove) = header_ops(resp);
            route.response_headers_to_add = add;
            route.response_headers_to_remove = remove;
        }
    }
    let mut per_filter: HashMap<String, Any> = HashMap::new();
    if let Some(fault) = &rule.fault
        && let Some(f) = http_fault(fault)
    {
        per_filter.insert(FAULT_FILTER.to_string(), any(&f));
    }
    if let Some(cors) = &rule.cors_policy {
        per_filter.insert(CORS_FILTER.to_string(), any(&cors_policy(cors)));
    }
    route.typed_per_filter_config = per_filter;

    if let Some(r) = &rule.redirect {
        route.action = Some(route::Action::Redirect(redirect(r)));
        return route;
    }
    if let Some(d) = &rule.direct_response {
        let body = d.body.as_ref().and_then(|b| {
            b.string.clone().map(|s| DataSource {
                specifier: Some(data_source::Specifier::InlineString(s)),
                ..Default::default()
            })
        });
        route.action = Some(route::Action::DirectResponse(DirectResponseAction {
            status: d.status,
            body,
            ..Default::default()
        }));
        return route;
    }

    let ns = vs.meta.namespace.as_str();
    let mut action = RouteAction {
        timeout: Some(duration(rule.timeout.unwrap_or_default())),
        ..Default::default()
    };
    let dests: Vec<_> = rule
        .route
        .iter()
        .filter(|d| rule.route.len() == 1 || d.weight.unwrap_or(0) > 0)
        .collect();
    match dests.as_slice() {
        [] => {
            action.cluster_specifier = Some(route_action::ClusterSpecifier::Cluster(
                super::BLACKHOLE_CLUSTER.to_string(),
            ));
        }
        [one] => {
            action.cluster_specifier = Some(route_action::ClusterSpecifier::Cluster(cluster_for(
                scope,
                &one.destination,
                ns,
                port,
            )));
            // A lone destination's header operations apply to the route.
            if let Some(h) = &one.headers {
                if let Some(req) = &h.request {
                    let (add, remove) = header_ops(req);
                    route.request_headers_to_add.extend(add);
                    route.request_headers_to_remove.extend(remove);
                }
                if let Some(resp) = &h.response {
                    let (add, remove) = header_ops(resp);
                    route.response_headers_to_add.extend(add);
                    route.response_headers_to_remove.extend(remove);
                }
            }
        }
        many => {
            let clusters = many
                .iter()
                .map(|d| {
                    let mut cw = weighted_cluster::ClusterWeight {
                        name: cluster_for(scope, &d.destination, ns, port),
                        weight: Some(u32v(d.weight.unwrap_or(0))),
                        ..Default::default()
                    };
                    if let Some(h) = &d.headers {
                        if let Some(req) = &h.request {
                            let (add, remove) = header_ops(req);
                            cw.request_headers_to_add = add;
                            cw.request_headers_to_remove = remove;
                        }
                        if let Some(resp) = &h.response {
                            let (add, remove) = header_ops(resp);
                            cw.response_headers_to_add = add;
                            cw.response_headers_to_remove = remove;
                        }
                    }
                    cw
                })
                .collect();
            action.cluster_specifier = Some(route_action::ClusterSpecifier::WeightedClusters(
                WeightedCluster {
                    clusters,
                    ..Default::default()
                },
            ));
        }
    }
    if let Some(first) = dests.first()
        && let Some(svc) = scope.service(&first.destination.host, ns)
    {
        let p = dest_port(&first.destination, svc, port);
        action.hash_policy = hash_policy(scope, svc, p, first.destination.subset.as_deref());
    }
    action.retry_policy = retry_policy(rule.retries.as_ref(), !action.hash_policy.is_empty());
    if let Some(rw) = &rule.rewrite {
        if let Some(uri) = &rw.uri {
            action.prefix_rewrite = uri.clone();
        }
        if let Some(authority) = &rw.authority {
            action.host_rewrite_specifier = Some(
                route_action::HostRewriteSpecifier::HostRewriteLiteral(authority.clone()),
            );
        }
        if let Some(rr) = &rw.uri_regex_rewrite
            && let (Some(pattern), Some(sub)) = (&rr.pattern, &rr.rewrite)
        {
            action.regex_rewrite = Some(
                envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute {
                    pattern: Some(super::envoy::regex(pattern)),
                    substitution: sub.clone(),
                },
            );
        }
    }
    action.request_mirror_policies = mirrors(scope, rule, ns, port);
    route.action = Some(route::Action::Route(action));
    route
}

/// The port of a destination: as written, else the listener's port when the service has it,
/// else the service's only port, else the listener's port.
fn dest_port(d: &Destination, svc: &crate::registry::Service, listener_port: u32) -> u32 {
    if let Some(p) = d.port_number() {
        return p;
    }
    if svc.port(listener_port).is_some() {
        return listener_port;
    }
    match svc.ports.as_slice() {
        [only] => only.number,
        _ => listener_port,
    }
}

fn cluster_for(scope: &Scope<'_>, d: &Destination, ns: &str, listener_port: u32) -> String {
    match scope.service(&d.host, ns) {
        Some(svc) => outbound_cluster_name(
            dest_port(d, svc, listener_port),
            d.subset.as_deref(),
            &svc.hostname,
        ),
        // Unknown hosts keep Istio's name; the proxy answers 503 (no cluster).
        None => outbound_cluster_name(
            d.port_number().unwrap_or(listener_port),
            d.subset.as_deref(),
            &scope.registry.qualify(&d.host, ns),
        ),
    }
}

fn route_match(m: Option<&HttpMatchRequest>) -> RouteMatch {
    let Some(m) = m else { return prefix_match("/") };
    let path = match &m.uri {
        None => route_match::PathSpecifier::Prefix("/".to_string()),
        Some(StringMatch::Exact(p)) => route_match::PathSpecifier::Path(p.clone()),
        Some(StringMatch::Prefix(p)) => route_match::PathSpecifier::Prefix(p.clone()),
        Some(StringMatch::Regex(r)) => {
            route_match::PathSpecifier::SafeRegex(super::envoy::regex(r))
        }
    };
    let mut out = RouteMatch {
        path_specifier: Some(path),
        ..Default::default()
    };
    if m.ignore_uri_case {
        out.case_sensitive = Some(boolv(false));
    }
    let header = |name: &str, sm: &StringMatch, invert: bool| HeaderMatcher {
        name: name.to_ascii_lowercase(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            string_matcher(sm, false),
        )),
        invert_match: invert,
        ..Default::default()
    };
    for (name, sm) in &m.headers {
        out.headers.push(header(name, sm, false));
    }
    for (name, sm) in &m.without_headers {
        out.headers.push(header(name, sm, true));
    }
    for (pseudo, sm) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(sm) = sm {
            out.headers.push(header(pseudo, sm, false));
        }
    }
    for (name, sm) in &m.query_params {
        out.query_parameters.push(QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(
                query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(string_matcher(
                    sm, false,
                )),
            ),
        });
    }
    out
}

/// Istio's retry policy: its default when `retries` is absent, none when attempts is 0.
pub(crate) fn retry_policy(r: Option<&HttpRetry>, consistent_hash: bool) -> Option<RetryPolicy> {
    let previous_hosts = || retry_policy::RetryHostPredicate {
        name: PREVIOUS_HOSTS.to_string(),
        config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
            any(&PreviousHostsPredicate {}),
        )),
    };
    let mut out = RetryPolicy {
        retry_on: DEFAULT_RETRY_ON.to_string(),
        retriable_status_codes: DEFAULT_RETRIABLE_STATUS_CODES.to_vec(),
        num_retries: Some(u32v(DEFAULT_RETRY_ATTEMPTS)),
        host_selection_retry_max_attempts: 5,
        // With consistent hashing a retry should stay on the hashed host.
        retry_host_predicate: if consistent_hash {
            vec![]
        } else {
            vec![previous_hosts()]
        },
        ..Default::default()
    };
    let Some(r) = r else { return Some(out) };
    let attempts = r.attempts.unwrap_or(0);
    if attempts <= 0 {
        return None;
    }
    out.num_retries = Some(u32v(attempts.unsigned_abs()));
    if let Some(on) = r.retry_on.as_deref().filter(|s| !s.trim().is_empty()) {
        // A retryOn of its own replaces the default codes too (Istio's ConvertPolicy).
        out.retriable_status_codes.clear();
        let mut conditions = Vec::new();
        for part in on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.parse::<u32>() {
                Ok(code) if (100..600).contains(&code) => out.retriable_status_codes.push(code),
                _ => conditions.push(part),
            }
        }
        let mut retry_on = conditions.join(",");
        if !out.retriable_status_codes.is_empty() && !retry_on.contains("retriable-status-codes") {
            if !retry_on.is_empty() {
                retry_on.push(',');
            }
            retry_on.push_str("retriable-status-codes");
        }
        out.retry_on = retry_on;
    }
    out.per_try_timeout = r.per_try_timeout.map(duration);
    if let Some(ignore_previous) = r.retry_ignore_previous_hosts {
        out.retry_host_predicate = if ignore_previous {
            vec![previous_hosts()]
        } else {
            vec![]
        };
    }
    if let Some(b) = r.backoff {
        out.retry_back_off = Some(retry_policy::RetryBackOff {
            base_interval: Some(duration(b)),
            ..Default::default()
        });
    }
    Some(out)
}

/// Route hash policies for a destination whose DestinationRule asks for consistent hashing.
pub(crate) fn hash_policy(
    scope: &Scope<'_>,
    svc: &crate::registry::Service,
    port: u32,
    subset: Option<&str>,
) -> Vec<route_action::HashPolicy> {
    use route_action::hash_policy::{
        ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter,
    };
    let dr = scope.destination_rule(svc);
    let Some(ch) = policy_for(dr, port, subset)
        .load_balancer
        .and_then(|lb| lb.consistent_hash.as_ref())
    else {
        return vec![];
    };
    let spec = if let Some(h) = &ch.http_header_name {
        PolicySpecifier::Header(Header {
            header_name: h.to_ascii_lowercase(),
            ..Default::default()
        })
    } else if let Some(c) = &ch.http_cookie {
        PolicySpecifier::Cookie(Cookie {
            name: c.name.clone(),
            path: c.path.clone().unwrap_or_default(),
            ttl: c.ttl.map(duration),
            ..Default::default()
        })
    } else if ch.use_source_ip == Some(true) {
        PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
    } else if let Some(q) = &ch.http_query_parameter_name {
        PolicySpecifier::QueryParameter(QueryParameter { name: q.clone() })
    } else {
        return vec![];
    };
    vec![route_action::HashPolicy {
        policy_specifier: Some(spec),
        terminal: false,
    }]
}

/// gRPC status names to codes (the abort `grpcStatus` field).
fn grpc_code(name: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    if let Ok(n) = name.parse::<u32>() {
        return Some(n);
    }
    NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .map(|i| i as u32)
}

/// Istio's fault: a missing delay percentage means 0% (as the deprecated integer default),
/// a missing abort percentage leaves Envoy's default (no request aborted).
fn http_fault(f: &HttpFaultInjection) -> Option<HttpFault> {
    let mut out = HttpFault::default();
    if let Some(d) = &f.delay
        && let Some(fixed) = d.fixed_delay.or(d.exponential_delay)
    {
        let percentage = match (&d.percentage, d.percent) {
            (Some(p), _) => percent_million(p.value),
            (None, Some(p)) => percent_hundred(p.max(0).unsigned_abs()),
            (None, None) => percent_hundred(0),
        };
        out.delay = Some(FaultDelay {
            percentage: Some(percentage),
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(duration(
                fixed,
            ))),
        });
    }
    if let Some(a) = &f.abort {
        let error = if let Some(s) = a.http_status {
            Some(fault_abort::ErrorType::HttpStatus(s.max(0).unsigned_abs()))
        } else {
            a.grpc_status
                .as_deref()
                .and_then(grpc_code)
                .map(fault_abort::ErrorType::GrpcStatus)
        };
        if let Some(error) = error {
            out.abort = Some(FaultAbort {
                percentage: a.percentage.as_ref().map(|p| percent_million(p.value)),
                error_type: Some(error),
                ..Default::default()
            });
        }
    }
    (out.delay.is_some() || out.abort.is_some()).then_some(out)
}

fn cors_policy(c: &CorsPolicy) -> EnvoyCors {
    let mut origins: Vec<_> = c
        .allow_origins
        .iter()
        .map(|m| string_matcher(m, false))
        .collect();
    origins.extend(
        c.allow_origin
            .iter()
            .map(|o| string_matcher(&StringMatch::Exact(o.clone()), false)),
    );
    EnvoyCors {
        allow_origin_string_match: origins,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(boolv),
        ..Default::default()
    }
}

fn redirect(r: &HttpRedirect) -> RedirectAction {
    use redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier};
    let code = match r.redirect_code.unwrap_or(301) {
        302 => RedirectResponseCode::Found,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        _ => RedirectResponseCode::MovedPermanently,
    };
    let mut out = RedirectAction {
        host_redirect: r.authority.clone().unwrap_or_default(),
        response_code: code as i32,
        ..Default::default()
    };
    if let Some(uri) = &r.uri {
        out.path_rewrite_specifier = Some(PathRewriteSpecifier::PathRedirect(uri.clone()));
    } else if let Some(prefix) = &r.prefix_rewrite {
        out.path_rewrite_specifier = Some(PathRewriteSpecifier::PrefixRewrite(prefix.clone()));
    }
    if let Some(scheme) = &r.scheme {
        out.scheme_rewrite_specifier = Some(SchemeRewriteSpecifier::SchemeRedirect(scheme.clone()));
    }
    if let Some(p) = r.port {
        out.port_redirect = p;
    } else if r.derive_port == Some(RedirectPortSelection::FromRequestPort) {
        tracing::debug!("redirect derivePort FROM_REQUEST_PORT keeps the request port");
    }
    out
}

/// `mirror` (with `mirrorPercentage`, default 100%) and `mirrors` (each with its percentage).
fn mirrors(
    scope: &Scope<'_>,
    rule: &HttpRoute,
    ns: &str,
    port: u32,
) -> Vec<route_action::RequestMirrorPolicy> {
    let mut out = Vec::new();
    if let Some(m) = &rule.mirror {
        out.push(route_action::RequestMirrorPolicy {
            cluster: cluster_for(scope, m, ns, port),
            runtime_fraction: Some(runtime_fraction(
                rule.effective_mirror_percentage().unwrap_or(100.0),
            )),
            ..Default::default()
        });
    }
    for m in &rule.mirrors {
        out.push(route_action::RequestMirrorPolicy {
            cluster: cluster_for(scope, &m.destination, ns, port),
            runtime_fraction: Some(runtime_fraction(
                m.percentage.as_ref().map(|p| p.value).unwrap_or(100.0),
            )),
            ..Default::default()
        });
    }
    out
}
