//! IST0106: the rules Istio's validation applies to a resource on its own.

use std::time::Duration;

use super::{Index, Message, codes};
use crate::common::StringMatch;
use crate::networking::{
    DestinationRuleSpec, HttpRoute, OutlierDetection, TrafficPolicy, VirtualServiceSpec,
};
use crate::resource::{Config, Object, Resource};

/// Documents that failed to load are schema errors too: Istio would reject them.
pub(super) fn load_errors(config: &Config, out: &mut Vec<Message>) {
    for e in &config.errors {
        let (reference, text) = match e.as_document() {
            Some(d) => (
                Some(format!("{}:{}", d.file, d.line)),
                format!(
                    "document {}, column {}: {}{}",
                    d.document,
                    d.column,
                    if d.field.is_empty() {
                        String::new()
                    } else {
                        format!("{}: ", d.field)
                    },
                    d.message
                ),
            ),
            None => (Some(e.file().to_string()), e.to_string()),
        };
        out.push(Message {
            message_type: codes::SchemaValidationError,
            text: format!("Schema validation error: {text}"),
            origin: None,
            reference,
        });
    }
}

struct Checker<'r, 'o> {
    resource: &'r Resource,
    out: &'o mut Vec<Message>,
}

impl Checker<'_, '_> {
    fn fail(&mut self, path: &str, problem: impl std::fmt::Display) {
        self.out.push(Message::about(
            codes::SchemaValidationError,
            self.resource,
            path,
            format!("Schema validation error: {path}: {problem}"),
        ));
    }

    fn regex(&mut self, path: &str, m: &StringMatch) {
        if let StringMatch::Regex(re) = m {
            self.regex_str(path, re);
        }
    }

    fn regex_str(&mut self, path: &str, re: &str) {
        if let Err(e) = regex::Regex::new(re) {
            let first = e.to_string();
            let reason = first.lines().last().unwrap_or_default().trim().to_string();
            self.fail(path, format!("invalid regex {re:?}: {reason}"));
        }
    }

    /// Istio requires these durations to be at least 1ms.
    fn positive(&mut self, path: &str, d: Option<Duration>) {
        if let Some(d) = d
            && d < Duration::from_millis(1)
        {
            self.fail(path, "duration must be at least 1ms");
        }
    }

    fn percent(&mut self, path: &str, value: Option<f64>) {
        if let Some(v) = value
            && !(0.0..=100.0).contains(&v)
        {
            self.fail(path, format!("percentage {v} is outside 0-100"));
        }
    }

    fn port(&mut self, path: &str, port: Option<u32>) {
        if let Some(p) = port
            && !(1..=65535).contains(&p)
        {
            self.fail(path, format!("port number {p} is outside 1-65535"));
        }
    }
}

