//! Route tables: domains, matches, actions, retries, hashing, mirrors, faults.

use super::*;

#[test]
fn domains_compile_to_patterns_and_duplicates_fail() {
    let t = routes(
        r#"
name: r
virtual_hosts:
- {name: a, domains: [Example.com, "*.example.com", "foo.*", "*", "example.com:8080"], routes: []}
"#,
    )
    .unwrap();
    assert_eq!(
        t.virtual_hosts()[0].domains,
        [
            DomainPattern::Exact("example.com".into()),
            DomainPattern::Suffix(".example.com".into()),
            DomainPattern::Prefix("foo.".into()),
            DomainPattern::Any,
            DomainPattern::Exact("example.com:8080".into()),
        ]
    );
    assert_err(
        routes(
            "name: r\nvirtual_hosts:\n- {name: a, domains: [x.com]}\n- {name: b, domains: [X.com]}\n",
        ),
        "virtual_hosts[1].domains",
        "more than one virtual host",
    );
    // A `*` in the middle is literal, as in Envoy.
    let t = routes("name: r\nvirtual_hosts:\n- {name: a, domains: [\"a.*.com\"]}\n").unwrap();
    assert_eq!(
        t.virtual_hosts()[0].domains,
        [DomainPattern::Exact("a.*.com".into())]
    );
    assert_err(
        routes("name: r\nvirtual_hosts:\n- {name: a}\n"),
        "virtual_hosts[0].domains",
        "required",
    );
}

#[test]
fn route_matches() {
    let r = one_route(
        r#"match:
      safe_regex: {regex: "/api/v[0-9]+"}
      case_sensitive: false
      grpc: {}
      runtime_fraction: {default_value: {numerator: 25}}
      headers:
      - {name: End-User, string_match: {exact: jason, ignore_case: true}}
      - {name: x-canary, present_match: true, invert_match: true}
      - {name: x-num, range_match: {start: 1, end: 10}}
      - {name: x-re, safe_regex_match: {regex: "a.c"}}
      - {name: x-any}
      query_parameters:
      - {name: debug, present_match: true}
      - {name: v, string_match: {prefix: "2"}}
    route: {cluster: c}"#,
    )
    .unwrap();
    let m = &r.matcher;
    let PathMatch::Regex(re) = &m.path else {
        panic!("regex expected")
    };
    assert!(re.is_match("/API/v12"), "case-insensitive full match");
    assert!(!re.is_match("/api/v12/x"), "regex matches the whole path");
    assert!(!m.case_sensitive && m.grpc);
    assert_eq!(
        m.runtime_fraction,
        Some(Fraction {
            numerator: 25,
            denominator: 100
        })
    );
    assert_eq!(m.headers[0].name, "end-user");
    assert!(matches!(&m.headers[0].kind, HeaderMatchKind::String(s) if s.ignore_case));
    assert!(m.headers[1].invert && matches!(m.headers[1].kind, HeaderMatchKind::Present(true)));
    assert!(matches!(
        m.headers[2].kind,
        HeaderMatchKind::Range { start: 1, end: 10 }
    ));
    let HeaderMatchKind::String(StringMatcher {
        pattern: StringMatch::Regex(re),
        ..
    }) = &m.headers[3].kind
    else {
        panic!()
    };
    assert!(re.is_match("abc") && !re.is_match("xabc"));
    assert!(matches!(m.headers[4].kind, HeaderMatchKind::Present(true)));
    assert!(m.query_parameters[0].matcher.is_none());
    assert!(
        matches!(&m.query_parameters[1].matcher, Some(StringMatcher { pattern: StringMatch::Prefix(p), .. }) if p == "2")
    );

    let r = one_route("match: {path: /exact}\n    route: {cluster: c}").unwrap();
    assert!(
        matches!(&r.matcher.path, PathMatch::Path(p) if p == "/exact") && r.matcher.case_sensitive
    );
    let r = one_route("match: {path_separated_prefix: /api}\n    route: {cluster: c}").unwrap();
    assert!(matches!(&r.matcher.path, PathMatch::PathSeparatedPrefix(p) if p == "/api"));

    assert_err(
        one_route("match: {prefix: /, cookies: [{name: a}]}\n    route: {cluster: c}"),
        "match.cookies",
        "not supported",
    );
    assert_err(
        one_route("match: {safe_regex: {regex: \"(\"}}\n    route: {cluster: c}"),
        "match.safe_regex",
        "invalid regex",
    );
    assert_err(
        one_route("match: {}\n    route: {cluster: c}"),
        "match.prefix",
        "required",
    );
}

