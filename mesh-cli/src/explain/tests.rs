//! `explain` on a recorded-shape `/config_dump` (a sidecar's outbound HTTP proxy listener with
//! header, weighted and default routes, an inbound listener, EDS clusters with Istio's auto
//! mTLS), compiled by the proxy's own compiler.

use std::collections::BTreeMap;

use super::*;

const SAFE: &str = "outbound|5000|safe|helloworld.default.svc.cluster.local";
const RISKY: &str = "outbound|5000|risky|helloworld.default.svc.cluster.local";

const DUMP: &str = r#"
configs:
- "@type": type.googleapis.com/envoy.admin.v3.ListenersConfigDump
  dynamic_listeners:
  - name: outbound_http_proxy
    active_state:
      listener:
        "@type": type.googleapis.com/envoy.config.listener.v3.Listener
        name: outbound_http_proxy
        address: {socket_address: {address: 127.0.0.1, port_value: 15001}}
        traffic_direction: OUTBOUND
        filter_chains:
        - filters:
          - name: envoy.filters.network.http_connection_manager
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
              stat_prefix: outbound_http_proxy
              rds: {route_config_name: http_proxy, config_source: {ads: {}, resource_api_version: V3}}
              http_filters:
              - {name: envoy.filters.http.fault, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault}}
              - {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  - name: virtualInbound
    active_state:
      listener:
        "@type": type.googleapis.com/envoy.config.listener.v3.Listener
        name: virtualInbound
        address: {socket_address: {address: 127.0.0.1, port_value: 15006}}
        traffic_direction: INBOUND
        filter_chains:
        - filters:
          - name: envoy.filters.network.http_connection_manager
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
              stat_prefix: inbound
              route_config:
                name: "inbound|5000||"
                virtual_hosts:
                - {name: inbound, domains: ["*"], routes: [{name: default, match: {prefix: /}, route: {cluster: "inbound|5000||", timeout: 0s}}]}
              http_filters:
              - {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
- "@type": type.googleapis.com/envoy.admin.v3.RoutesConfigDump
  dynamic_route_configs:
  - version_info: "3"
    route_config:
      "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
      name: http_proxy
      virtual_hosts:
      - name: helloworld.default.svc.cluster.local:5000
        domains: ["helloworld.default.svc.cluster.local:5000", "helloworld:5000", helloworld.default.svc.cluster.local, helloworld]
        routes:
        - name: jason
          match: {prefix: /, headers: [{name: end-user, string_match: {exact: jason}}]}
          route:
            cluster: outbound|5000|risky|helloworld.default.svc.cluster.local
            timeout: 0s
            retry_policy: {retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", num_retries: 2}
        - name: canary
          match: {prefix: /canary}
          request_headers_to_add: [{header: {key: x-canary, value: "yes"}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]
          response_headers_to_remove: [x-internal]
          typed_per_filter_config:
            envoy.filters.http.fault:
              "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
              abort: {http_status: 503, percentage: {numerator: 10}}
          route:
            timeout: 2s
            weighted_clusters:
              clusters:
              - {name: "outbound|5000|safe|helloworld.default.svc.cluster.local", weight: 90}
              - {name: "outbound|5000|risky|helloworld.default.svc.cluster.local", weight: 10}
            request_mirror_policies:
            - {cluster: "outbound|5000|risky|helloworld.default.svc.cluster.local", runtime_fraction: {default_value: {numerator: 50}}}
        - name: default
          match: {prefix: /}
          route: {cluster: "outbound|5000|safe|helloworld.default.svc.cluster.local"}
- "@type": type.googleapis.com/envoy.admin.v3.ClustersConfigDump
  static_clusters:
  - cluster:
      "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
      name: "inbound|5000||"
      type: STATIC
      load_assignment:
        cluster_name: "inbound|5000||"
        endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 5000}}}}]}]
  dynamic_active_clusters:
  - cluster:
      "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
      name: outbound|5000|safe|helloworld.default.svc.cluster.local
      type: EDS
      eds_cluster_config: {eds_config: {ads: {}, resource_api_version: V3}, service_name: outbound|5000|safe|helloworld.default.svc.cluster.local}
      lb_policy: LEAST_REQUEST
      transport_socket_matches:
      - name: tlsMode-istio
        match: {tlsMode: istio}
        transport_socket:
          name: envoy.transport_sockets.tls
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
            sni: outbound_.5000_.safe_.helloworld.default.svc.cluster.local
            common_tls_context:
              alpn_protocols: [istio-peer-exchange, istio]
              tls_certificate_sds_secret_configs: [{name: default, sds_config: {ads: {}, resource_api_version: V3}}]
              combined_validation_context:
                default_validation_context:
                  match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: "spiffe://cluster.local/ns/default/sa/helloworld"}}]
                validation_context_sds_secret_config: {name: ROOTCA, sds_config: {ads: {}, resource_api_version: V3}}
      - name: tlsMode-disabled
        match: {}
        transport_socket: {name: envoy.transport_sockets.raw_buffer, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}
  - cluster:
      "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
      name: outbound|5000|risky|helloworld.default.svc.cluster.local
      type: EDS
      eds_cluster_config: {eds_config: {ads: {}, resource_api_version: V3}}
  - cluster:
      "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
      name: from-a-newer-envoy
      a_field_this_proxy_does_not_know: true