pub(super) fn validate(index: &Index<'_>, out: &mut Vec<Message>) {
    for r in &index.resources {
        let mut c = Checker { resource: r, out };
        match &r.object {
            Object::VirtualService(vs) => virtual_service(&mut c, &vs.spec, index),
            Object::DestinationRule(dr) => destination_rule(&mut c, &dr.spec),
            Object::Gateway(gw) => {
                for (i, s) in gw.spec.servers.iter().enumerate() {
                    let p = format!("spec.servers[{i}]");
                    c.port(&format!("{p}.port.number"), Some(s.port.number));
                    if s.hosts.is_empty() {
                        c.fail(&format!("{p}.hosts"), "a server needs at least one host");
                    }
                }
            }
            Object::ServiceEntry(se) => {
                if se.spec.hosts.is_empty() {
                    c.fail("spec.hosts", "a ServiceEntry needs at least one host");
                }
                let mut seen = std::collections::HashSet::new();
                for (i, p) in se.spec.ports.iter().enumerate() {
                    c.port(&format!("spec.ports[{i}].number"), Some(p.number));
                    if !seen.insert(p.number) {
                        c.fail(
                            &format!("spec.ports[{i}].number"),
                            format!("port number {} is declared twice", p.number),
                        );
                    }
                }
            }
            Object::PeerAuthentication(pa) => {
                if !pa.spec.port_level_mtls.is_empty()
                    && pa
                        .spec
                        .selector
                        .as_ref()
                        .is_none_or(|s| s.match_labels.is_empty())
                {
                    c.fail(
                        "spec.portLevelMtls",
                        "portLevelMtls requires a workload selector",
                    );
                }
                for key in pa.spec.port_level_mtls.keys() {
                    if !key.parse::<u16>().is_ok_and(|p| p > 0) {
                        c.fail(
                            "spec.portLevelMtls",
                            format!("{key:?} is not a port number"),
                        );
                    }
                }
            }
            Object::AuthorizationPolicy(ap) => {
                use crate::security::Action;
                if ap.spec.provider.is_some() && ap.spec.action != Some(Action::Custom) {
                    c.fail(
                        "spec.provider",
                        "provider is only allowed with action CUSTOM",
                    );
                }
                if ap.spec.action == Some(Action::Custom) && ap.spec.provider.is_none() {
                    c.fail("spec.provider", "action CUSTOM needs a provider");
                }
                for (i, rule) in ap.spec.rules.iter().enumerate() {
                    for (j, cond) in rule.when.iter().enumerate() {
                        if cond.values.is_empty() && cond.not_values.is_empty() {
                            c.fail(
                                &format!("spec.rules[{i}].when[{j}]"),
                                "a condition needs values or notValues",
                            );
                        }
                    }
                }
            }
            Object::RequestAuthentication(ra) => {
                for (i, rule) in ra.spec.jwt_rules.iter().enumerate() {
                    if rule.issuer.as_deref().is_none_or(str::is_empty) {
                        c.fail(&format!("spec.jwtRules[{i}].issuer"), "issuer is required");
                    }
                }
            }
            _ => {}
        }
    }
}

fn virtual_service(c: &mut Checker<'_, '_>, spec: &VirtualServiceSpec, index: &Index<'_>) {
    if spec.hosts.is_empty() && !index.is_delegate(c.resource) {
        c.fail("spec.hosts", "a VirtualService needs at least one host");
    }
    if spec.http.is_empty() && spec.tcp.is_empty() && spec.tls.is_empty() {
        c.fail("spec", "http, tcp or tls must be provided");
    }
    for (i, h) in spec.http.iter().enumerate() {
        http_route(c, &format!("spec.http[{i}]"), h);
    }
    for (i, t) in spec.tcp.iter().enumerate() {
        let p = format!("spec.tcp[{i}]");
        if t.route.is_empty() {
            c.fail(
                &format!("{p}.route"),
                "a TCP route needs at least one destination",
            );
        }
        weights(c, &format!("{p}.route"), t.route.iter().map(|r| r.weight));
    }
    for (i, t) in spec.tls.iter().enumerate() {
        let p = format!("spec.tls[{i}]");
        if t.route.is_empty() {
            c.fail(
                &format!("{p}.route"),
                "a TLS route needs at least one destination",
            );
        }
        if t.matches.iter().any(|m| m.sni_hosts.is_empty()) {
            c.fail(
                &format!("{p}.match"),
                "a TLS match needs at least one sniHost",
            );
        }
        weights(c, &format!("{p}.route"), t.route.iter().map(|r| r.weight));
    }
}

fn weights(c: &mut Checker<'_, '_>, path: &str, weights: impl Iterator<Item = Option<u32>>) {
    let weights: Vec<Option<u32>> = weights.collect();
    if weights.len() < 2 || weights.iter().all(Option::is_none) {
        return;
    }
    let total: u64 = weights.iter().map(|w| u64::from(w.unwrap_or(0))).sum();
    if total != 100 {
        c.fail(path, format!("total destination weight {total} != 100"));
    }
}