#[test]
fn route_action_defaults_and_rewrites() {
    let r = one_route("match: {prefix: /}\n    route: {cluster: c}").unwrap();
    let f = forward_of(&r);
    assert!(matches!(&f.destination, Destination::Cluster(c) if c == "c"));
    assert_eq!(
        f.timeout,
        Some(DEFAULT_ROUTE_TIMEOUT),
        "Envoy's 15s default"
    );
    assert!(f.retry_policy.is_none() && f.mirrors.is_empty() && f.hash_policy.is_empty());

    let r = one_route(
        r#"match: {prefix: /old}
    route:
      cluster_header: X-Cluster
      prefix_rewrite: /new
      host_rewrite_literal: backend.local
      timeout: 0s
      idle_timeout: 3s
      upgrade_configs: [{upgrade_type: websocket}]"#,
    )
    .unwrap();
    let f = forward_of(&r);
    assert!(matches!(&f.destination, Destination::ClusterHeader(h) if h == "x-cluster"));
    assert_eq!(f.prefix_rewrite.as_deref(), Some("/new"));
    assert_eq!(f.host_rewrite.as_deref(), Some("backend.local"));
    assert_eq!(f.timeout, None, "0s disables the timeout");
    assert_eq!(f.idle_timeout, Some(std::time::Duration::from_secs(3)));
    assert_eq!(f.upgrades, ["websocket"]);

    let r = one_route(
        r#"match: {prefix: /}
    route:
      cluster: c
      regex_rewrite: {pattern: {regex: "^/v1/(.*)$"}, substitution: "/v2/\\1"}"#,
    )
    .unwrap();
    let (re, sub) = forward_of(&r).regex_rewrite.clone().unwrap();
    assert_eq!(re.replace("/v1/items", sub.as_str()), "/v2/items");

    assert_err(
        one_route("match: {prefix: /}\n    route: {cluster: c, auto_host_rewrite: true}"),
        "route.auto_host_rewrite",
        "not supported",
    );
    assert_err(
        one_route("match: {prefix: /}\n    route: {cluster: c, timeout: -1s}"),
        "route.timeout",
        "invalid duration",
    );
    assert_err(
        one_route(
            "match: {prefix: /}\n    route: {cluster: c, max_stream_duration: {max_stream_duration: 5s}}",
        ),
        "route.max_stream_duration.max_stream_duration",
        "not supported",
    );
    // Zero stream durations (what Istio writes) are accepted.
    one_route("match: {prefix: /}\n    route: {cluster: c, max_stream_duration: {max_stream_duration: 0s, grpc_timeout_header_max: 0s}}").unwrap();
}

