//! Why a request got the route it got: each condition of a route's match
//! decided on its own, and which domain of a virtual host accepted the Host.
//!
//! Routing itself stays in [`super::router`]; these helpers only take a
//! match apart and ask the router's own functions about each piece, so an
//! explanation cannot disagree with what the proxy does (`meshctl explain`
//! uses them on a proxy's live `/config_dump`).

use crate::model::{
    DomainPattern, Fraction, HeaderMatchKind, HeaderMatcher, PathMatch, QueryParameterMatcher,
    RetryOn, RouteMatch, StringMatch, StringMatcher, VirtualHost,
};

use super::matcher::{RequestHead, header_matches, query_matches};
use super::router::{domain_accepts, route_matches};

/// How one condition of a route's match fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Held,
    Failed,
    /// `runtime_fraction`: decided by a draw per request.
    Sampled(Fraction),
}

/// One condition of a `RouteMatch`, described as Envoy's fields say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionCheck {
    /// E.g. `prefix "/"`, `header end-user exact "jason"`.
    pub condition: String,
    pub outcome: Outcome,
}

/// Every condition of `m` against `req`, in the order the router tries
/// them (path, gRPC, headers, query parameters, runtime fraction). The
/// route matches when none is [`Outcome::Failed`] (and a sampled one draws
/// in its favour).
pub fn check_route(m: &RouteMatch, req: &RequestHead<'_>) -> Vec<ConditionCheck> {
    let held = |b: bool| if b { Outcome::Held } else { Outcome::Failed };
    // Each piece is decided by `route_matches` on a match holding only it.
    let only = |path: PathMatch, grpc: bool| RouteMatch {
        path,
        case_sensitive: m.case_sensitive,
        headers: vec![],
        query_parameters: vec![],
        runtime_fraction: None,
        grpc,
    };
    let mut out = vec![ConditionCheck {
        condition: describe_path(&m.path, m.case_sensitive),
        outcome: held(route_matches(&only(m.path.clone(), false), req)),
    }];
    if m.grpc {
        out.push(ConditionCheck {
            condition: "gRPC (content-type application/grpc)".into(),
            outcome: held(route_matches(
                &only(PathMatch::Prefix(String::new()), true),
                req,
            )),
        });
    }
    for h in &m.headers {
        out.push(ConditionCheck {
            condition: describe_header(h),
            outcome: held(header_matches(h, req)),
        });
    }
    let query = req.query();
    for q in &m.query_parameters {
        out.push(ConditionCheck {
            condition: describe_query(q),
            outcome: held(query_matches(q, query)),
        });
    }
    if let Some(f) = m.runtime_fraction {
        out.push(ConditionCheck {
            condition: format!("runtime fraction {}", describe_fraction(f)),
            outcome: Outcome::Sampled(f),
        });
    }
    out
}

/// The domain of `vh` that accepts `authority`, by the router's own domain
/// test; an exact domain is named before a wildcard, as the router prefers it.
pub fn matched_domain<'a>(vh: &'a VirtualHost, authority: &str) -> Option<&'a DomainPattern> {
    let accepts = |d: &&DomainPattern| domain_accepts(d, authority);
    vh.domains
        .iter()
        .filter(|d| matches!(d, DomainPattern::Exact(_)))
        .find(accepts)
        .or_else(|| vh.domains.iter().find(accepts))
}

/// A domain as written in xDS (`*.example.com`, `foo.*`, `*`).
pub fn describe_domain(d: &DomainPattern) -> String {
    match d {
        DomainPattern::Exact(s) => s.clone(),
        DomainPattern::Suffix(s) => format!("*{s}"),
        DomainPattern::Prefix(s) => format!("{s}*"),
        DomainPattern::Any => "*".into(),
    }
}

pub fn describe_path(p: &PathMatch, case_sensitive: bool) -> String {
    let text = match p {
        PathMatch::Prefix(s) => format!("prefix {s:?}"),
        PathMatch::Path(s) => format!("path {s:?}"),
        PathMatch::Regex(re) => format!("path regex {:?}", regex_text(re)),
        PathMatch::PathSeparatedPrefix(s) => format!("path separated prefix {s:?}"),
    };
    if case_sensitive || matches!(p, PathMatch::Regex(_)) {
        text
    } else {
        format!("{text} (ignoring case)")
    }
}