fn http_route(c: &mut Checker<'_, '_>, p: &str, h: &HttpRoute) {
    let has_action = !h.route.is_empty()
        || h.redirect.is_some()
        || h.direct_response.is_some()
        || h.delegate.is_some();
    if !has_action {
        c.fail(
            &format!("{p}.route"),
            "HTTP route, redirect, directResponse or delegate is required",
        );
    }
    if h.redirect.is_some() && !h.route.is_empty() {
        c.fail(
            &format!("{p}.redirect"),
            "redirect and route cannot both be set",
        );
    }
    for (j, d) in h.route.iter().enumerate() {
        if d.destination.host.is_empty() {
            c.fail(
                &format!("{p}.route[{j}].destination"),
                "destination host is required",
            );
        }
        c.port(
            &format!("{p}.route[{j}].destination.port.number"),
            d.destination.port_number(),
        );
    }
    weights(c, &format!("{p}.route"), h.route.iter().map(|r| r.weight));
    for (j, m) in h.matches.iter().enumerate() {
        let mp = format!("{p}.match[{j}]");
        for (field, sm) in [
            ("uri", &m.uri),
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(sm) = sm {
                c.regex(&format!("{mp}.{field}"), sm);
            }
        }
        for (field, map) in [
            ("headers", &m.headers),
            ("queryParams", &m.query_params),
            ("withoutHeaders", &m.without_headers),
        ] {
            for (k, sm) in map {
                c.regex(&format!("{mp}.{field}.{k}"), sm);
            }
        }
        c.port(&format!("{mp}.port"), m.port);
    }
    if let Some(rw) = &h.rewrite
        && let Some(re) = rw
            .uri_regex_rewrite
            .as_ref()
            .and_then(|r| r.pattern.as_deref())
    {
        c.regex_str(&format!("{p}.rewrite.uriRegexRewrite.match"), re);
    }
    if let Some(cors) = &h.cors_policy {
        for (j, o) in cors.allow_origins.iter().enumerate() {
            c.regex(&format!("{p}.corsPolicy.allowOrigins[{j}]"), o);
        }
    }
    if let Some(r) = &h.retries {
        if r.attempts.is_some_and(|a| a < 0) {
            c.fail(
                &format!("{p}.retries.attempts"),
                "attempts cannot be negative",
            );
        }
        c.positive(&format!("{p}.retries.perTryTimeout"), r.per_try_timeout);
        c.positive(&format!("{p}.retries.backoff"), r.backoff);
    }
    if let Some(f) = &h.fault {
        if f.delay.is_none() && f.abort.is_none() {
            c.fail(&format!("{p}.fault"), "fault needs a delay or an abort");
        }
        if let Some(d) = &f.delay {
            let dp = format!("{p}.fault.delay");
            if d.fixed_delay.is_none() && d.exponential_delay.is_none() {
                c.fail(&dp, "delay needs fixedDelay or exponentialDelay");
            }
            c.positive(&format!("{dp}.fixedDelay"), d.fixed_delay);
            c.positive(&format!("{dp}.exponentialDelay"), d.exponential_delay);
            c.percent(
                &format!("{dp}.percentage.value"),
                d.percentage.as_ref().map(|x| x.value),
            );
            c.percent(&format!("{dp}.percent"), d.percent.map(f64::from));
        }
        if let Some(a) = &f.abort {
            let ap = format!("{p}.fault.abort");
            if let Some(s) = a.http_status
                && !(200..=599).contains(&s)
            {
                c.fail(
                    &format!("{ap}.httpStatus"),
                    format!("HTTP status {s} is outside 200-599"),
                );
            }
            if a.http_status.is_none() && a.grpc_status.is_none() && a.http2_error.is_none() {
                c.fail(&ap, "abort needs httpStatus, grpcStatus or http2Error");
            }
            c.percent(
                &format!("{ap}.percentage.value"),
                a.percentage.as_ref().map(|x| x.value),
            );
        }
    }
    c.percent(
        &format!("{p}.mirrorPercentage.value"),
        h.mirror_percentage.as_ref().map(|x| x.value),
    );
    c.percent(
        &format!("{p}.mirrorPercent"),
        h.mirror_percent.map(f64::from),
    );
    c.percent(
        &format!("{p}.mirror_percent"),
        h.mirror_percent_legacy.map(f64::from),
    );
    for (j, m) in h.mirrors.iter().enumerate() {
        c.percent(
            &format!("{p}.mirrors[{j}].percentage.value"),
            m.percentage.as_ref().map(|x| x.value),
        );
    }
    if h.mirror.is_some() && !h.mirrors.is_empty() {
        c.fail(
            &format!("{p}.mirrors"),
            "mirror and mirrors cannot both be set",
        );
    }
}