#[test]
fn weighted_clusters_redirects_and_direct_responses() {
    let r = one_route(
        r#"match: {prefix: /}
    route:
      weighted_clusters:
        clusters:
        - name: v1
          weight: 90
          request_headers_to_add: [{header: {key: X-Version, value: v1}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]
        - {name: v2, weight: 10, host_rewrite_literal: v2.local}"#,
    )
    .unwrap();
    let Destination::Weighted(w) = &forward_of(&r).destination else {
        panic!()
    };
    assert_eq!(
        (w[0].name.as_str(), w[0].weight, w[1].weight),
        ("v1", 90, 10)
    );
    assert_eq!(
        w[0].headers.request_add,
        [HeaderToAdd {
            name: "x-version".into(),
            value: "v1".into(),
            append: false,
            only_if_absent: false
        }]
    );
    assert_eq!(w[1].host_rewrite.as_deref(), Some("v2.local"));
    assert_err(
        one_route(
            "match: {prefix: /}\n    route: {weighted_clusters: {clusters: [{name: a, weight: 0}]}}",
        ),
        "route.weighted_clusters.clusters",
        "greater than 0",
    );

    let r = one_route("match: {prefix: /}\n    redirect: {https_redirect: true, host_redirect: x.com, port_redirect: 8443, prefix_rewrite: /n, response_code: PERMANENT_REDIRECT, strip_query: true}").unwrap();
    let RouteAction::Redirect(d) = &r.action else {
        panic!()
    };
    assert_eq!(d.scheme.as_deref(), Some("https"));
    assert_eq!(d.host.as_deref(), Some("x.com"));
    assert_eq!(d.port, Some(8443));
    assert_eq!(d.prefix_rewrite.as_deref(), Some("/n"));
    assert_eq!(d.status, 308);
    assert!(d.strip_query);
    let r = one_route("match: {prefix: /}\n    redirect: {path_redirect: /x}").unwrap();
    let RouteAction::Redirect(d) = &r.action else {
        panic!()
    };
    assert_eq!((d.status, d.path.as_deref()), (301, Some("/x")));

    let r = one_route(
        "match: {prefix: /}\n    direct_response: {status: 503, body: {inline_string: down}}",
    )
    .unwrap();
    assert!(
        matches!(&r.action, RouteAction::DirectResponse { status: 503, body: Some(b) } if b == "down")
    );
    assert_err(
        one_route("match: {prefix: /}\n    direct_response: {status: 99}"),
        "direct_response.status",
        "200..599",
    );
}

#[test]
fn header_mutations_at_every_level() {
    let t = routes(
        r#"
name: r
request_headers_to_add: [{header: {key: X-Table, value: t}}]
response_headers_to_remove: [X-Internal]
virtual_hosts:
- name: v
  domains: ["*"]
  response_headers_to_add: [{header: {key: x-vh, value: v}, append_action: ADD_IF_ABSENT}]
  routes:
  - match: {prefix: /}
    route: {cluster: c}
    request_headers_to_add: [{header: {key: x-r, value: r}, append: false}]
    request_headers_to_remove: [X-Remove]
"#,
    )
    .unwrap();
    assert_eq!(
        t.headers.request_add[0],
        HeaderToAdd {
            name: "x-table".into(),
            value: "t".into(),
            append: true,
            only_if_absent: false
        }
    );
    assert_eq!(t.headers.response_remove, ["x-internal"]);
    let vh = &t.virtual_hosts()[0];
    assert_eq!(
        vh.headers.response_add[0],
        HeaderToAdd {
            name: "x-vh".into(),
            value: "v".into(),
            append: false,
            only_if_absent: true
        }
    );
    let r = &vh.routes[0];
    assert!(!r.headers.request_add[0].append);
    assert_eq!(r.headers.request_remove, ["x-remove"]);
    assert_err(
        one_route(
            "match: {prefix: /}\n    route: {cluster: c}\n    request_headers_to_add: [{header: {key: a, value: b}, append_action: OVERWRITE_IF_EXISTS}]",
        ),
        "routes[0].request_headers_to_add[0].append_action",
        "OVERWRITE_IF_EXISTS is not supported",
    );
}

#[test]
fn retry_policy_defaults_and_values() {
    let r = one_route("match: {prefix: /}\n    route: {cluster: c, retry_policy: {retry_on: 5xx}}")
        .unwrap();
    let p = forward_of(&r).retry_policy.clone().unwrap();
    assert!(p.retry_on.server_error_5xx && !p.retry_on.reset);
    assert_eq!(p.num_retries, DEFAULT_NUM_RETRIES);
    assert_eq!(p.base_interval, std::time::Duration::from_millis(25));
    assert_eq!(p.max_interval, std::time::Duration::from_millis(250));
    assert_eq!(p.per_try_timeout, None);
    assert_eq!(p.host_selection_retry_max_attempts, 1);
    assert!(!p.avoid_previous_hosts);

    let r = one_route(
        r#"match: {prefix: /}
    route:
      cluster: c
      retry_policy:
        retry_on: "gateway-error,reset,connect-failure,refused-stream,retriable-4xx,retriable-status-codes,cancelled,deadline-exceeded,unavailable,internal,resource-exhausted"
        num_retries: 3
        per_try_timeout: 0.5s
        per_try_idle_timeout: 1s
        retriable_status_codes: [503, 429]
        retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, typed_config: {"@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}]
        host_selection_retry_max_attempts: 5
        retry_back_off: {base_interval: 0.1s}"#,
    )
    .unwrap();
    let p = forward_of(&r).retry_policy.clone().unwrap();
    let o = p.retry_on;
    assert!(
        o.gateway_error
            && o.reset
            && o.connect_failure
            && o.refused_stream
            && o.retriable_4xx
            && o.retriable_status_codes
    );
    assert!(
        o.grpc_cancelled
            && o.grpc_deadline_exceeded
            && o.grpc_unavailable
            && o.grpc_internal
            && o.grpc_resource_exhausted
    );
    assert!(!o.server_error_5xx);
    assert_eq!(p.num_retries, 3);
    assert_eq!(
        p.per_try_timeout,
        Some(std::time::Duration::from_millis(500))
    );
    assert_eq!(
        p.per_try_idle_timeout,
        Some(std::time::Duration::from_secs(1))
    );
    assert_eq!(p.retriable_status_codes, [503, 429]);
    assert!(p.avoid_previous_hosts);
    assert_eq!(p.host_selection_retry_max_attempts, 5);
    assert_eq!(p.base_interval, std::time::Duration::from_millis(100));
    assert_eq!(
        p.max_interval,
        std::time::Duration::from_secs(1),
        "10 x base"
    );

    // Unknown conditions are ignored, as in Envoy.
    let r = one_route(
        "match: {prefix: /}\n    route: {cluster: c, retry_policy: {retry_on: \"5xx,sometimes\"}}",
    )
    .unwrap();
    let on = forward_of(&r).retry_policy.clone().unwrap().retry_on;
    assert_eq!(
        on,
        RetryOn {
            server_error_5xx: true,
            ..Default::default()
        }
    );
    assert_err(
        one_route(
            "match: {prefix: /}\n    route: {cluster: c, retry_policy: {retry_on: reset-before-request}}",
        ),
        "route.retry_policy.retry_on",
        "is not supported",
    );
    assert_err(
        one_route(
            "match: {prefix: /}\n    route: {cluster: c, retry_policy: {retry_on: 5xx, retry_host_predicate: [{name: envoy.retry_host_predicates.omit_canary_hosts}]}}",
        ),
        "route.retry_policy.retry_host_predicate[0]",
        "omit_canary_hosts is not supported",
    );
    assert_err(
        one_route(
            "match: {prefix: /}\n    route: {cluster: c, retry_policy: {retry_on: 5xx, retry_back_off: {base_interval: 1s, max_interval: 0.5s}}}",
        ),
        "route.retry_policy.retry_back_off.max_interval",
        "below base_interval",
    );
    // The virtual host's retry policy is kept apart from the route's.
    let t = routes("name: r\nvirtual_hosts:\n- {name: v, domains: [\"*\"], retry_policy: {retry_on: connect-failure, num_retries: 4}, routes: [{match: {prefix: /}, route: {cluster: c}}]}\n").unwrap();
    assert_eq!(
        t.virtual_hosts()[0]
            .retry_policy
            .as_ref()
            .unwrap()
            .num_retries,
        4
    );
    assert!(
        forward_of(&t.virtual_hosts()[0].routes[0])
            .retry_policy
            .is_none()
    );
}

#[test]
fn hash_policies_and_mirrors() {
    let r = one_route(
        r#"match: {prefix: /}
    route:
      cluster: c
      hash_policy:
      - {header: {header_name: X-User}}
      - {cookie: {name: sticky, ttl: 3600s, path: /app, attributes: [{name: SameSite, value: Strict}, {name: Secure}]}, terminal: true}
      - {connection_properties: {source_ip: true}}
      - {query_parameter: {name: user}}
      request_mirror_policies:
      - {cluster: shadow}
      - {cluster: shadow2, runtime_fraction: {default_value: {numerator: 25}}}"#,
    )
    .unwrap();
    let f = forward_of(&r);
    assert!(matches!(&f.hash_policy[0].kind, HashPolicyKind::Header { name } if name == "x-user"));
    assert!(
        matches!(&f.hash_policy[1].kind, HashPolicyKind::Cookie { name, ttl: Some(t), path: Some(p), attributes } if name == "sticky" && t.as_secs() == 3600 && p == "/app" && attributes == &[("SameSite".to_string(), "Strict".to_string()), ("Secure".to_string(), String::new())])
    );
    assert!(f.hash_policy[1].terminal);
    assert!(matches!(f.hash_policy[2].kind, HashPolicyKind::SourceIp));
    assert!(
        matches!(&f.hash_policy[3].kind, HashPolicyKind::QueryParameter { name } if name == "user")
    );
    assert_eq!(f.mirrors[0].cluster, "shadow");
    assert_eq!(f.mirrors[0].fraction, None);
    assert_eq!(
        f.mirrors[1].fraction,
        Some(Fraction {
            numerator: 25,
            denominator: 100
        })
    );

    assert_err(
        one_route(
            "match: {prefix: /}\n    route: {cluster: c, hash_policy: [{filter_state: {key: k}}]}",
        ),
        "route.hash_policy[0].filter_state",
        "not supported",
    );
    assert_err(
        one_route(
            "match: {prefix: /}\n    route: {cluster: c, request_mirror_policies: [{cluster: s, disable_shadow_host_suffix_append: true}]}",
        ),
        "route.request_mirror_policies[0].disable_shadow_host_suffix_append",
        "not supported",
    );
}

#[test]
fn per_route_fault_and_cors() {
    let r = one_route(
        r#"match: {prefix: /}
    route: {cluster: c}
    typed_per_filter_config:
      envoy.filters.http.fault:
        "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
        abort: {grpc_status: 14, percentage: {numerator: 100}}
        delay: {header_delay: {}, percentage: {numerator: 100}}
      envoy.filters.http.cors:
        "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
        allow_origin_string_match: [{exact: "https://a.com"}]
        allow_methods: GET,POST
        allow_credentials: true"#,
    )
    .unwrap();
    let fault = r.fault.as_ref().unwrap();
    assert_eq!(fault.abort.as_ref().unwrap().kind, FaultAbortKind::Grpc(14));
    assert_eq!(
        fault.delay.as_ref().unwrap().kind,
        FaultDelayKind::FromHeader
    );
    let cors = r.cors.as_ref().unwrap();
    assert_eq!(cors.allow_methods.as_deref(), Some("GET,POST"));
    assert_eq!(cors.allow_credentials, Some(true));
    assert!(matches!(&cors.allow_origin[0].pattern, StringMatch::Exact(o) if o == "https://a.com"));

    // Wrapped in FilterConfig, at the virtual host level; absent percentage is 0%.
    let t = routes(
        r#"
name: r
virtual_hosts:
- name: v
  domains: ["*"]
  typed_per_filter_config:
    envoy.filters.http.fault:
      "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
      config:
        "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
        abort: {http_status: 503}
  routes: []
"#,
    )
    .unwrap();
    let abort = t.virtual_hosts()[0]
        .fault
        .as_ref()
        .unwrap()
        .abort
        .clone()
        .unwrap();
    assert_eq!(
        abort.percentage,
        Fraction {
            numerator: 0,
            denominator: 100
        }
    );

    assert_err(
        one_route(
            "match: {prefix: /}\n    route: {cluster: c}\n    typed_per_filter_config:\n      envoy.filters.http.fault: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault, abort: {http_status: 700}}",
        ),
        "typed_per_filter_config[\"envoy.filters.http.fault\"].abort.http_status",
        "200..599",
    );
    assert_err(
        one_route(
            "match: {prefix: /}\n    route: {cluster: c}\n    typed_per_filter_config:\n      x: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute, disabled: true}",
        ),
        "typed_per_filter_config[\"x\"]",
        "BufferPerRoute is not supported",
    );
}