/// A regex as it was written in xDS: the compiler may have anchored it as `^(?:...)$`.
fn regex_text(re: &regex::Regex) -> &str {
    let s = re.as_str();
    s.strip_prefix("^(?:")
        .and_then(|r| r.strip_suffix(")$"))
        .unwrap_or(s)
}

pub fn describe_string_match(m: &StringMatcher) -> String {
    let text = match &m.pattern {
        StringMatch::Exact(s) => format!("exact {s:?}"),
        StringMatch::Prefix(s) => format!("prefix {s:?}"),
        StringMatch::Suffix(s) => format!("suffix {s:?}"),
        StringMatch::Contains(s) => format!("contains {s:?}"),
        StringMatch::Regex(re) => format!("regex {:?}", regex_text(re)),
    };
    if m.ignore_case {
        format!("{text} (ignoring case)")
    } else {
        text
    }
}

pub fn describe_header(h: &HeaderMatcher) -> String {
    let what = match &h.kind {
        HeaderMatchKind::String(s) => describe_string_match(s),
        HeaderMatchKind::Present(true) => "present".into(),
        HeaderMatchKind::Present(false) => "absent".into(),
        HeaderMatchKind::Range { start, end } => format!("in [{start}, {end})"),
    };
    let not = if h.invert { "not " } else { "" };
    format!("header {} {not}{what}", h.name)
}

pub fn describe_query(q: &QueryParameterMatcher) -> String {
    match &q.matcher {
        None => format!("query parameter {} present", q.name),
        Some(s) => format!("query parameter {} {}", q.name, describe_string_match(s)),
    }
}

/// `25%` or `1/3 (of 10000)` when it does not come out as a whole percent.
pub fn describe_fraction(f: Fraction) -> String {
    if f.denominator > 0 && (u64::from(f.numerator) * 100).is_multiple_of(u64::from(f.denominator))
    {
        format!(
            "{}%",
            u64::from(f.numerator) * 100 / u64::from(f.denominator)
        )
    } else {
        format!("{}/{}", f.numerator, f.denominator)
    }
}