fn destination_rule(c: &mut Checker<'_, '_>, spec: &DestinationRuleSpec) {
    if spec.host.is_empty() {
        c.fail("spec.host", "host is required");
    }
    if let Some(tp) = &spec.traffic_policy {
        traffic_policy(c, "spec.trafficPolicy", tp);
    }
    let mut seen = std::collections::HashSet::new();
    for (i, s) in spec.subsets.iter().enumerate() {
        let p = format!("spec.subsets[{i}]");
        if s.name.is_empty() {
            c.fail(&format!("{p}.name"), "subset name is required");
        } else if !seen.insert(s.name.as_str()) {
            c.fail(
                &format!("{p}.name"),
                format!("duplicate subset name {:?}", s.name),
            );
        }
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(c, &format!("{p}.trafficPolicy"), tp);
        }
    }
}

fn traffic_policy(c: &mut Checker<'_, '_>, p: &str, tp: &TrafficPolicy) {
    if let Some(cp) = &tp.connection_pool {
        connection_pool(c, &format!("{p}.connectionPool"), cp);
    }
    if let Some(od) = &tp.outlier_detection {
        outlier(c, &format!("{p}.outlierDetection"), od);
    }
    if let Some(rb) = &tp.retry_budget {
        c.percent(&format!("{p}.retryBudget.percent"), rb.percent);
    }
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let pp = format!("{p}.portLevelSettings[{i}]");
        match pl.port.as_ref().and_then(|x| x.number) {
            None => c.fail(
                &format!("{pp}.port"),
                "port-level settings need a port number",
            ),
            n => c.port(&format!("{pp}.port.number"), n),
        }
        if let Some(cp) = &pl.connection_pool {
            connection_pool(c, &format!("{pp}.connectionPool"), cp);
        }
        if let Some(od) = &pl.outlier_detection {
            outlier(c, &format!("{pp}.outlierDetection"), od);
        }
    }
}

fn connection_pool(c: &mut Checker<'_, '_>, p: &str, cp: &crate::common::ConnectionPoolSettings) {
    if let Some(tcp) = &cp.tcp {
        c.positive(&format!("{p}.tcp.connectTimeout"), tcp.connect_timeout);
        if let Some(k) = &tcp.tcp_keepalive {
            c.positive(&format!("{p}.tcp.tcpKeepalive.time"), k.time);
            c.positive(&format!("{p}.tcp.tcpKeepalive.interval"), k.interval);
        }
        if tcp.max_connections.is_some_and(|n| n < 0) {
            c.fail(&format!("{p}.tcp.maxConnections"), "cannot be negative");
        }
    }
    if let Some(http) = &cp.http {
        for (name, v) in [
            ("http1MaxPendingRequests", http.http1_max_pending_requests),
            ("http2MaxRequests", http.http2_max_requests),
            ("maxRequestsPerConnection", http.max_requests_per_connection),
            ("maxRetries", http.max_retries),
        ] {
            if v.is_some_and(|n| n < 0) {
                c.fail(&format!("{p}.http.{name}"), "cannot be negative");
            }
        }
    }
}

fn outlier(c: &mut Checker<'_, '_>, p: &str, od: &OutlierDetection) {
    c.positive(&format!("{p}.interval"), od.interval);
    c.positive(&format!("{p}.baseEjectionTime"), od.base_ejection_time);
    c.percent(
        &format!("{p}.maxEjectionPercent"),
        od.max_ejection_percent.map(f64::from),
    );
    c.percent(
        &format!("{p}.minHealthPercent"),
        od.min_health_percent.map(f64::from),
    );
}