- "@type": type.googleapis.com/envoy.admin.v3.EndpointsConfigDump
  dynamic_endpoint_configs:
  - endpoint_config:
      "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
      cluster_name: outbound|5000|safe|helloworld.default.svc.cluster.local
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 7001}}}
          metadata: {filter_metadata: {envoy.transport_socket_match: {tlsMode: istio}}}
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 7002}}}
          health_status: UNHEALTHY
          metadata: {filter_metadata: {envoy.transport_socket_match: {tlsMode: istio}}}
  - endpoint_config:
      "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
      cluster_name: outbound|5000|risky|helloworld.default.svc.cluster.local
      endpoints:
      # Envoy renders an unset locality weight as 0.
      - load_balancing_weight: 0
        lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 7003}}}
"#;

fn live() -> LiveConfig {
    let dump = mesh_proxy::xds_json::parse_document(DUMP).unwrap();
    let (snapshot, skipped) = snapshot_from_dump(&dump);
    LiveConfig {
        snapshot,
        skipped,
        health: BTreeMap::new(),
    }
}

fn request(path: &str, headers: &[&str]) -> ExplainRequest {
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    ExplainRequest::new("get", "helloworld", path, &headers, None).unwrap()
}

fn forward(e: &Explanation) -> &ForwardExplanation {
    match &e.result {
        Decision::Forward(f) => f,
        other => panic!("expected a forward, got {other:?}"),
    }
}

#[test]
fn the_dump_compiles_and_an_unreadable_resource_is_named() {
    let live = live();
    let s = &live.snapshot;
    assert_eq!(
        s.listeners.keys().collect::<Vec<_>>(),
        ["outbound_http_proxy", "virtualInbound"]
    );
    assert!(s.routes.contains_key("http_proxy"));
    assert_eq!(s.clusters.len(), 3);
    assert_eq!(s.endpoints.len(), 2);
    assert_eq!(live.skipped.len(), 1, "{:?}", live.skipped);
    assert!(
        live.skipped[0].contains("from-a-newer-envoy")
            && live.skipped[0].contains("a_field_this_proxy_does_not_know"),
        "{:?}",
        live.skipped
    );
}

#[test]
fn a_header_rule_picks_its_subset_and_says_why() {
    let e = explain(&live(), &request("/istio", &["end-user: jason"])).unwrap();
    assert_eq!(e.listener.name, "outbound_http_proxy");
    assert_eq!(e.listener.route_config.as_deref(), Some("http_proxy"));
    let vh = e.virtual_host.as_ref().unwrap();
    assert_eq!(
        (vh.name.as_str(), vh.domain.as_str()),
        ("helloworld.default.svc.cluster.local:5000", "helloworld")
    );
    assert_eq!(e.routes_tried.len(), 1);
    assert!(e.routes_tried[0].matched);
    let conds: Vec<(&str, &str)> = e.routes_tried[0]
        .conditions
        .iter()
        .map(|c| (c.condition.as_str(), c.outcome))
        .collect();
    assert_eq!(
        conds,
        [
            ("prefix \"/\"", "held"),
            ("header end-user exact \"jason\"", "held")
        ]
    );
    let f = forward(&e);
    assert_eq!((f.route.index, f.route.name.as_str()), (0, "jason"));
    assert_eq!(f.clusters.len(), 1);
    let c = &f.clusters[0];
    assert_eq!((c.name.as_str(), c.subset.as_str()), (RISKY, "risky"));
    assert_eq!(c.lb_policy.as_deref(), Some("ROUND_ROBIN"));
    assert_eq!(c.transport.as_deref(), Some("plaintext"));
    assert_eq!(
        c.endpoints,
        Some(HostCounts {
            total: 1,
            healthy: 1
        })
    );
    // `timeout: 0s` disables the route timeout.
    assert_eq!(f.timeout, None);
    let r = f.retry.as_ref().unwrap();
    assert_eq!(r.num_retries, 2);
    assert_eq!(
        r.retry_on,
        [
            "connect-failure",
            "refused-stream",
            "retriable-status-codes",
            "cancelled",
            "unavailable"
        ]
    );
    // The listener's fault filter has nothing configured.
    let fault = f.fault.as_ref().unwrap();
    assert!(fault.delay.is_none() && fault.abort.is_none());

    let text = render_text(&e);
    assert!(
        text.contains("listener outbound_http_proxy (127.0.0.1:15001) -> route config http_proxy"),
        "{text}"
    );
    assert!(
        text.contains(
            "route #0 \"jason\" matched: prefix \"/\" ✓, header end-user exact \"jason\" ✓"
        ),
        "{text}"
    );
    assert!(text.contains(&format!("-> cluster {RISKY}")), "{text}");
    assert!(
        text.contains("no timeout, retries 2 on connect-failure,refused-stream"),
        "{text}"
    );
    assert!(text.contains("no fault, no mirror"), "{text}");
    assert!(
        text.contains(&format!(
            "cluster {RISKY}: subset risky, ROUND_ROBIN, 1 endpoint (1 healthy), plaintext"
        )),
        "{text}"
    );
}