/// The conditions of `retry_on` by Envoy's names.
pub fn retry_on_names(on: &RetryOn) -> Vec<&'static str> {
    [
        (on.server_error_5xx, "5xx"),
        (on.gateway_error, "gateway-error"),
        (on.reset, "reset"),
        (on.connect_failure, "connect-failure"),
        (on.refused_stream, "refused-stream"),
        (on.retriable_4xx, "retriable-4xx"),
        (on.retriable_status_codes, "retriable-status-codes"),
        (on.retriable_headers, "retriable-headers"),
        (on.grpc_cancelled, "cancelled"),
        (on.grpc_deadline_exceeded, "deadline-exceeded"),
        (on.grpc_internal, "internal"),
        (on.grpc_resource_exhausted, "resource-exhausted"),
        (on.grpc_unavailable, "unavailable"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile_route_configuration;
    use crate::http::router::select_route;
    use crate::model::RouteTable;
    use crate::xds_json::from_str;
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

    fn table() -> RouteTable {
        compile_route_configuration(
            &from_str::<RouteConfiguration>(
                r#"
name: http_proxy
virtual_hosts:
- name: helloworld
  domains: ["helloworld:5000", helloworld, "*.svc.cluster.local"]
  routes:
  - name: jason
    match:
      prefix: /
      headers: [{name: end-user, string_match: {exact: jason}}]
    route: {cluster: risky}
  - name: api
    match:
      safe_regex: {regex: "/api/v[0-9]+"}
      grpc: {}
      query_parameters: [{name: debug, present_match: true}]
      headers: [{name: x-canary, present_match: true, invert_match: true}]
    route: {cluster: api}
  - name: sampled
    match: {path: /sample, runtime_fraction: {default_value: {numerator: 25}}}
    route: {cluster: sampled}
  - name: default
    match: {prefix: /, case_sensitive: false}
    route: {cluster: safe}
- name: other
  domains: ["*"]
  routes: [{match: {prefix: /}, route: {cluster: other}}]
"#,
            )
            .unwrap(),
        )
        .unwrap()
    }

    fn head<'a>(path: &'a str, headers: &'a http::HeaderMap) -> RequestHead<'a> {
        RequestHead {
            method: "GET",
            authority: "helloworld",
            path,
            scheme: "http",
            headers,
        }
    }

    #[test]
    fn each_condition_is_decided_and_agrees_with_the_router() {
        let t = table();
        let vh = &t.virtual_hosts()[0];
        let mut jason = http::HeaderMap::new();
        jason.insert("end-user", "jason".parse().unwrap());
        let mut grpc = http::HeaderMap::new();
        grpc.insert("content-type", "application/grpc".parse().unwrap());
        let none = http::HeaderMap::new();

        let checks = check_route(&vh.routes[0].matcher, &head("/istio", &jason));
        assert_eq!(
            checks,
            [
                ConditionCheck {
                    condition: "prefix \"/\"".into(),
                    outcome: Outcome::Held
                },
                ConditionCheck {
                    condition: "header end-user exact \"jason\"".into(),
                    outcome: Outcome::Held
                },
            ]
        );
        let checks = check_route(&vh.routes[0].matcher, &head("/istio", &none));
        assert_eq!(checks[1].outcome, Outcome::Failed);

        let api = check_route(&vh.routes[1].matcher, &head("/api/v1?debug", &grpc));
        let conditions: Vec<&str> = api.iter().map(|c| c.condition.as_str()).collect();
        assert_eq!(
            conditions,
            [
                "path regex \"/api/v[0-9]+\"",
                "gRPC (content-type application/grpc)",
                "header x-canary not present",
                "query parameter debug present",
            ]
        );
        assert!(api.iter().all(|c| c.outcome == Outcome::Held));
        let api = check_route(&vh.routes[1].matcher, &head("/api/vx", &none));
        let failed: Vec<&str> = api
            .iter()
            .filter(|c| c.outcome == Outcome::Failed)
            .map(|c| c.condition.as_str())
            .collect();
        assert_eq!(
            failed,
            [
                "path regex \"/api/v[0-9]+\"",
                "gRPC (content-type application/grpc)",
                "query parameter debug present"
            ]
        );

        let sampled = check_route(&vh.routes[2].matcher, &head("/sample", &none));
        assert_eq!(sampled[1].condition, "runtime fraction 25%");
        assert!(matches!(sampled[1].outcome, Outcome::Sampled(_)));
        assert_eq!(
            check_route(&vh.routes[3].matcher, &head("/", &none))[0].condition,
            "prefix \"/\" (ignoring case)"
        );

        // For deterministic routes, "no condition failed" is exactly the router's answer.
        for path in ["/", "/istio", "/api/v1?debug", "/api/v1", "/API/x"] {
            for headers in [&jason, &grpc, &none] {
                let req = head(path, headers);
                for r in [&vh.routes[0], &vh.routes[1], &vh.routes[3]] {
                    let ok = check_route(&r.matcher, &req)
                        .iter()
                        .all(|c| c.outcome == Outcome::Held);
                    assert_eq!(ok, route_matches(&r.matcher, &req), "{path} {}", r.name);
                }
            }
        }
        assert_eq!(
            select_route(vh, &head("/istio", &jason)).unwrap().name,
            "jason"
        );
    }

    #[test]
    fn the_domain_that_accepted_the_host() {
        let t = table();
        let vh = &t.virtual_hosts()[0];
        let d = |host| matched_domain(vh, host).map(describe_domain);
        assert_eq!(d("helloworld"), Some("helloworld".into()));
        assert_eq!(d("HelloWorld:5000"), Some("helloworld:5000".into()));
        assert_eq!(
            d("helloworld.default.svc.cluster.local"),
            Some("*.svc.cluster.local".into())
        );
        assert_eq!(d("helloworld:80"), None);
        assert_eq!(
            matched_domain(&t.virtual_hosts()[1], "x").map(describe_domain),
            Some("*".into())
        );
    }

    #[test]
    fn names_and_fractions() {
        let on = RetryOn {
            connect_failure: true,
            grpc_unavailable: true,
            ..RetryOn::default()
        };
        assert_eq!(retry_on_names(&on), ["connect-failure", "unavailable"]);
        let f = |numerator, denominator| {
            describe_fraction(Fraction {
                numerator,
                denominator,
            })
        };
        assert_eq!(f(25, 100), "25%");
        assert_eq!(f(1000, 10000), "10%");
        assert_eq!(f(1, 3), "1/3");
    }
}