#[test]
fn without_the_header_the_default_route_and_why_the_others_failed() {
    let e = explain(&live(), &request("/istio", &[])).unwrap();
    let tried: Vec<(usize, &str, bool)> = e
        .routes_tried
        .iter()
        .map(|r| (r.index, r.name.as_str(), r.matched))
        .collect();
    assert_eq!(
        tried,
        [
            (0, "jason", false),
            (1, "canary", false),
            (2, "default", true)
        ]
    );
    let failed = |i: usize| -> Vec<&str> {
        e.routes_tried[i]
            .conditions
            .iter()
            .filter(|c| c.outcome == "failed")
            .map(|c| c.condition.as_str())
            .collect()
    };
    assert_eq!(failed(0), ["header end-user exact \"jason\""]);
    assert_eq!(failed(1), ["prefix \"/canary\""]);
    let f = forward(&e);
    let c = &f.clusters[0];
    assert_eq!((c.name.as_str(), c.subset.as_str()), (SAFE, "safe"));
    assert_eq!(c.lb_policy.as_deref(), Some("LEAST_REQUEST"));
    // One endpoint is UNHEALTHY in EDS.
    assert_eq!(
        c.endpoints,
        Some(HostCounts {
            total: 2,
            healthy: 1
        })
    );
    assert_eq!(c.transport.as_deref(), Some("mTLS (auto, every endpoint)"));
    assert_eq!(
        c.peer_identities,
        ["spiffe://cluster.local/ns/default/sa/helloworld"]
    );
    // Envoy's default route timeout, and no retry policy at all.
    assert_eq!(f.timeout.as_deref(), Some("15s"));
    assert!(f.retry.is_none());
    let text = render_text(&e);
    assert!(
        text.contains("route #0 \"jason\" skipped: header end-user exact \"jason\" ✗"),
        "{text}"
    );
    assert!(
        text.contains(
            "mTLS (auto, every endpoint) expecting spiffe://cluster.local/ns/default/sa/helloworld"
        ),
        "{text}"
    );
    // A retry header of the request turns retries on, as in the proxy.
    let e = explain(
        &live(),
        &request(
            "/istio",
            &["x-envoy-retry-on: 5xx", "x-envoy-max-retries: 3"],
        ),
    )
    .unwrap();
    let r = forward(&e).retry.clone().unwrap();
    assert_eq!((r.num_retries, r.retry_on), (3, vec!["5xx".to_string()]));
}

#[test]
fn weighted_clusters_fault_mirror_and_header_changes() {
    let mut live = live();
    // `/clusters` health wins over EDS: the proxy's own view (outlier ejections included).
    live.health = host_counts(&format!(
        "{SAFE}::127.0.0.1:7001::health_flags::healthy\n\
         {SAFE}::127.0.0.1:7002::health_flags::/failed_outlier_check\n\
         {SAFE}::127.0.0.1:7004::health_flags::healthy\n"
    ));
    let e = explain(&live, &request("/canary/x", &[])).unwrap();
    let f = forward(&e);
    assert_eq!(f.route.name, "canary");
    let ws: Vec<(&str, Option<u32>, Option<f64>)> = f
        .clusters
        .iter()
        .map(|c| (c.subset.as_str(), c.weight, c.percent))
        .collect();
    assert_eq!(
        ws,
        [
            ("safe", Some(90), Some(90.0)),
            ("risky", Some(10), Some(10.0))
        ]
    );
    assert_eq!(
        f.clusters[0].endpoints,
        Some(HostCounts {
            total: 3,
            healthy: 2
        })
    );
    assert_eq!(f.timeout.as_deref(), Some("2s"));
    let fault = f.fault.as_ref().unwrap();
    assert_eq!(fault.abort.as_deref(), Some("HTTP 503 for 10%"));
    assert!(fault.applies);
    assert_eq!(f.mirrors.len(), 1);
    assert_eq!(
        (f.mirrors[0].cluster.as_str(), f.mirrors[0].percent.as_str()),
        (RISKY, "50%")
    );
    assert_eq!(f.request_headers, ["set x-canary: yes"]);
    assert_eq!(f.response_headers, ["remove x-internal"]);
    let text = render_text(&e);
    assert!(
        text.contains(&format!(
            "-> weighted clusters {SAFE} weight 90 (90%), {RISKY} weight 10 (10%)"
        )),
        "{text}"
    );
    assert!(
        text.contains("timeout 2s, no retries, fault: abort HTTP 503 for 10%, mirror to"),
        "{text}"
    );
    assert!(text.contains("3 endpoints (2 healthy)"), "{text}");
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["result"]["kind"], "forward");
    assert_eq!(json["result"]["clusters"][0]["weight"], 90);
}

#[test]
fn an_unknown_host_is_a_404_nr_listing_the_virtual_hosts() {
    let mut req = request("/", &[]);
    req.host = "reviews:9080".into();
    let e = explain(&live(), &req).unwrap();
    assert!(e.virtual_host.is_none());
    assert!(e.routes_tried.is_empty());
    match &e.result {
        Decision::NoRoute { status, flag, .. } => assert_eq!((*status, flag.as_str()), (404, "NR")),
        other => panic!("{other:?}"),
    }
    assert_eq!(e.virtual_hosts.len(), 1);
    assert!(
        e.virtual_hosts[0]
            .domains
            .contains(&"helloworld".to_string())
    );
    let text = render_text(&e);
    assert!(
        text.contains("=> 404 NR: no virtual host of route config \"http_proxy\" has a domain for host \"reviews:9080\""),
        "{text}"
    );
    assert!(
        text.contains("virtual host helloworld.default.svc.cluster.local:5000: "),
        "{text}"
    );
}

#[test]
fn listeners_are_chosen_by_port_or_as_the_only_outbound_one() {
    let live = live();
    let mut req = request("/", &[]);
    req.port = Some(15006);
    let e = explain(&live, &req).unwrap();
    assert_eq!(e.listener.name, "virtualInbound");
    assert!(e.listener.inline_route_config);
    assert_eq!(forward(&e).clusters[0].name, "inbound|5000||");
    assert_eq!(
        forward(&e).clusters[0].transport.as_deref(),
        Some("plaintext")
    );

    let err = choose_listener(&live.snapshot, Some(9999)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("no HTTP listener for port 9999")
            && msg.contains("outbound_http_proxy (127.0.0.1:15001)"),
        "{msg}"
    );
    // A gateway's listener is found by its Gateway server port (route config `http.PORT`).
    let gw = mesh_proxy::xds_json::parse_document(
        r#"
configs:
- "@type": type.googleapis.com/envoy.admin.v3.ListenersConfigDump
  dynamic_listeners:
  - active_state:
      listener:
        name: 127.0.0.1_38175
        address: {socket_address: {address: 127.0.0.1, port_value: 38175}}
        filter_chains:
        - filters:
          - name: envoy.filters.network.http_connection_manager
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
              stat_prefix: gw
              rds: {route_config_name: http.80, config_source: {ads: {}}}
              http_filters:
              - {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#,
    )
    .unwrap();
    let (snapshot, skipped) = snapshot_from_dump(&gw);
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(
        choose_listener(&snapshot, Some(80)).unwrap().0.name,
        "127.0.0.1_38175"
    );
    assert_eq!(
        choose_listener(&snapshot, None).unwrap().0.name,
        "127.0.0.1_38175"
    );
    // Its route config has not arrived: said so, as the 404 the proxy would answer.
    let e = explain(
        &LiveConfig {
            snapshot,
            ..LiveConfig::default()
        },
        &request("/", &[]),
    )
    .unwrap();
    match &e.result {
        Decision::NoRoute { reason, .. } => {
            assert!(reason.contains("\"http.80\" is not in"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_request_arguments_are_refused() {
    let bad = ExplainRequest::new("GET", "h", "/", &["no-colon".to_string()], None).unwrap_err();
    assert!(bad.to_string().contains("no-colon"), "{bad}");
    let r =
        ExplainRequest::new("get", "h", "istio", &["End-User: jason".to_string()], None).unwrap();
    assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/istio"));
    assert_eq!(r.headers["end-user"], "jason");
}
